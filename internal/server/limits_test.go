package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// limClient starts a server with the given limits and returns a client.
func limClient(t *testing.T, so store.Options, rl server.RequestLimits) (*servertest.Server, pb.BridgeServiceClient, context.Context) {
	t.Helper()
	srv := servertest.Start(t, so, server.WithRequestLimits(rl))
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return srv, pb.NewBridgeServiceClient(conn), ctx
}

// wantLimit checks a RESOURCE_EXHAUSTED status naming limit in its message
// and in a QuotaFailure detail.
func wantLimit(t *testing.T, what string, err error, limit string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "limit "+limit+" is ") {
		t.Fatalf("%s: %v %q; want RESOURCE_EXHAUSTED naming %s", what, st.Code(), st.Message(), limit)
	}
	for _, d := range st.Details() {
		if qf, ok := d.(*errdetails.QuotaFailure); ok && len(qf.Violations) == 1 && qf.Violations[0].Subject == limit {
			return
		}
	}
	t.Fatalf("%s: no QuotaFailure detail with subject %s in %v", what, limit, st.Details())
}

func str(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }

func TestLimitSessions(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{MaxSessions: 2}, server.RequestLimits{})
	for _, id := range []string{"a", "b"} {
		if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: id}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "c"})
	wantLimit(t, "third session", err, "max_sessions")
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "a"}); err != nil {
		t.Fatalf("joining an existing session at the limit: %v", err)
	}
	if _, err := c.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "c"}); err != nil {
		t.Fatalf("after a cleanup: %v", err)
	}
}

func TestLimitVariablesPerSession(t *testing.T) {
	srv, c, ctx := limClient(t, store.Options{MaxVariables: 2}, server.RequestLimits{})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	reg := func(name string) error {
		_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: name, Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("v")})
		return err
	}
	for _, n := range []string{"a", "b"} {
		if err := reg(n); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := srv.Store.GetSession("s")
	wantLimit(t, "third variable", reg("c"), "max_variables_per_session")
	if after, _ := srv.Store.GetSession("s"); after.Revision != info.Revision || after.VariableCount != 2 {
		t.Fatalf("refused register changed the session: %+v", after)
	}
}

func TestLimitWatchesPerSession(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{MaxWatches: 2}, server.RequestLimits{})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	open := func() (context.CancelFunc, error) {
		wctx, cancel := context.WithCancel(ctx)
		ws, err := c.WatchVariables(wctx, &pb.WatchVariablesRequest{SessionId: "s"})
		if err == nil {
			_, err = ws.Header()
		}
		if err == nil {
			// Header is empty when the call failed before sending one.
			if md, _ := ws.Header(); len(md.Get(server.RevisionHeader)) == 0 {
				_, err = ws.Recv()
			}
		}
		return cancel, err
	}
	var cancels []context.CancelFunc
	for i := 0; i < 2; i++ {
		cancel, err := open()
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
	}
	cancel, err := open()
	cancel()
	wantLimit(t, "third watch", err, "max_watches_per_session")
	cancels[0]()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cancel, err := open()
		if err == nil {
			cancel()
			break
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("a watch slot never came back after a cancel: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancels[1]()
}

func TestLimitIdentifiersPerWatch(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{MaxWatchIdentifiers: 2}, server.RequestLimits{})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a", "b", "c"}})
	if err == nil {
		_, err = ws.Recv()
	}
	wantLimit(t, "watch of three", err, "max_watch_identifiers")
}

func TestLimitValueBytes(t *testing.T) {
	srv, c, ctx := limClient(t, store.Options{MaxValueBytes: 64}, server.RequestLimits{})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	big := str(strings.Repeat("x", 100))
	_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: big})
	wantLimit(t, "register", err, "max_value_bytes")
	if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("ok")}); err != nil {
		t.Fatal(err)
	}
	info, _ := srv.Store.GetSession("s")
	_, err = c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "a", Value: big})
	wantLimit(t, "set", err, "max_value_bytes")
	_, err = c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"a": big}})
	wantLimit(t, "set many", err, "max_value_bytes")
	if after, _ := srv.Store.GetSession("s"); after.Revision != info.Revision {
		t.Fatal("a refused write took a revision")
	}
}

