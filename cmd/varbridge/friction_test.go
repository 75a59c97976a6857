package main

// The CLI as a new user meets it (issue 10, "CLI and server friction"): the
// environment, sessions that reads never create, auth without surprises,
// delete and sessions, TLS, whole values, one JSON shape, and clear errors.
// Every test runs the real commands against the real server on loopback.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// run executes one command line as given (no --addr or --session added) and
// returns stdout, what main would print on stderr, and the error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err != nil {
		printError(&errOut, err)
	}
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errText, err := run(t, args...)
	if err != nil {
		t.Fatalf("varbridge %s: %v\n%s", strings.Join(args, " "), err, errText)
	}
	return out
}

// failRun runs a command line that must fail with code; it returns stderr.
func failRun(t *testing.T, code codes.Code, args ...string) string {
	t.Helper()
	out, errText, err := run(t, args...)
	if err == nil {
		t.Fatalf("varbridge %s succeeded, want %s:\n%s", strings.Join(args, " "), code, out)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("varbridge %s: code %s, want %s: %s", strings.Join(args, " "), got, code, errText)
	}
	return errText
}

// clearEnv unsets the client variables for the test, so that a developer's
// own settings do not leak in.
func clearEnv(t *testing.T) {
	for _, k := range []string{envAddr, envSession, envToken, envTLSCA, envTLSServerName} {
		t.Setenv(k, "")
	}
}

func TestCLIEnvironment(t *testing.T) {
	clearEnv(t)
	srv := servertest.Start(t, store.Options{})
	other := servertest.Start(t, store.Options{})
	t.Setenv(envAddr, srv.Addr)
	t.Setenv(envSession, "from-env")

	mustRun(t, "register", "x", "integer", "7")
	if _, err := srv.Store.GetSession("from-env"); err != nil {
		t.Fatalf("register did not use $%s/$%s: %v", envAddr, envSession, err)
	}
	for _, args := range [][]string{{"get", "x"}, {"list"}, {"session", "get"}} {
		if out := mustRun(t, args...); !strings.Contains(out, "x id=") && !strings.Contains(out, "session=from-env") {
			t.Errorf("varbridge %v with env: %q", args, out)
		}
	}
	// The watch reads the same variables.
	w, stop := startWatchArgs(t, "watch", "x", "--initial")
	if l := w.next(t); !strings.Contains(l, "update=initial name=x") || !strings.Contains(l, "new=7") {
		t.Errorf("watch with env: %q", l)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Flags win over the environment.
	mustRun(t, "--session", "from-flag", "register", "y", "integer", "1")
	mustRun(t, "--addr", other.Addr, "register", "z", "integer", "1")
	if _, err := srv.Store.GetSession("from-flag"); err != nil {
		t.Errorf("--session did not win over $%s: %v", envSession, err)
	}
	if _, err := other.Store.GetSession("from-env"); err != nil {
		t.Errorf("--addr did not win over $%s: %v", envAddr, err)
	}
}

// startWatchArgs is startWatch with the command line as given.
func startWatchArgs(t *testing.T, args ...string) (*lineWriter, func() error) {
	t.Helper()
	out := newLineWriter()
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not stop on interrupt")
			return nil
		}
	}
}

func TestCLIReadsNeverCreateSessions(t *testing.T) {
	clearEnv(t)
	srv := servertest.Start(t, store.Options{})
	for _, args := range [][]string{
		{"get", "x"}, {"get", "x", "y"}, {"list"}, {"watch", "x"}, {"watch"}, {"delete", "x"},
	} {
		errText := failRun(t, codes.NotFound, append([]string{"--addr", srv.Addr, "--session", "typo"}, args...)...)
		if !strings.Contains(errText, `"typo"`) {
			t.Errorf("varbridge %v: %q does not name the session", args, errText)
		}
	}
	if n := srv.Store.SessionCount(); n != 0 {
		t.Fatalf("read commands created %d sessions", n)
	}
	// register, set and session init do create.
	mustRun(t, "--addr", srv.Addr, "--session", "a", "register", "x", "integer", "1")
	failRun(t, codes.NotFound, "--addr", srv.Addr, "--session", "b", "set", "x", "1") // no variable x, but the session is there
	mustRun(t, "--addr", srv.Addr, "session", "init", "c")
	if n := srv.Store.SessionCount(); n != 3 {
		t.Fatalf("register, set and session init created %d sessions, want 3", n)
	}
}

