package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/sse"
	"github.com/varbridge/varbridge/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is the real server's HTTP face on a loopback port.
type testServer struct {
	url    string // http://127.0.0.1:port
	store  *store.Store
	client *http.Client
	hs     *http.Server
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start serves a fresh store over HTTP (HTTP/1.1 and h2c) until the test ends.
func start(t testing.TB, hopts httpapi.Options, opts ...server.Option) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{})
	srv := server.New(st, append([]server.Option{server.WithLogger(quietLog())}, opts...)...)
	hs := httpapi.NewServer(httpapi.Handler(srv, hopts), quietLog())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(lis)
	}()
	tr := &http.Transport{}
	ts := &testServer{url: "http://" + lis.Addr().String(), store: st, client: &http.Client{Transport: tr}, hs: hs}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
		st.Close()
	})
	return ts
}

// call POSTs a Connect JSON request, as curl would, and returns the status
// and the decoded body.
func (ts *testServer) call(t testing.TB, method, token string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, ts.url+"/varbridge.v1.BridgeService/"+method, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return ts.do(t, req)
}

func (ts *testServer) do(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: body is not JSON: %v\n%s", req.URL.Path, err, raw)
	}
	return resp.StatusCode, out
}

// mustCall is call that expects 200.
func (ts *testServer) mustCall(t testing.TB, method, token string, body any) map[string]any {
	t.Helper()
	code, out := ts.call(t, method, token, body)
	if code != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %v", method, code, out)
	}
	return out
}

// connectErr is the Connect protocol's JSON error body.
type connectErr struct {
	Code    string
	Message string
	Reason  string            // the ErrorInfo's
	Domain  string            // the ErrorInfo's
	Meta    map[string]string // the ErrorInfo's
	Types   []string          // every detail's type, in order
}

// parseConnectErr reads an error body; ErrorInfo comes from its "debug"
// JSON, which connect-go adds beside the base64 "value".
func parseConnectErr(t testing.TB, body map[string]any) connectErr {
	t.Helper()
	raw, _ := json.Marshal(body)
	var wire struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type  string          `json:"type"`
			Value string          `json:"value"`
			Debug json.RawMessage `json:"debug"`
		} `json:"details"`
	}
	if err := json.Unmarshal(raw, &wire); err != nil {
		t.Fatal(err)
	}
	e := connectErr{Code: wire.Code, Message: wire.Message}
	for _, d := range wire.Details {
		e.Types = append(e.Types, d.Type)
		if _, err := base64.RawStdEncoding.DecodeString(d.Value); err != nil {
			t.Errorf("detail %s: value is not base64: %v", d.Type, err)
		}
		if d.Type == "google.rpc.ErrorInfo" {
			var info struct {
				Reason   string            `json:"reason"`
				Domain   string            `json:"domain"`
				Metadata map[string]string `json:"metadata"`
			}
			if err := json.Unmarshal(d.Debug, &info); err != nil {
				t.Fatalf("ErrorInfo debug: %v (%s)", err, d.Debug)
			}
			e.Reason, e.Domain, e.Meta = info.Reason, info.Domain, info.Metadata
		}
	}
	return e
}

// wantErr checks an error answer: HTTP status, Connect code and ErrorInfo reason.
func wantErr(t testing.TB, what string, gotStatus int, body map[string]any, status int, code, reason string) connectErr {
	t.Helper()
	e := parseConnectErr(t, body)
	if gotStatus != status || e.Code != code || e.Reason != reason || (reason != "" && e.Domain != server.ErrorDomain) {
		t.Errorf("%s: got HTTP %d %s reason %s domain %s (%s); want HTTP %d %s reason %s",
			what, gotStatus, e.Code, e.Reason, e.Domain, e.Message, status, code, reason)
	}
	return e
}

// newSession creates a session with a float variable "x" and an integer
// "n" constrained to [0, 100]; it returns the token ("" without auth).
func (ts *testServer) newSession(t testing.TB, id string) string {
	t.Helper()
	out := ts.mustCall(t, "InitializeSession", "", map[string]any{"sessionId": id})
	tok, _ := out["sessionToken"].(string)
	ts.mustCall(t, "RegisterVariable", tok, map[string]any{
		"sessionId": id, "name": "x", "type": "VARIABLE_TYPE_FLOAT", "initialValue": map[string]any{"floatValue": 0},
	})
	ts.mustCall(t, "RegisterVariable", tok, map[string]any{
		"sessionId": id, "name": "n", "type": "VARIABLE_TYPE_INTEGER", "initialValue": map[string]any{"intValue": "0"},
		"constraints": map[string]any{"min": 0, "max": 100},
	})
	return tok
}

// sseStream is one open SSE watch.
type sseStream struct {
	resp *http.Response
	r    *sse.Reader
}

// openSSE GETs the watch at path (with query) and returns the stream, or
// the status and error body when the server refused it.
func (ts *testServer) openSSE(t testing.TB, ctx context.Context, path string, header http.Header) (*sseStream, int, map[string]any) {
	t.Helper()
	return openSSE(t, ctx, ts.client, ts.url+path, header)
}

func openSSE(t testing.TB, ctx context.Context, c *http.Client, url string, header http.Header) (*sseStream, int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, nil
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("GET %s: HTTP %d, body not JSON: %s", url, resp.StatusCode, raw)
		}
		return nil, resp.StatusCode, out
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	return &sseStream{resp: resp, r: sse.NewReader(resp.Body)}, resp.StatusCode, nil
}

func (s *sseStream) close() { _ = s.resp.Body.Close() }

// next returns the next event that is not a heartbeat; io.EOF at the end.
func (s *sseStream) next() (sse.Event, error) {
	for {
		ev, err := s.r.Next()
		if err != nil || ev.Name != "heartbeat" {
			return ev, err
		}
	}
}

func (s *sseStream) mustNext(t testing.TB) sse.Event {
	t.Helper()
	ev, err := s.next()
	if err != nil {
		t.Fatalf("SSE stream: %v", err)
	}
	return ev
}

// update is an update event's data, as `varbridge watch -o json` prints it.
type update struct {
	Revision   int64             `json:"revision"`
	Update     string            `json:"update"`
	Identifier string            `json:"identifier"`
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Old        any               `json:"old"`
	New        any               `json:"new"`
	Version    int64             `json:"version"`
	Source     string            `json:"source"`
	Metadata   map[string]string `json:"metadata"`
	Timestamp  string            `json:"timestamp"`
}

func decodeUpdate(t testing.TB, ev sse.Event) update {
	t.Helper()
	if ev.Name != "message" {
		t.Fatalf("event %q (%s), want an update", ev.Name, ev.Data)
	}
	var u update
	dec := json.NewDecoder(strings.NewReader(ev.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		t.Fatalf("update data %s: %v", ev.Data, err)
	}
	return u
}
