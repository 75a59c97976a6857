// Package dashboard is varbridge's live dashboard: a single page, plain ES
// modules and the vendored uPlot, embedded in the binary so that `go install`
// users get it with no npm and no build step. The page talks only to the HTTP
// face it is mounted on: the BridgeService's Connect JSON calls and the SSE
// watch endpoint. It holds no state on the server side; Handler serves files.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// static holds the page. static/vendor/uplot is refreshed by
// `make dashboard-assets`; assets_test.go fails when it is stale or edited.
//
//go:embed static
var static embed.FS

// contentSecurityPolicy keeps the page to its own origin: its own scripts
// and styles only (no inline script), calls and streams to the server that
// served it, and no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard: index.html at "/" and the page's files below
// it. It answers GET and HEAD only, lists no directories, and sends headers
// that keep the page to its own origin. Mount it at "/" beside the API routes.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is fixed at compile time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard serves GET and HEAD only", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name != "" {
			// Only files: a directory would get a listing from FileServer.
			if st, err := fs.Stat(sub, name); err != nil || st.IsDir() {
				http.NotFound(w, r)
				return
			}
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files carry no modification time; revalidating on each
		// load keeps a page from outliving the binary that served it.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
