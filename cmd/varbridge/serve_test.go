package main

// End-to-end test of "varbridge serve" with TLS, auth and metrics on.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/servertest"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// startServe runs "varbridge serve args..." until the test ends and returns
// the lines it printed before serving ("metrics on ...", "listening on ...").
func startServe(t *testing.T, args ...string) map[string]string {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRootCmd()
	root.SetArgs(append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "error"}, args...))
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
		root.SetArgs(append([]string{"serve", "--listen", "127.0.0.1:0"}, args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "--tls-") {
			t.Errorf("serve %v: %v, want an error naming the TLS flags", args, err)
		}
	}
}
