package server_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// secEnv is a server on loopback behind real TLS, with a TLS client.
type secEnv struct {
	t    *testing.T
	srv  *servertest.Server
	tls  *servertest.TLS
	conn *grpc.ClientConn
	c    pb.BridgeServiceClient
	ctx  context.Context
	logs *servertest.SyncBuffer
}

func startSecure(t *testing.T, auth bool) *secEnv {
	t.Helper()
	e := &secEnv{t: t, tls: servertest.SelfSignedTLS(t), logs: &servertest.SyncBuffer{}}
	opts := []server.Option{
		e.tls.ServerOption(),
		server.WithLogger(slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	if auth {
		opts = append(opts, server.WithAuth())
	}
	e.srv = servertest.Start(t, store.Options{}, opts...)
	conn, err := grpc.NewClient(e.srv.Addr, grpc.WithTransportCredentials(e.tls.ClientCreds()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.conn, e.c = conn, pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e.ctx = ctx
	return e
}

// bearerCtx adds "authorization: Bearer tok".
func bearerCtx(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, server.AuthHeader, "Bearer "+tok)
}

// create initializes a new session and returns its token.
func (e *secEnv) create(id string) string {
	e.t.Helper()
	r, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	if !r.Created || r.SessionToken == "" {
		e.t.Fatalf("InitializeSession(%q) = created %v, token %q; want a new session with a token", id, r.Created, r.SessionToken)
	}
	return r.SessionToken
}

func (e *secEnv) revision(id string) int64 {
	e.t.Helper()
	info, err := e.srv.Store.GetSession(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.Revision
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msgPart string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("%s: code %v (%q), want %v", what, st.Code(), st.Message(), code)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("%s: message %q does not mention %q", what, st.Message(), msgPart)
	}
}

func TestTLSServesAndRefusesPlaintext(t *testing.T) {
	e := startSecure(t, false)
	if _, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.RegisterVariable(e.ctx, &pb.RegisterVariableRequest{
		SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(1),
	}); err != nil {
		t.Fatal(err)
	}
	ws, err := e.c.WatchVariables(e.ctx, &pb.WatchVariablesRequest{SessionId: "s", IncludeInitialValues: true})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := ws.Recv(); err != nil || u.GetVariable().GetValue().GetIntValue() != 1 {
		t.Fatalf("watch over TLS: %v, %v", u, err)
	}

	plain, err := grpc.NewClient(e.srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	_, err = pb.NewBridgeServiceClient(plain).GetSession(ctx, &pb.GetSessionRequest{SessionId: "s"})
	if c := status.Code(err); c != codes.Unavailable {
		t.Fatalf("plaintext client against TLS server: %v, want Unavailable", err)
	}
}

func TestAuthTokenOnCreateOnly(t *testing.T) {
	e := startSecure(t, true)
	a := e.create("a")
	b := e.create("b")
	if a == b {
		t.Fatal("two sessions got the same token")
	}
	for _, tok := range []string{a, b} {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "vbt_"))
		if err != nil || len(raw) < 16 {
			t.Fatalf("token %d bytes of entropy (%v); want >= 16", len(raw), err)
		}
	}
	gen, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{})
	if err != nil || gen.SessionToken == "" || !gen.Created {
		t.Fatalf("generated session: %v, %v", gen, err)
	}

	// Re-initializing an existing session never hands out its token.
	_, err = e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "a"})
	wantCode(t, "re-init without token", err, codes.AlreadyExists, `session "a" already exists`)
	_, err = e.c.InitializeSession(bearerCtx(e.ctx, b), &pb.InitializeSessionRequest{SessionId: "a"})
	wantCode(t, "re-init with another session's token", err, codes.PermissionDenied, `session "a"`)
	r, err := e.c.InitializeSession(bearerCtx(e.ctx, a), &pb.InitializeSessionRequest{SessionId: "a"})
	if err != nil || r.Created || r.SessionToken != "" {
		t.Fatalf("re-init with its token: %v (created %v, token %q), want the session without a token", err, r.GetCreated(), r.GetSessionToken())
	}

	// Health and reflection stay open.
	if _, err := healthpb.NewHealthClient(e.conn).Check(e.ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a token: %v", err)
	}
	for _, tok := range []string{a, b, gen.SessionToken} {
		if strings.Contains(e.logs.String(), tok) {
			t.Fatal("a session token appears in the server log")
		}
	}
}