func TestCLIWithAuth(t *testing.T) {
	clearEnv(t)
	srv := servertest.Start(t, store.Options{}, server.WithAuth(), server.WithOperatorToken("op-secret"))
	base := []string{"--addr", srv.Addr, "--session", "s1"}

	// Without a token nothing creates a session behind the user's back, and
	// the error says how to get a token.
	for _, args := range [][]string{{"register", "x", "integer", "1"}, {"set", "x", "2"}, {"get", "x"}, {"list"}, {"watch", "x"}} {
		errText := failRun(t, codes.Unauthenticated, append(base, args...)...)
		if !strings.Contains(errText, "session init") || !strings.Contains(errText, envToken) {
			t.Errorf("varbridge %v without a token: %q does not say how to get one", args, errText)
		}
	}
	if n := srv.Store.SessionCount(); n != 0 {
		t.Fatalf("commands without a token created %d sessions", n)
	}

	// session init prints the token; with it (env or flag) everything works.
	out := mustRun(t, append(base, "session", "init")...)
	i := strings.Index(out, "token=")
	if i < 0 {
		t.Fatalf("session init printed no token: %q", out)
	}
	token := strings.Fields(out[i+len("token="):])[0]
	t.Setenv(envToken, token)
	mustRun(t, append(base, "register", "x", "integer", "1")...)
	mustRun(t, append(base, "set", "x", "2")...)
	if out := mustRun(t, append(base, "get", "x")...); !strings.Contains(out, "value=2") {
		t.Errorf("get with $%s: %q", envToken, out)
	}
	w, stop := startWatchArgs(t, append(base, "watch", "x", "--initial")...)
	if l := w.next(t); !strings.Contains(l, "update=initial name=x") || !strings.Contains(l, "new=2") {
		t.Errorf("watch with $%s: %q", envToken, l)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, append(base, "--token", token, "delete", "x")...)
	// A token of another session: register creates the new session, and the
	// new session's token is printed, not thrown away.
	_, errText, err := run(t, "--addr", srv.Addr, "--session", "s2", "register", "y", "integer", "1")
	if err != nil || !strings.Contains(errText, "created session s2; its token") || !strings.Contains(errText, "vbt_") {
		t.Errorf("register in a new session with another session's token: %v %q", err, errText)
	}
	// A second init without the token is refused, with advice.
	t.Setenv(envToken, "")
	errText = failRun(t, codes.AlreadyExists, append(base, "session", "init")...)
	if !strings.Contains(errText, "--token") {
		t.Errorf("session init of an existing session without its token: %q", errText)
	}

	// sessions needs the operator token: not none, not a session's.
	errText = failRun(t, codes.Unauthenticated, "--addr", srv.Addr, "sessions")
	if !strings.Contains(errText, "operator") {
		t.Errorf("sessions without a token: %q does not mention the operator token", errText)
	}
	failRun(t, codes.PermissionDenied, "--addr", srv.Addr, "--token", token, "sessions")
	t.Setenv(envToken, "op-secret")
	if out := mustRun(t, "--addr", srv.Addr, "sessions"); !strings.HasPrefix(out, "session=s1 ") || !strings.Contains(out, "\nsession=s2 ") {
		t.Errorf("sessions with the operator token: %q", out)
	}
}

func TestCLIDeleteAndSessions(t *testing.T) {
	clearEnv(t)
	srv := servertest.Start(t, store.Options{})
	a := []string{"--addr", srv.Addr, "--session", "job-1"}
	mustRun(t, append(a, "register", "x", "integer", "1")...)
	mustRun(t, append(a, "register", "y", "string", "keep")...)
	mustRun(t, "--addr", srv.Addr, "--session", "job-2", "session", "init")
	mustRun(t, "--addr", srv.Addr, "--session", "other", "session", "init")

	w, stop := startWatchArgs(t, append(a, "watch", "x")...)
	time.Sleep(200 * time.Millisecond) // the watch is in place (its session check and stream are quick)
	out := mustRun(t, append(a, "delete", "x", "--source", "tidy")...)
	if !strings.HasPrefix(out, "x id=") || !strings.Contains(out, "(deleted)") {
		t.Errorf("delete printed %q", out)
	}
	if l := w.next(t); !strings.Contains(l, "update=deleted name=x") || !strings.Contains(l, "source=tidy") {
		t.Errorf("watch of a deleted variable: %q", l)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, append(a, "list")...); !strings.HasPrefix(out, "y ") || strings.Count(out, "\n") != 1 {
		t.Errorf("list after delete: %q", out)
	}
	errText := failRun(t, codes.NotFound, append(a, "delete", "x")...)
	if !strings.Contains(errText, `"x"`) {
		t.Errorf("delete of a missing variable: %q", errText)
	}

	out = mustRun(t, "--addr", srv.Addr, "sessions")
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		ids = append(ids, strings.TrimPrefix(strings.Fields(l)[0], "session="))
	}
	if strings.Join(ids, ",") != "job-1,job-2,other" {
		t.Errorf("sessions = %v", ids)
	}
	out = mustRun(t, "--addr", srv.Addr, "sessions", "job-*", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s struct {
		SessionID     string `json:"session_id"`
		VariableCount string `json:"variable_count"`
	}
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &s) != nil || s.SessionID != "job-1" || s.VariableCount != "1" {
		t.Errorf("sessions job-* -o json = %q (%+v)", out, s)
	}
}

