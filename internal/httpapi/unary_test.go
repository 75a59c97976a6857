package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestUnaryJSON(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	out := ts.mustCall(t, "SetVariable", "", map[string]any{
		"sessionId": "s1", "variableIdentifier": "x", "value": map[string]any{"floatValue": 1.5}, "source": "curl",
	})
	v := out["variable"].(map[string]any)
	if v["name"] != "x" || v["value"].(map[string]any)["floatValue"] != 1.5 || v["version"] != "2" || out["changed"] != true {
		t.Errorf("SetVariable answered %v", out)
	}
	out = ts.mustCall(t, "GetVariable", "", map[string]any{"sessionId": "s1", "variableIdentifier": "x"})
	if got := out["variable"].(map[string]any)["source"]; got != "curl" {
		t.Errorf("GetVariable source %v, want curl", got)
	}
	out = ts.mustCall(t, "SetVariables", "", map[string]any{"sessionId": "s1", "updates": map[string]any{
		"x": map[string]any{"floatValue": 2}, "n": map[string]any{"intValue": "7"},
	}})
	if out["revision"] != "4" || len(out["variables"].(map[string]any)) != 2 {
		t.Errorf("SetVariables answered %v", out)
	}
	out = ts.mustCall(t, "ListSessions", "", map[string]any{})
	if s := out["sessions"].([]any); len(s) != 1 || s[0].(map[string]any)["sessionId"] != "s1" {
		t.Errorf("ListSessions answered %v", out)
	}
	// A write through HTTP is the store's, as any other.
	if v, _, err := ts.store.Get("s1", "n"); err != nil || v.GetValue().GetIntValue() != 7 {
		t.Errorf("store has n = %v (%v), want 7", v.GetValue(), err)
	}
}

func TestUnaryErrors(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	cases := []struct {
		what, method string
		body         map[string]any
		status       int
		code, reason string
		types        []string
	}{
		{"constraint", "SetVariable", map[string]any{"sessionId": "s1", "variableIdentifier": "n", "value": map[string]any{"intValue": "101"}},
			http.StatusBadRequest, "invalid_argument", "CONSTRAINT_VIOLATION", []string{"google.rpc.ErrorInfo", "google.rpc.BadRequest"}},
		{"no session", "GetVariable", map[string]any{"sessionId": "nope", "variableIdentifier": "x"},
			http.StatusNotFound, "not_found", "SESSION_NOT_FOUND", []string{"google.rpc.ErrorInfo", "google.rpc.ResourceInfo"}},
		{"no variable", "GetVariable", map[string]any{"sessionId": "s1", "variableIdentifier": "y"},
			http.StatusNotFound, "not_found", "VARIABLE_NOT_FOUND", []string{"google.rpc.ErrorInfo", "google.rpc.ResourceInfo"}},
		{"version conflict", "SetVariable", map[string]any{"sessionId": "s1", "variableIdentifier": "x", "value": map[string]any{"floatValue": 1}, "expectedVersion": "9"},
			http.StatusBadRequest, "failed_precondition", "VERSION_CONFLICT", []string{"google.rpc.ErrorInfo"}},
		{"exists", "RegisterVariable", map[string]any{"sessionId": "s1", "name": "x", "type": "VARIABLE_TYPE_FLOAT", "initialValue": map[string]any{"floatValue": 1}},
			http.StatusConflict, "already_exists", "VARIABLE_EXISTS", []string{"google.rpc.ErrorInfo"}},
		{"empty session id", "GetSession", map[string]any{},
			http.StatusBadRequest, "invalid_argument", "INVALID_ARGUMENT", nil},
	}
	for _, c := range cases {
		code, body := ts.call(t, c.method, "", c.body)
		e := wantErr(t, c.what, code, body, c.status, c.code, c.reason)
		if c.types != nil && !slices.Equal(e.Types, c.types) {
			t.Errorf("%s: details %v, want %v", c.what, e.Types, c.types)
		}
		if c.what == "constraint" && (e.Meta["variable"] != "n" || e.Meta["constraint"] == "" || !strings.Contains(e.Message, "n")) {
			t.Errorf("constraint: metadata %v message %q", e.Meta, e.Message)
		}
	}
	// A body that is not the request message: Connect's own INVALID_ARGUMENT.
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/varbridge.v1.BridgeService/SetVariable", strings.NewReader(`{"sessionId": 5}`))
	req.Header.Set("Content-Type", "application/json")
	code, body := ts.do(t, req)
	wantErr(t, "bad JSON", code, body, http.StatusBadRequest, "invalid_argument", "")
	// An unknown method.
	resp, err := ts.client.Post(ts.url+"/varbridge.v1.BridgeService/Nope", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown method: %s", resp.Status)
	}
}