func TestAuthEveryUnaryCall(t *testing.T) {
	e := startSecure(t, true)
	a := e.create("a")
	b := e.create("b")
	x := &pb.RegisterVariableRequest{SessionId: "a", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(1)}
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetSession", func(ctx context.Context) error {
			_, err := e.c.GetSession(ctx, &pb.GetSessionRequest{SessionId: "a"})
			return err
		}},
		{"Heartbeat", func(ctx context.Context) error {
			_, err := e.c.Heartbeat(ctx, &pb.HeartbeatRequest{SessionId: "a"})
			return err
		}},
		{"RegisterVariable", func(ctx context.Context) error {
			_, err := e.c.RegisterVariable(ctx, x)
			return err
		}},
		{"GetVariable", func(ctx context.Context) error {
			_, err := e.c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "a", VariableIdentifier: "x"})
			return err
		}},
		{"GetVariables", func(ctx context.Context) error {
			_, err := e.c.GetVariables(ctx, &pb.GetVariablesRequest{SessionId: "a", VariableIdentifiers: []string{"x"}})
			return err
		}},
		{"SetVariable", func(ctx context.Context) error {
			_, err := e.c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "a", VariableIdentifier: "x", Value: intVal(2)})
			return err
		}},
		{"SetVariables", func(ctx context.Context) error {
			_, err := e.c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "a", Updates: map[string]*pb.Value{"x": intVal(3)}})
			return err
		}},
		{"ListVariables", func(ctx context.Context) error {
			_, err := e.c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: "a"})
			return err
		}},
		{"DeleteVariable", func(ctx context.Context) error {
			_, err := e.c.DeleteVariable(ctx, &pb.DeleteVariableRequest{SessionId: "a", VariableIdentifier: "x"})
			return err
		}},
		{"CleanupSession", func(ctx context.Context) error {
			_, err := e.c.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "a"})
			return err
		}},
	}
	refusals := []struct {
		how  string
		ctx  context.Context
		code codes.Code
		msg  string
	}{
		{"no token", e.ctx, codes.Unauthenticated, "Bearer <session_token>"},
		{"another session's token", bearerCtx(e.ctx, b), codes.PermissionDenied, `session "a"`},
		{"a made-up token", bearerCtx(e.ctx, "vbt_"+strings.Repeat("A", 43)), codes.PermissionDenied, `session "a"`},
		{"Basic scheme", metadata.AppendToOutgoingContext(e.ctx, "authorization", "Basic "+a), codes.Unauthenticated, "Bearer <session_token>"},
		{"empty Bearer", metadata.AppendToOutgoingContext(e.ctx, "authorization", "Bearer "), codes.Unauthenticated, "Bearer <session_token>"},
		{"two headers", metadata.AppendToOutgoingContext(bearerCtx(e.ctx, a), "authorization", "Bearer "+a), codes.Unauthenticated, "once"},
	}
	for _, c := range calls {
		for _, r := range refusals {
			before := e.revision("a")
			wantCode(t, c.name+" with "+r.how, c.call(r.ctx), r.code, r.msg)
			if after := e.revision("a"); after != before {
				t.Fatalf("%s with %s changed session a: revision %d -> %d", c.name, r.how, before, after)
			}
		}
		if err := c.call(bearerCtx(e.ctx, a)); err != nil {
			t.Fatalf("%s with the session's token: %v", c.name, err)
		}
	}
	// After cleanup: its old token gets NOT_FOUND, never a refusal or a hang.
	_, err := e.c.GetSession(bearerCtx(e.ctx, a), &pb.GetSessionRequest{SessionId: "a"})
	wantCode(t, "GetSession after cleanup", err, codes.NotFound, `"a"`)
	// A session re-created with the same id gets a new token; the old one no longer works.
	a2 := e.create("a")
	if a2 == a {
		t.Fatal("a re-created session got its predecessor's token")
	}
	_, err = e.c.GetSession(bearerCtx(e.ctx, a), &pb.GetSessionRequest{SessionId: "a"})
	wantCode(t, "old token on the re-created session", err, codes.PermissionDenied, `session "a"`)
	if _, err := e.c.GetSession(bearerCtx(e.ctx, a2), &pb.GetSessionRequest{SessionId: "a"}); err != nil {
		t.Fatal(err)
	}
	// B's token still works on B and a missing session reads NOT_FOUND with any token.
	if _, err := e.c.Heartbeat(bearerCtx(e.ctx, b), &pb.HeartbeatRequest{SessionId: "b"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.GetSession(bearerCtx(e.ctx, b), &pb.GetSessionRequest{SessionId: "nope"})
	wantCode(t, "unknown session with a token", err, codes.NotFound, `"nope"`)
	for _, tok := range []string{a, a2, b} {
		if strings.Contains(e.logs.String(), tok) {
			t.Fatal("a session token appears in the server log")
		}
	}
}

func TestAuthWatch(t *testing.T) {
	e := startSecure(t, true)
	a := e.create("a")
	b := e.create("b")
	if _, err := e.c.RegisterVariable(bearerCtx(e.ctx, a), &pb.RegisterVariableRequest{
		SessionId: "a", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(1),
	}); err != nil {
		t.Fatal(err)
	}
	req := &pb.WatchVariablesRequest{SessionId: "a", IncludeInitialValues: true}
	open := func(ctx context.Context) error {
		ws, err := e.c.WatchVariables(ctx, req)
		if err != nil {
			return err
		}
		_, err = ws.Recv()
		return err
	}
	openBatches := func(ctx context.Context) error {
		ws, err := e.c.WatchVariableBatches(ctx, req)
		if err != nil {
			return err
		}
		_, err = ws.Recv()
		return err
	}
	for name, fn := range map[string]func(context.Context) error{"WatchVariables": open, "WatchVariableBatches": openBatches} {
		wantCode(t, name+" without token", fn(e.ctx), codes.Unauthenticated, "Bearer <session_token>")
		wantCode(t, name+" with session b's token", fn(bearerCtx(e.ctx, b)), codes.PermissionDenied, `session "a"`)
		if n := e.srv.Store.WatchCount(); n != 0 {
			t.Fatalf("%s: %d watches registered by refused calls", name, n)
		}
	}

	ctx, cancel := context.WithCancel(bearerCtx(e.ctx, a))
	defer cancel()
	ws, err := e.c.WatchVariables(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	u, err := ws.Recv()
	if err != nil || u.UpdateType != pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE {
		t.Fatalf("authorized watch: %v, %v", u, err)
	}
	if _, err := e.c.SetVariable(bearerCtx(e.ctx, a), &pb.SetVariableRequest{SessionId: "a", VariableIdentifier: "x", Value: intVal(5)}); err != nil {
		t.Fatal(err)
	}
	for {
		u, err := ws.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if u.UpdateType == pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
			if u.Variable.Value.GetIntValue() != 5 {
				t.Fatalf("update %v", u)
			}
			break
		}
	}
}

func TestAuthOffIgnoresTokens(t *testing.T) {
	e := startSecure(t, false)
	r, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "a"})
	if err != nil || r.SessionToken != "" {
		t.Fatalf("without auth: %v, token %q; want no token", err, r.GetSessionToken())
	}
	if _, err := e.c.GetSession(bearerCtx(e.ctx, "whatever"), &pb.GetSessionRequest{SessionId: "a"}); err != nil {
		t.Fatal(err)
	}
}
