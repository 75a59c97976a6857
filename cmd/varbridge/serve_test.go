package main

// End-to-end test of "varbridge serve" with TLS, auth and metrics on.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/servertest"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// serveErr runs "varbridge serve" on a free port with args and returns
// its error: for flag combinations that must be refused before serving.
func serveErr(args ...string) error {
	root := newRootCmd()
	root.SetArgs(append([]string{"serve", "--listen", "127.0.0.1:0"}, args...))
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	return root.Execute()
}

// startServe runs "varbridge serve args..." (in memory unless args give a
// --data-dir) until the test ends and returns
// the lines it printed before serving ("metrics on ...", "listening on ...").
func startServe(t *testing.T, args ...string) map[string]string {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRootCmd()
	base := []string{"serve", "--listen", "127.0.0.1:0", "--log-level", "error"}
	if !slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(a, "--data-dir") || strings.HasPrefix(a, "--etcd-endpoints")
	}) {
		base = append(base, "--memory") // no stray ./varbridge.data
	}
	root.SetArgs(append(base, args...))
	root.SetOut(pw)
	root.SetErr(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop within 10s of cancel")
		}
	})
	lines := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"listening on ", "metrics on "} {
			if rest, ok := strings.CutPrefix(line, p); ok {
				lines[strings.TrimSpace(p)] = rest
			}
		}
		if _, ok := lines["listening on"]; ok {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return lines
		}
	}
	t.Fatalf("serve printed no address: %v", sc.Err())
	return nil
}

