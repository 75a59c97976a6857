package server_test

// Fuzzing of request validation through the real gRPC server: arbitrary
// bytes are sent as the request of any BridgeService method, to a server
// with auth off and one with auth on (with session "s"'s token). Every call
// must end in success or a status error; never a recovered panic (INTERNAL
// with server.PanicMessage), an Unknown code, INTERNAL, or a hang. Bytes
// that are not a valid message (truncated, a string that is not UTF-8) are
// the client's fault: INVALID_ARGUMENT.
//
//	go test -run='^$' -fuzz=FuzzRequests -fuzztime=30s ./internal/server
//
// The seed corpus is in testdata/fuzz/FuzzRequests; regenerate the
// hand-written part with VARBRIDGE_WRITE_FUZZ_CORPUS=1 go test -run=TestWriteServerFuzzCorpus.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// fzMethods are the methods a fuzz input's first byte picks from (>> 1; the
// low bit picks the auth server), with their request types.
var fzMethods = []struct {
	name   string
	stream bool
	req    func() proto.Message
}{
	{"InitializeSession", false, func() proto.Message { return &pb.InitializeSessionRequest{} }},
	{"GetSession", false, func() proto.Message { return &pb.GetSessionRequest{} }},
	{"Heartbeat", false, func() proto.Message { return &pb.HeartbeatRequest{} }},
	{"CleanupSession", false, func() proto.Message { return &pb.CleanupSessionRequest{} }},
	{"RegisterVariable", false, func() proto.Message { return &pb.RegisterVariableRequest{} }},
	{"GetVariable", false, func() proto.Message { return &pb.GetVariableRequest{} }},
	{"GetVariables", false, func() proto.Message { return &pb.GetVariablesRequest{} }},
	{"SetVariable", false, func() proto.Message { return &pb.SetVariableRequest{} }},
	{"SetVariables", false, func() proto.Message { return &pb.SetVariablesRequest{} }},
	{"ListVariables", false, func() proto.Message { return &pb.ListVariablesRequest{} }},
	{"DeleteVariable", false, func() proto.Message { return &pb.DeleteVariableRequest{} }},
	{"ListSessions", false, func() proto.Message { return &pb.ListSessionsRequest{} }},
	{"WatchVariables", true, func() proto.Message { return &pb.WatchVariablesRequest{} }},
	{"WatchVariableBatches", true, func() proto.Message { return &pb.WatchVariablesRequest{} }},
	{"ListWatches", false, func() proto.Message { return &pb.ListWatchesRequest{} }},
	{"WriteVariables", true, func() proto.Message { return &pb.WriteVariablesRequest{} }},
}

// rawCodec sends and receives message bytes as they are.
type rawCodec struct{}

type rawMsg struct{ b []byte }

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawMsg).b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawMsg).b = data.Materialize()
	return nil
}

// fzTarget is one server and a client that sends raw bytes to it.
type fzTarget struct {
	srv   *servertest.Server
	conn  *grpc.ClientConn
	auth  bool
	token string // session "s"'s, when auth is on
}

