package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The handler is exercised over a real loopback socket; the page itself is
// tested in a browser by systest's TestDashboardBrowser.
func TestHandlerServesPage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()

	for _, tc := range []struct {
		path, status, typ, contains string
	}{
		{"/", "200 OK", "text/html", `<script type="module" src="app.js">`},
		{"/app.js", "200 OK", "text/javascript", "function route()"},
		{"/style.css", "200 OK", "text/css", "--accent"},
		{"/vendor/uplot/uPlot.iife.min.js", "200 OK", "text/javascript", "uPlot"},
		{"/vendor/uplot/", "404 Not Found", "text/plain", "not found"},
		{"/nope.js", "404 Not Found", "text/plain", "not found"},
		{"/../../dashboard.go", "404 Not Found", "text/plain", "not found"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Status != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.typ) || !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: %s %q, body has %q: %v; want %s %s", tc.path, resp.Status, resp.Header.Get("Content-Type"),
				tc.contains, strings.Contains(string(body), tc.contains), tc.status, tc.typ)
		}
		if resp.StatusCode == http.StatusOK && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: no content security policy", tc.path)
		}
	}

	resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %s, Allow %q; want 405 with Allow: GET, HEAD", resp.Status, resp.Header.Get("Allow"))
	}
}