func TestUnaryAuth(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithAuth(), server.WithOperatorToken("op-secret"))
	tok := ts.newSession(t, "s1")
	if !strings.HasPrefix(tok, "vbt_") {
		t.Fatalf("InitializeSession gave token %q", tok)
	}
	get := map[string]any{"sessionId": "s1", "variableIdentifier": "x"}
	code, body := ts.call(t, "GetVariable", "", get)
	wantErr(t, "no token", code, body, http.StatusUnauthorized, "unauthenticated", "TOKEN_REQUIRED")
	code, body = ts.call(t, "GetVariable", "vbt_wrong", get)
	wantErr(t, "wrong token", code, body, http.StatusForbidden, "permission_denied", "TOKEN_INVALID")
	ts.mustCall(t, "GetVariable", tok, get)

	// A malformed header is the same refusal as on gRPC.
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/varbridge.v1.BridgeService/GetVariable", strings.NewReader(`{"sessionId":"s1","variableIdentifier":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+tok)
	code, body = ts.do(t, req)
	wantErr(t, "basic auth", code, body, http.StatusUnauthorized, "unauthenticated", "TOKEN_REQUIRED")

	// Joining an existing session needs its token.
	code, body = ts.call(t, "InitializeSession", "", map[string]any{"sessionId": "s1"})
	wantErr(t, "join without token", code, body, http.StatusConflict, "already_exists", "TOKEN_REQUIRED")

	// ListSessions needs the operator token.
	code, body = ts.call(t, "ListSessions", tok, map[string]any{})
	wantErr(t, "list with a session token", code, body, http.StatusForbidden, "permission_denied", "TOKEN_INVALID")
	code, body = ts.call(t, "ListSessions", "", map[string]any{})
	wantErr(t, "list without token", code, body, http.StatusUnauthorized, "unauthenticated", "TOKEN_REQUIRED")
	ts.mustCall(t, "ListSessions", "op-secret", map[string]any{})

	// Cleanup forgets the token: a new session of that id gets a new one.
	ts.mustCall(t, "CleanupSession", tok, map[string]any{"sessionId": "s1"})
	out := ts.mustCall(t, "InitializeSession", "", map[string]any{"sessionId": "s1"})
	if nt, _ := out["sessionToken"].(string); nt == "" || nt == tok {
		t.Errorf("re-created session token %q (old %q)", nt, tok)
	}
}

func TestUnaryLimits(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithRequestLimits(server.RequestLimits{MaxMetadataEntries: 2, MaxRecvMsgBytes: 64 << 10}))
	ts.newSession(t, "s1")
	md := map[string]string{"a": "1", "b": "2", "c": "3"}
	code, body := ts.call(t, "SetVariable", "", map[string]any{
		"sessionId": "s1", "variableIdentifier": "x", "value": map[string]any{"floatValue": 1}, "metadata": md,
	})
	e := wantErr(t, "metadata entries", code, body, http.StatusTooManyRequests, "resource_exhausted", "LIMIT_EXCEEDED")
	if e.Meta["limit"] != "max_metadata_entries" || e.Meta["max"] != "2" {
		t.Errorf("metadata limit: ErrorInfo metadata %v", e.Meta)
	}
	code, body = ts.call(t, "GetVariable", "", map[string]any{"sessionId": "s1", "variableIdentifier": strings.Repeat("v", server.MaxIdentifierBytes+1)})
	wantErr(t, "long identifier", code, body, http.StatusBadRequest, "invalid_argument", "INVALID_ARGUMENT")
	// A body over the request size limit is refused before it is decoded.
	big := fmt.Sprintf(`{"sessionId":"s1","variableIdentifier":"x","value":{"stringValue":%q}}`, strings.Repeat("z", 100<<10))
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/varbridge.v1.BridgeService/SetVariable", bytes.NewReader([]byte(big)))
	req.Header.Set("Content-Type", "application/json")
	code, body = ts.do(t, req)
	wantErr(t, "request size", code, body, http.StatusTooManyRequests, "resource_exhausted", "")
}

func TestCORS(t *testing.T) {
	preflight := func(ts *testServer, origin, path string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, ts.url+path, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	const page = "http://page.example:8080"
	off := start(t, httpapi.Options{})
	if resp := preflight(off, page, "/varbridge.v1.BridgeService/SetVariable"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS off: preflight allowed %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	on := start(t, httpapi.Options{CORSOrigins: []string{page}})
	for _, path := range []string{"/varbridge.v1.BridgeService/SetVariable", "/v1/sessions/s1/watch"} {
		resp := preflight(on, page, path)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != page ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight %s: %s %v", path, resp.Status, resp.Header)
		}
		if resp := preflight(on, "http://elsewhere.example", path); resp.StatusCode != http.StatusForbidden {
			t.Errorf("preflight %s from another origin: %s", path, resp.Status)
		}
	}
	on.newSession(t, "s1")
	req, _ := http.NewRequest(http.MethodPost, on.url+"/varbridge.v1.BridgeService/GetSession", strings.NewReader(`{"sessionId":"s1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", page)
	resp, err := on.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != page {
		t.Errorf("CORS call: %s, Access-Control-Allow-Origin %q", resp.Status, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestEveryMethodServed: every BridgeService method is served over HTTP,
// none left to connect-go's UNIMPLEMENTED.
func TestEveryMethodServed(t *testing.T) {
	ts := start(t, httpapi.Options{})
	for _, m := range pb.BridgeService_ServiceDesc.Methods {
		code, body := ts.call(t, m.MethodName, "", map[string]any{})
		if body["code"] == "unimplemented" {
			t.Errorf("%s: HTTP %d %v: add it to internal/httpapi's bridgeService", m.MethodName, code, body)
		}
	}
	for _, s := range pb.BridgeService_ServiceDesc.Streams {
		resp, err := ts.client.Post(ts.url+"/varbridge.v1.BridgeService/"+s.StreamName, "application/connect+json", strings.NewReader("\x00\x00\x00\x00\x02{}"))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(raw), `"unimplemented"`) {
			t.Errorf("%s: %s: add it to internal/httpapi's bridgeService", s.StreamName, raw)
		}
	}
}