func newFzTarget(f *testing.F, auth bool) *fzTarget {
	opts := []server.Option{server.WithRequestLimits(server.RequestLimits{MaxRecvMsgBytes: 1 << 20})}
	if auth {
		opts = append(opts, server.WithAuth())
	}
	t := &fzTarget{auth: auth, srv: servertest.Start(f, store.Options{
		MaxSessions: 64, MaxVariables: 64, MaxWatches: 16, MaxWatchIdentifiers: 16, MaxValueBytes: 4096, HistoryLimit: 64,
	}, opts...)}
	conn, err := grpc.NewClient(t.srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	t.conn = conn
	return t
}

// reset makes session "s" exist with the table's variables and keeps it
// small, so inputs keep reaching validation rather than limits. (Sessions
// the inputs create stay until max_sessions refuses more; that path is
// fuzzed too.)
func (t *fzTarget) reset(tb testing.TB) {
	st := t.srv.Store
	if info, err := st.GetSession("s"); err == nil && info.VariableCount <= 32 {
		return
	}
	_, _ = st.CleanupSession("s")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := new(rawMsg)
	in := &rawMsg{fzMarshal(&pb.InitializeSessionRequest{SessionId: "s"})}
	if err := t.conn.Invoke(ctx, "/varbridge.v1.BridgeService/InitializeSession", in, out); err != nil {
		tb.Fatalf("re-create session s: %v", err)
	}
	var resp pb.InitializeSessionResponse
	if err := proto.Unmarshal(out.b, &resp); err != nil {
		tb.Fatal(err)
	}
	t.token = resp.SessionToken
	for _, r := range biVars {
		r = proto.CloneOf(r)
		r.SessionId = "s"
		if err := t.conn.Invoke(t.ctx(ctx), "/varbridge.v1.BridgeService/RegisterVariable", &rawMsg{fzMarshal(r)}, new(rawMsg)); err != nil {
			tb.Fatalf("register %s: %v", r.Name, err)
		}
	}
}

func (t *fzTarget) ctx(ctx context.Context) context.Context {
	if t.auth && t.token != "" {
		return metadata.AppendToOutgoingContext(ctx, server.AuthHeader, "Bearer "+t.token)
	}
	return ctx
}

// call sends body as method's request and returns how the call ended.
func (t *fzTarget) call(method string, stream bool, body []byte) error {
	ctx, cancel := context.WithTimeout(t.ctx(context.Background()), 10*time.Second)
	defer cancel()
	full := "/varbridge.v1.BridgeService/" + method
	if !stream {
		return t.conn.Invoke(ctx, full, &rawMsg{body}, new(rawMsg))
	}
	if method == "WriteVariables" {
		return t.writes(ctx, full, body)
	}
	s, err := t.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(&rawMsg{body}); err != nil {
		return s.RecvMsg(new(rawMsg))
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	md, err := s.Header()
	if err != nil {
		return err
	}
	if len(md.Get(server.RevisionHeader)) > 0 {
		return nil // the watch is registered; cancel ends it
	}
	return s.RecvMsg(new(rawMsg))
}

// writes sends body as the one message of a write stream and returns the
// stream's end, or the first failed ack's status.
func (t *fzTarget) writes(ctx context.Context, full string, body []byte) error {
	s, err := t.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, full)
	if err != nil {
		return err
	}
	if err := s.SendMsg(&rawMsg{body}); err != nil {
		return s.RecvMsg(new(rawMsg))
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	var failed error
	for {
		m := new(rawMsg)
		if err := s.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				return failed
			}
			return err
		}
		var resp pb.WriteVariablesResponse
		if err := proto.Unmarshal(m.b, &resp); err != nil {
			return status.Errorf(codes.Internal, "an ack that does not decode: %v", err)
		}
		for _, a := range resp.GetAcks() {
			if e := a.GetError(); e != nil && failed == nil {
				failed = status.ErrorProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
			}
		}
	}
}

func fzMarshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// fzServerSeeds are valid and invalid requests of every method.
func fzServerSeeds() []struct {
	method int
	msg    proto.Message
} {
	type seed = struct {
		method int
		msg    proto.Message
	}
	var seeds []seed
	idx := map[string]int{}
	for i, m := range fzMethods {
		idx[m.name] = i
		seeds = append(seeds, seed{i, m.req()}) // the empty request
	}
	add := func(name string, m proto.Message) { seeds = append(seeds, seed{idx[name], m}) }
	add("InitializeSession", &pb.InitializeSessionRequest{SessionId: "a", Metadata: map[string]string{"k": "v"}})
	add("GetSession", &pb.GetSessionRequest{SessionId: "s"})
	add("Heartbeat", &pb.HeartbeatRequest{SessionId: "s"})
	add("ListWatches", &pb.ListWatchesRequest{SessionId: "s"})
	add("CleanupSession", &pb.CleanupSessionRequest{SessionId: "a"})
	for _, r := range biVars {
		r = proto.CloneOf(r)
		r.SessionId, r.Name = "s", r.Name+"2"
		add("RegisterVariable", r)
	}
	add("GetVariable", &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: "i"})
	add("GetVariables", &pb.GetVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"i", "f", "nope"}})
	add("SetVariable", &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(6), ExpectedVersion: proto.Int64(1)})
	add("SetVariable", &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "ten", Value: biTensor("float32", []int64{2}, 8)})
	add("SetVariable", &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biStr("xyz"), Metadata: map[string]string{"source": "fz"}})
	add("SetVariables", &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"i": biInt(7), "f": biFloat(1.5), "emb": biEmb(3, 2, 1)}, ExpectedVersions: map[string]int64{"i": 1}})
	add("ListVariables", &pb.ListVariablesRequest{SessionId: "s", Pattern: "[a-z]*"})
	add("DeleteVariable", &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "b"})
	for _, w := range []*pb.WatchVariablesRequest{
		{SessionId: "s", IncludeInitialValues: true},
		{SessionId: "s", VariableIdentifiers: []string{"i", "f"}, StartRevision: 2, Where: "new > old", Coalesce: true, HeartbeatIntervalMs: 10},
		{SessionId: "s", VariableIdentifiers: []string{"nope"}, Where: "new >"},
	} {
		add("WatchVariables", w)
		add("WatchVariableBatches", w)
	}
	add("WriteVariables", &pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{
		{Id: 1, Write: &pb.WriteRequest_SetVariable{SetVariable: &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(9)}}},
		{Id: 2, Write: &pb.WriteRequest_SetVariables{SetVariables: &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"f": biFloat(2.5), "nope": biInt(1)}}}},
		{Id: 3},
	}})
	return seeds
}

// TestWriteServerFuzzCorpus writes the seeds above to testdata when asked.
func TestWriteServerFuzzCorpus(t *testing.T) {
	if os.Getenv("VARBRIDGE_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set VARBRIDGE_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzRequests/seed-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRequests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range fzServerSeeds() {
		for _, auth := range []byte{0, 1} {
			body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", byte(s.method<<1)|auth, fzMarshal(s.msg))
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%03d", n)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	// Bytes that are no message at all.
	for _, junk := range []string{"\xff", "\x0a\x05ab", "\x12\x80\x80\x80\x80\x10"} {
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", byte(8), junk)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%03d", n)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
}

func FuzzRequests(f *testing.F) {
	targets := [2]*fzTarget{newFzTarget(f, false), newFzTarget(f, true)}
	f.Fuzz(func(t *testing.T, pick byte, body []byte) {
		m := fzMethods[int(pick>>1)%len(fzMethods)]
		tg := targets[pick&1]
		tg.reset(t)
		err := tg.call(m.name, m.stream, body)
		st, ok := status.FromError(err)
		if !ok {
			t.Fatalf("%s: not a status error: %v", m.name, err)
		}
		valid := proto.Unmarshal(body, m.req()) == nil
		switch {
		case st.Code() == codes.Unknown:
			t.Fatalf("%s: Unknown code: %q", m.name, st.Message())
		case strings.Contains(st.Message(), server.PanicMessage):
			t.Fatalf("%s: the server panicked: %q", m.name, st.Message())
		case st.Code() == codes.Internal:
			t.Fatalf("%s: INTERNAL (valid message: %v): %q", m.name, valid, st.Message())
		case !valid && st.Code() != codes.InvalidArgument:
			t.Fatalf("%s: %v for bytes that are no message; want INVALID_ARGUMENT: %q", m.name, st.Code(), st.Message())
		case st.Code() == codes.DeadlineExceeded:
			t.Fatalf("%s: the call hung: %q", m.name, st.Message())
		}
	})
}