func TestCLIVersion(t *testing.T) {
	out := mustRun(t, "--version")
	if !strings.HasPrefix(out, "varbridge ") || !strings.Contains(out, "(go1.") || !strings.Contains(out, "revision ") {
		t.Errorf("--version = %q", out)
	}
}

func TestCLITLS(t *testing.T) {
	clearEnv(t)
	cert := servertest.SelfSignedTLS(t)
	srv := servertest.Start(t, store.Options{}, cert.ServerOption())
	a := []string{"--addr", srv.Addr, "--session", "t"}

	// Plaintext against TLS fails, and says what to try.
	errText := failRun(t, codes.Unavailable, append(a, "--timeout", "2s", "register", "x", "integer", "1")...)
	if !strings.Contains(errText, "--tls-ca") {
		t.Errorf("plaintext against a TLS server: %q does not mention --tls-ca", errText)
	}
	mustRun(t, append(a, "--tls-ca", cert.CertFile, "register", "x", "integer", "1")...)
	// The environment, and a server name other than the address.
	t.Setenv(envTLSCA, cert.CertFile)
	t.Setenv(envTLSServerName, "localhost")
	mustRun(t, append(a, "set", "x", "2")...)
	if out := mustRun(t, append(a, "get", "x")...); !strings.Contains(out, "value=2") {
		t.Errorf("get over TLS: %q", out)
	}
	mustRun(t, append(a, "list")...)
	mustRun(t, "--addr", srv.Addr, "sessions")
	// The watch dials from the same settings.
	w, stop := startWatchArgs(t, append(a, "watch", "x", "--initial")...)
	if l := w.next(t); !strings.Contains(l, "update=initial name=x") {
		t.Errorf("watch over TLS: %q", l)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A name the certificate does not hold is refused.
	t.Setenv(envTLSServerName, "not-this-host")
	failRun(t, codes.Unavailable, append(a, "--timeout", "2s", "get", "x")...)
	if _, errText, err := run(t, append(a, "--tls-ca", "/nonexistent.pem", "get", "x")...); err == nil || !strings.Contains(errText, "--tls-ca") {
		t.Errorf("missing CA file: %v %q", err, errText)
	}
}

func TestCLIValuesWholeAndOneJSONShape(t *testing.T) {
	clearEnv(t)
	srv := servertest.Start(t, store.Options{})
	a := []string{"--addr", srv.Addr, "--session", "v"}
	vec := make([]string, 1000)
	for i := range vec {
		vec[i] = fmt.Sprint(float64(i) + 0.5)
	}
	vecText := "[" + strings.Join(vec, ",") + "]"
	mustRun(t, append(a, "register", "e", "embedding", vecText)...)
	mustRun(t, append(a, "register", "w", "tensor", "[[1,2],[3,4]]", "--dtype", "float32")...)
	mustRun(t, append(a, "register", "f", "float", "nan")...)
	mustRun(t, append(a, "register", "s", "string", "a <b> & c")...)
	mustRun(t, append(a, "register", "i", "integer", "9007199254740993")...)

	// What get prints is whole, and set takes it back unchanged.
	out := mustRun(t, append(a, "get", "e")...)
	if !strings.Contains(out, "value="+vecText+" ") || strings.Contains(out, "more)") {
		t.Fatalf("get of a 1000-element embedding is not whole: %.200q...", out)
	}
	value := strings.TrimPrefix(strings.Fields(out)[3], "value=")
	if out := mustRun(t, append(a, "set", "e", value)...); !strings.Contains(out, "(unchanged)") {
		t.Errorf("set with what get printed changed the value: %.200q", out)
	}

	// get, list and watch print the same JSON for the same variable.
	w, stop := startWatchArgs(t, append(a, "watch", "-o", "json", "--initial", "e", "f", "i", "s", "w")...)
	fromWatch := map[string]any{}
	for range 5 {
		var l map[string]any
		if err := json.Unmarshal([]byte(w.next(t)), &l); err != nil {
			t.Fatal(err)
		}
		fromWatch[l["name"].(string)] = l["new"]
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	fromGet := map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(mustRun(t, append(a, "get", "e", "f", "i", "s", "w", "-o", "json")...)), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		fromGet[v["name"].(string)] = v["value"]
	}
	fromList := map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(mustRun(t, append(a, "list", "-o", "json")...)), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		fromList[v["name"].(string)] = v["value"]
	}
	for _, name := range []string{"e", "f", "i", "s", "w"} {
		g, l, wv := mustJSON(t, fromGet[name]), mustJSON(t, fromList[name]), mustJSON(t, fromWatch[name])
		if g != l || g != wv {
			t.Errorf("%s: get %.80s, list %.80s, watch %.80s", name, g, l, wv)
		}
	}
	data := base64.StdEncoding.EncodeToString(f32s(1, 2, 3, 4))
	if got, want := mustJSON(t, fromGet["w"]), `{"data":"`+data+`","dtype":"float32","shape":[2,2]}`; got != want {
		t.Errorf("tensor JSON = %s, want %s", got, want)
	}
	if got := mustJSON(t, fromGet["f"]); got != `"NaN"` {
		t.Errorf("NaN JSON = %s", got)
	}
	if out := mustRun(t, append(a, "get", "s", "-o", "json")...); !strings.Contains(out, `"value":"a <b> & c"`) {
		t.Errorf("string JSON = %s", out)
	}
	// Exact int64 in the raw output (json.Unmarshal into any would round it).
	if out := mustRun(t, append(a, "get", "i", "-o", "json")...); !strings.Contains(out, `"value":9007199254740993`) {
		t.Errorf("int64 JSON = %s", out)
	}
	// --json, before or after the command, keeps printing protobuf JSON.
	for _, args := range [][]string{append(append([]string{"--json"}, a...), "get", "i"), append(a, "get", "i", "--json")} {
		if out := mustRun(t, args...); !strings.Contains(out, `"intValue"`) || !strings.Contains(out, `"9007199254740993"`) {
			t.Errorf("varbridge %v = %s", args, out)
		}
	}
	failRun(t, codes.Unknown, append(a, "get", "i", "-o", "yaml")...)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCLIAddressErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct{ addr, want string }{
		{"nonsense", "the port is missing"},
		{"localhost", "the port is missing"},
		{"127.0.0.1:http", "port \"http\" is not a number"},
		{"127.0.0.1:99999", "is not a number from 1 to 65535"},
	} {
		for _, args := range [][]string{{"get", "x"}, {"watch", "x"}, {"sessions"}} {
			_, errText, err := run(t, append([]string{"--addr", tc.addr}, args...)...)
			if err == nil || !strings.Contains(errText, tc.want) || !strings.Contains(errText, "host:port") {
				t.Errorf("--addr %s %v: %v %q, want %q", tc.addr, args, err, errText, tc.want)
			}
		}
	}
	t.Setenv(envAddr, "nonsense")
	if _, errText, _ := run(t, "list"); !strings.Contains(errText, "the port is missing") {
		t.Errorf("$%s=nonsense: %q", envAddr, errText)
	}
}

func TestServeHelpListsOnlyServeFlags(t *testing.T) {
	out := mustRun(t, "serve", "--help")
	for _, flag := range []string{"--addr ", "--session ", "--token ", "--json", "--timeout ", "--tls-ca ", "--output "} {
		if strings.Contains(out, flag) {
			t.Errorf("serve --help lists the client flag %s", flag)
		}
	}
	for _, flag := range []string{"--listen", "--drain-timeout", "--log-format", "--operator-token", "--tls-cert"} {
		if !strings.Contains(out, flag) {
			t.Errorf("serve --help lacks %s", flag)
		}
	}
	// And a client flag is refused by serve rather than ignored.
	if _, _, err := run(t, "serve", "--addr", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Errorf("serve --addr: %v", err)
	}
}