func TestLimitMetadata(t *testing.T) {
	srv, c, ctx := limClient(t, store.Options{}, server.RequestLimits{MaxMetadataEntries: 2, MaxMetadataKeyBytes: 8, MaxMetadataValueBytes: 16})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("v")}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		md    map[string]string
		limit string
	}{
		{map[string]string{"a": "1", "b": "2", "c": "3"}, "max_metadata_entries"},
		{map[string]string{"long-key-here": "1"}, "max_metadata_key_bytes"},
		{map[string]string{"k": strings.Repeat("v", 17)}, "max_metadata_value_bytes"},
	}
	for _, tc := range cases {
		info, _ := srv.Store.GetSession("s")
		calls := map[string]func() error{
			"InitializeSession": func() error {
				_, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "new", Metadata: tc.md})
				return err
			},
			"RegisterVariable": func() error {
				_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "b", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("v"), Metadata: tc.md})
				return err
			},
			"SetVariable": func() error {
				_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "a", Value: str("w"), Metadata: tc.md})
				return err
			},
			"SetVariables": func() error {
				_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"a": str("w")}, Metadata: tc.md})
				return err
			},
			"DeleteVariable": func() error {
				_, err := c.DeleteVariable(ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "a", Metadata: tc.md})
				return err
			},
		}
		for name, call := range calls {
			wantLimit(t, name+" "+tc.limit, call(), tc.limit)
		}
		if after, _ := srv.Store.GetSession("s"); after.Revision != info.Revision {
			t.Fatalf("%s: a refused call took a revision", tc.limit)
		}
		if _, err := srv.Store.GetSession("new"); err == nil {
			t.Fatalf("%s: a refused InitializeSession created its session", tc.limit)
		}
	}
	// At the limits exactly, calls pass.
	md := map[string]string{"12345678": strings.Repeat("v", 16), "b": ""}
	if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "a", Value: str("w"), Metadata: md}); err != nil {
		t.Fatalf("metadata at the limits: %v", err)
	}
}

func TestLimitMessageSize(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{}, server.RequestLimits{MaxRecvMsgBytes: 1024})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str(strings.Repeat("x", 2048))})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") || !strings.Contains(st.Message(), "1024") {
		t.Fatalf("oversized message: %v %q", st.Code(), st.Message())
	}
	if _, err := c.GetSession(ctx, &pb.GetSessionRequest{SessionId: "s"}); err != nil {
		t.Fatalf("the connection after an oversized message: %v", err)
	}
}

func TestLimitIdentifierLengthAndLongMessages(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{}, server.RequestLimits{})
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", server.MaxIdentifierBytes+1)
	_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: long})
	wantCode(t, "long identifier", err, codes.InvalidArgument, fmt.Sprintf("variable_identifier: is %d bytes long; the limit is %d", len(long), server.MaxIdentifierBytes))
	_, err = c.GetSession(ctx, &pb.GetSessionRequest{SessionId: long})
	wantCode(t, "long session id", err, codes.InvalidArgument, "session_id: is 257 bytes long")
	_, err = c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{long: str("x")}})
	wantCode(t, "long update key", err, codes.InvalidArgument, "updates: is 257 bytes long")

	// 500 unknown identifiers of 200 bytes: the NOT_FOUND message is cut to
	// fit in trailers, and still says what is wrong.
	updates := map[string]*pb.Value{}
	for i := 0; i < 500; i++ {
		updates[fmt.Sprintf("%03d%s", i, strings.Repeat("u", 197))] = str("x")
	}
	_, err = c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: updates})
	st := status.Convert(err)
	if st.Code() != codes.NotFound || len(st.Message()) > 2100 || !strings.Contains(st.Message(), `session "s" has no variable`) || !strings.Contains(st.Message(), "message cut") {
		t.Fatalf("500 unknown identifiers: %v, %d bytes: %.200q", st.Code(), len(st.Message()), st.Message())
	}
}