func TestServeTLSAuthMetrics(t *testing.T) {
	cert := servertest.SelfSignedTLS(t)
	lines := startServe(t, "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile, "--require-auth",
		"--metrics-listen", "127.0.0.1:0", "--max-metadata-entries", "2")
	conn, err := grpc.NewClient(lines["listening on"], grpc.WithTransportCredentials(cert.ClientCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := varbridgev1.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	r, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "a"})
	if err != nil || r.SessionToken == "" {
		t.Fatalf("InitializeSession: %v, token %q", err, r.GetSessionToken())
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.SessionToken)
	if _, err := c.RegisterVariable(authed, &varbridgev1.RegisterVariableRequest{
		SessionId: "a", Name: "x", Type: varbridgev1.VariableType_VARIABLE_TYPE_BOOLEAN,
		InitialValue: &varbridgev1.Value{Kind: &varbridgev1.Value_BoolValue{BoolValue: true}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetVariable(ctx, &varbridgev1.GetVariableRequest{SessionId: "a", VariableIdentifier: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetVariable without token: %v, want Unauthenticated", err)
	}
	_, err = c.SetVariable(authed, &varbridgev1.SetVariableRequest{
		SessionId: "a", VariableIdentifier: "x", Value: &varbridgev1.Value{Kind: &varbridgev1.Value_BoolValue{}},
		Metadata: map[string]string{"a": "1", "b": "2", "c": "3"},
	})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_metadata_entries") {
		t.Fatalf("--max-metadata-entries 2: %v", err)
	}

	resp, err := http.Get(lines["metrics on"])
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", lines["metrics on"], resp.StatusCode, err)
	}
	text := string(body)
	for _, want := range []string{
		"varbridge_sessions_open 1",
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="GetVariable",grpc_service="varbridge.v1.BridgeService",grpc_type="unary"} 1`,
		`varbridge_auth_failures_total{code="Unauthenticated"} 1`,
		`varbridge_build_info{goversion="go`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, r.SessionToken) {
		t.Error("/metrics shows a session token")
	}
}

func TestServeFlagErrors(t *testing.T) {
	cert := servertest.SelfSignedTLS(t)
	for _, args := range [][]string{
		{"--tls-cert", cert.CertFile},
		{"--tls-key", cert.KeyFile},
		{"--tls-cert", cert.KeyFile, "--tls-key", cert.CertFile},
	} {
		root := newRootCmd()
		root.SetArgs(append([]string{"serve", "--memory", "--listen", "127.0.0.1:0"}, args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "--tls-") {
			t.Errorf("serve %v: %v, want an error naming the TLS flags", args, err)
		}
	}
}

// runServe starts "varbridge serve --listen 127.0.0.1:0 args..." with its log
// in logs; it returns the address and stop, which sends the interrupt and
// returns how long serve took to return.
func runServe(t *testing.T, logs io.Writer, args ...string) (string, func() time.Duration) {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRootCmd()
	root.SetArgs(append([]string{"serve", "--memory", "--listen", "127.0.0.1:0"}, args...))
	root.SetOut(pw)
	root.SetErr(logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	stopped := false
	stop := func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("serve did not stop within 20s of the interrupt")
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return strings.TrimSpace(rest), stop
		}
	}
	t.Fatalf("serve printed no address: %v", sc.Err())
	return "", nil
}

// On the interrupt the server reports NOT_SERVING first, then drains for
// --drain-timeout (not a fixed 2 s) and cuts what is left.
func TestServeShutdownNotServingThenDrain(t *testing.T) {
	addr, stop := runServe(t, io.Discard, "--drain-timeout", "400ms", "--log-level", "error")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hw, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: varbridgev1.BridgeService_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := hw.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the interrupt: %v %v", r, err)
	}
	// An open watch keeps the drain waiting until its timeout.
	c := varbridgev1.NewBridgeServiceClient(conn)
	if _, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "d"}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.WatchVariables(ctx, &varbridgev1.WatchVariablesRequest{SessionId: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Header(); err != nil {
		t.Fatal(err)
	}
	took := make(chan time.Duration, 1)
	go func() { took <- stop() }()
	r, err := hw.Recv()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after the interrupt: %v %v, want NOT_SERVING", r, err)
	}
	d := <-took
	if d < 350*time.Millisecond || d > 1800*time.Millisecond {
		t.Errorf("serve stopped %s after the interrupt with --drain-timeout 400ms", d)
	}
}

// --log-format json, one debug line per call with method, session, code and
// duration; refused credentials logged once per 10 s; the plaintext-auth
// warning once; no values, no tokens.
func TestServeLogs(t *testing.T) {
	var logs servertest.SyncBuffer
	addr, stop := runServe(t, &logs, "--log-format", "json", "--log-level", "debug", "--require-auth")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := varbridgev1.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "logged"})
	if err != nil {
		t.Fatal(err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.GetSessionToken())
	if _, err := c.RegisterVariable(authed, &varbridgev1.RegisterVariableRequest{
		SessionId: "logged", Name: "secret", Type: varbridgev1.VariableType_VARIABLE_TYPE_STRING,
		InitialValue: &varbridgev1.Value{Kind: &varbridgev1.Value_StringValue{StringValue: "value-never-logged"}},
	}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		_, err := c.GetVariable(ctx, &varbridgev1.GetVariableRequest{SessionId: "logged", VariableIdentifier: "secret"})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("GetVariable without a token: %v", err)
		}
	}
	stop()

	text := logs.String()
	for _, secret := range []string{r.GetSessionToken(), "value-never-logged"} {
		if strings.Contains(text, secret) {
			t.Errorf("the log shows %q", secret)
		}
	}
	var rpcs, refusals, plaintext int
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch msg, _ := l["msg"].(string); {
		case msg == "rpc":
			rpcs++
			if l["method"] == "BridgeService/RegisterVariable" &&
				(l["session"] != "logged" || l["code"] != "OK" || l["level"] != "DEBUG" || l["duration"] == nil) {
				t.Errorf("RegisterVariable's line: %v", l)
			}
		case msg == "auth refused a call":
			refusals++
			if l["code"] != "Unauthenticated" || l["session"] != "logged" || l["level"] != "WARN" {
				t.Errorf("refusal line: %v", l)
			}
		case strings.Contains(msg, "--require-auth without TLS"):
			plaintext++
		}
	}
	if rpcs != 7 {
		t.Errorf("%d rpc lines for 7 calls:\n%s", rpcs, text)
	}
	if refusals != 1 {
		t.Errorf("%d refusal lines for 5 refused calls within 10 s, want 1", refusals)
	}
	if plaintext != 1 {
		t.Errorf("the plaintext auth warning appears %d times", plaintext)
	}

	// Text format, and a bad format is refused.
	var textLogs servertest.SyncBuffer
	_, stop = runServe(t, &textLogs, "--log-format", "text")
	stop()
	if !strings.Contains(textLogs.String(), "level=INFO msg=\"varbridge serving\"") {
		t.Errorf("text log: %q", textLogs.String())
	}
	if _, _, err := run(t, "serve", "--listen", "127.0.0.1:0", "--log-format", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("--log-format xml: %v", err)
	}
}

// A session that expires is logged (rate-limited like refusals).
func TestServeLogsSessionExpiry(t *testing.T) {
	var logs servertest.SyncBuffer
	addr, stop := runServe(t, &logs, "--log-format", "json", "--session-ttl", "300ms")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := varbridgev1.NewBridgeServiceClient(conn)
	if _, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "short-lived"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `"msg":"sessions expired"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no expiry line within 10 s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if !strings.Contains(logs.String(), `"first":"short-lived"`) {
		t.Errorf("the expiry line does not name the session:\n%s", logs.String())
	}
}
