package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
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

const waitLimit = 20 * time.Second

type fixture struct {
	t   *testing.T
	srv *servertest.Server
	c   pb.BridgeServiceClient
	ctx context.Context
}

func newFixture(t *testing.T, opts store.Options) *fixture {
	t.Helper()
	srv := servertest.Start(t, opts)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit*3)
	t.Cleanup(cancel)
	return &fixture{t: t, srv: srv, c: pb.NewBridgeServiceClient(conn), ctx: ctx}
}

func (f *fixture) session(id string) *pb.Session {
	f.t.Helper()
	r, err := f.c.InitializeSession(f.ctx, &pb.InitializeSessionRequest{SessionId: id})
	if err != nil {
		f.t.Fatal(err)
	}
	return r.GetSession()
}

// errorInfo returns the ErrorInfo detail every error status carries.
func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			if ei.GetDomain() != server.ErrorDomain {
				t.Fatalf("ErrorInfo domain %q", ei.GetDomain())
			}
			return ei
		}
	}
	t.Fatalf("status %v has no ErrorInfo", err)
	return nil
}

func intVal(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

func (f *fixture) register(sess, name string, v int64) *pb.Variable {
	f.t.Helper()
	r, err := f.c.RegisterVariable(f.ctx, &pb.RegisterVariableRequest{
		SessionId: sess, Name: name, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(v),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return r.Variable
}

func (f *fixture) set(sess, ident string, v int64) int64 {
	f.t.Helper()
	r, err := f.c.SetVariable(f.ctx, &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: ident, Value: intVal(v)})
	if err != nil {
		f.t.Fatal(err)
	}
	return r.Revision
}

// watch opens a stream and waits until the server has registered it.
func (f *fixture) watch(ctx context.Context, req *pb.WatchVariablesRequest) grpc.ServerStreamingClient[pb.VariableUpdate] {
	f.t.Helper()
	s, err := f.c.WatchVariables(ctx, req)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		f.t.Fatalf("watch header: %v", err)
	}
	return s
}

// recvUpdates reads n non-heartbeat updates.
func recvUpdates(t *testing.T, s grpc.ServerStreamingClient[pb.VariableUpdate], n int) []*pb.VariableUpdate {
	t.Helper()
	var out []*pb.VariableUpdate
	for len(out) < n {
		u, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d of %d updates: %v", len(out), n, err)
		}
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
			out = append(out, u)
		}
	}
	return out
}

func TestWatchInitialThenChangesInOrder(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	a := f.register("s", "a", 1)
	f.register("s", "b", 2)
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{a.Id, "b"}, IncludeInitialValues: true})
	init := recvUpdates(t, s, 2)
	for _, u := range init {
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE || u.Revision != 2 {
			t.Fatalf("initial update = %v", u)
		}
	}
	if !init[1].LastInRevision || init[0].LastInRevision {
		t.Fatalf("last_in_revision marks: %v, %v", init[0].LastInRevision, init[1].LastInRevision)
	}
	f.set("s", "a", 10)
	f.set("s", "b", 20)
	if _, err := f.c.DeleteVariable(f.ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "a"}); err != nil {
		t.Fatal(err)
	}
	got := recvUpdates(t, s, 3)
	want := []struct {
		name    string
		typ     pb.UpdateType
		old, nv int64
		rev     int64
	}{
		{"a", pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, 1, 10, 3},
		{"b", pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, 2, 20, 4},
		{"a", pb.UpdateType_UPDATE_TYPE_DELETED, 10, 10, 5},
	}
	for i, w := range want {
		u := got[i]
		if u.VariableName != w.name || u.UpdateType != w.typ || u.OldValue.GetIntValue() != w.old ||
			u.Variable.GetValue().GetIntValue() != w.nv || u.Revision != w.rev || !u.LastInRevision {
			t.Errorf("update %d = %v, want %+v", i, u, w)
		}
	}
}

func TestWatchBatchIsConsecutiveWithOneRevision(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	for _, n := range []string{"x", "y", "z"} {
		f.register("s", n, 0)
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"x", "y", "z"}})
	// Interleave single writes with batches from two goroutines.
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				v := int64(g*1000 + i + 1)
				_, err := f.c.SetVariables(f.ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{
					"x": intVal(v), "y": intVal(v), "z": intVal(v),
				}})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := recvUpdates(t, s, 300)
	for i := 0; i < len(got); i += 3 {
		rev := got[i].Revision
		names := map[string]bool{}
		for j := range 3 {
			u := got[i+j]
			if u.Revision != rev {
				t.Fatalf("batch at %d split: revisions %d and %d", i, rev, u.Revision)
			}
			names[u.VariableName] = true
			if u.LastInRevision != (j == 2) {
				t.Fatalf("update %d of batch: last_in_revision = %v", j, u.LastInRevision)
			}
		}
		if len(names) != 3 {
			t.Fatalf("batch at revision %d has members %v", rev, names)
		}
		if i > 0 && rev != got[i-1].Revision+1 {
			t.Fatalf("gap: revision %d after %d", rev, got[i-1].Revision)
		}
	}
}

// TestWatchSnapshotHasNoGapUnderConcurrentWriters opens watches while writers
// run; each watcher must see exactly the revisions committed after its
// snapshot, in order, and its snapshot must equal the state at that revision.
func TestWatchSnapshotHasNoGapUnderConcurrentWriters(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	const vars, writers, perWriter = 4, 4, 150
	for i := range vars {
		f.register("s", fmt.Sprintf("v%d", i), 0)
	}
	type commit struct {
		rev  int64
		name string
		val  int64
	}
	var mu sync.Mutex
	var commits []commit
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range perWriter {
				name := fmt.Sprintf("v%d", rng.IntN(vars))
				val := int64(w*perWriter + i + 1)
				rev := f.set("s", name, val)
				mu.Lock()
				commits = append(commits, commit{rev, name, val})
				mu.Unlock()
			}
		}()
	}
	type watcher struct {
		stream grpc.ServerStreamingClient[pb.VariableUpdate]
		cancel context.CancelFunc
	}
	var ws []watcher
	close(start)
	for range 5 {
		ctx, cancel := context.WithCancel(f.ctx)
		ws = append(ws, watcher{f.watch(ctx, &pb.WatchVariablesRequest{SessionId: "s", IncludeInitialValues: true}), cancel})
		time.Sleep(time.Millisecond) // spread the snapshots over the writes
	}
	wg.Wait()
	final := int64(vars + writers*perWriter)
	byRev := map[int64]commit{}
	for _, c := range commits {
		byRev[c.rev] = c
	}
	for i, w := range ws {
		state := map[string]int64{}
		var snap int64 = -1
		next := int64(0)
		for next <= final {
			u, err := w.stream.Recv()
			if err != nil {
				t.Fatalf("watcher %d: %v", i, err)
			}
			switch u.UpdateType {
			case pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE:
				snap = u.Revision
				state[u.VariableName] = u.Variable.Value.GetIntValue()
				next = snap + 1
			case pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE:
				if u.Revision != next {
					t.Fatalf("watcher %d: got revision %d, want %d", i, u.Revision, next)
				}
				c := byRev[u.Revision]
				if c.name != u.VariableName || c.val != u.Variable.Value.GetIntValue() {
					t.Fatalf("watcher %d: revision %d is %s=%d, committed %s=%d", i, u.Revision, u.VariableName, u.Variable.Value.GetIntValue(), c.name, c.val)
				}
				if u.OldValue.GetIntValue() != state[u.VariableName] {
					t.Fatalf("watcher %d: old value %d, state had %d", i, u.OldValue.GetIntValue(), state[u.VariableName])
				}
				state[u.VariableName] = u.Variable.Value.GetIntValue()
				next++
			case pb.UpdateType_UPDATE_TYPE_HEARTBEAT:
			default:
				t.Fatalf("watcher %d: unexpected %v", i, u)
			}
		}
		if snap < vars {
			t.Fatalf("watcher %d: snapshot revision %d", i, snap)
		}
		w.cancel()
	}
}

func TestWatchResumeFromRevision(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 0)
	for i := range 10 {
		f.set("s", "a", int64(i+1)) // revisions 2..11
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a"}, StartRevision: 5})
	got := recvUpdates(t, s, 7)
	for i, u := range got {
		if u.Revision != int64(5+i) || u.Variable.Value.GetIntValue() != int64(4+i) {
			t.Fatalf("update %d: revision %d value %d", i, u.Revision, u.Variable.Value.GetIntValue())
		}
	}
	// The next revision (12) is a resume point the session has not reached
	// yet: the watch waits for it.
	s2 := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a"}, StartRevision: 12})
	f.set("s", "a", 100) // 12
	if u := recvUpdates(t, s2, 1)[0]; u.Revision != 12 {
		t.Fatalf("watch of the next revision got revision %d", u.Revision)
	}
}

// A resume point beyond the session's revision + 1 cannot come from this
// session's history (a server that lost the session, which was then created
// again): silence would lose what the client lacks, so it is OUT_OF_RANGE,
// naming both revisions, with the incarnation to compare.
func TestWatchResumeAheadIsOutOfRange(t *testing.T) {
	f := newFixture(t, store.Options{})
	info := f.session("s")
	f.register("s", "a", 0)
	f.set("s", "a", 1) // revision 2
	for _, inc := range []string{"", info.GetIncarnation()} {
		s, err := f.c.WatchVariables(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a"}, StartRevision: 4, Incarnation: inc})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		st := status.Convert(err)
		if st.Code() != codes.OutOfRange || !strings.Contains(st.Message(), "start_revision 4") || !strings.Contains(st.Message(), "revision 2") {
			t.Fatalf("incarnation %q: got %v; want OUT_OF_RANGE naming 4 and 2", inc, err)
		}
		ei := errorInfo(t, err)
		if ei.GetReason() != "REVISION_OUT_OF_RANGE" || ei.GetMetadata()["start_revision"] != "4" || ei.GetMetadata()["session_revision"] != "2" ||
			ei.GetMetadata()["incarnation"] != info.GetIncarnation() {
			t.Fatalf("ErrorInfo = %v", ei)
		}
	}
}

// A resume that names another incarnation of the session starts with
// RESYNC (current values, flagged) and goes on after it; the incarnation
// travels in the header, on the first update and on heartbeats.
func TestWatchResumeFromAnotherIncarnationResyncs(t *testing.T) {
	f := newFixture(t, store.Options{})
	info := f.session("s")
	if len(info.GetIncarnation()) != 16 {
		t.Fatalf("incarnation %q: want 16 hex characters", info.GetIncarnation())
	}
	f.register("s", "a", 0)
	f.register("s", "b", 10)
	rev := f.set("s", "a", 1)                 // revision 3
	for _, start := range []int64{2, 4, 22} { // inside, next, and far beyond this incarnation's history
		ctx, cancel := context.WithCancel(f.ctx)
		s := f.watch(ctx, &pb.WatchVariablesRequest{
			SessionId: "s", VariableIdentifiers: []string{"b", "a"}, StartRevision: start,
			Incarnation: "0123456789abcdef", HeartbeatIntervalMs: 20,
		})
		md, err := s.Header()
		if err != nil || len(md.Get(server.IncarnationHeader)) != 1 || md.Get(server.IncarnationHeader)[0] != info.GetIncarnation() {
			t.Fatalf("start %d: header %v, %v; want incarnation %s", start, md, err, info.GetIncarnation())
		}
		got := recvUpdates(t, s, 2)
		for i, want := range []struct {
			name string
			val  int64
		}{{"a", 1}, {"b", 10}} {
			u := got[i]
			if u.UpdateType != pb.UpdateType_UPDATE_TYPE_RESYNC || u.VariableName != want.name || u.Variable.Value.GetIntValue() != want.val || u.Revision != rev {
				t.Fatalf("start %d: update %d = %v; want RESYNC of %s=%d at %d", start, i, u, want.name, want.val, rev)
			}
			if u.Incarnation != info.GetIncarnation() {
				t.Fatalf("start %d: RESYNC update carries incarnation %q", start, u.Incarnation)
			}
		}
		if !got[1].LastInRevision {
			t.Fatalf("start %d: the last RESYNC update is not flagged last_in_revision", start)
		}
		for { // heartbeats (every 20 ms here) carry it too
			u, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if u.UpdateType == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
				if u.Incarnation != info.GetIncarnation() || u.Revision != rev {
					t.Fatalf("heartbeat %v: want incarnation %s at revision %d", u, info.GetIncarnation(), rev)
				}
				break
			}
		}
		f.set("s", "a", 2) // rev+1 follows the resync
		u := recvUpdates(t, s, 1)[0]
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE || u.Variable.Value.GetIntValue() != 2 {
			t.Fatalf("start %d: after the resync got %v", start, u)
		}
		cancel()
		rev = f.set("s", "a", 1) // back to 1 for the next round
	}
}

func TestWatchOutsideHistoryGetsResync(t *testing.T) {
	f := newFixture(t, store.Options{HistoryLimit: 5})
	f.session("s")
	f.register("s", "a", 0)
	f.register("s", "quiet", 7)
	for i := range 20 {
		f.set("s", "a", int64(i+1))
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a", "quiet"}, StartRevision: 3})
	got := recvUpdates(t, s, 2)
	for _, u := range got {
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_RESYNC || u.Revision != 22 {
			t.Fatalf("want RESYNC at 22, got %v", u)
		}
	}
	if got[0].Variable.Value.GetIntValue() != 20 || got[1].Variable.Value.GetIntValue() != 7 || !got[1].LastInRevision {
		t.Fatalf("resync values: %v", got)
	}
	f.set("s", "a", 99)
	if u := recvUpdates(t, s, 1)[0]; u.Revision != 23 || u.UpdateType != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
		t.Fatalf("after resync: %v", u)
	}
}

// A watcher of a quiet variable in a busy session must not be resynced just
// because the busy variable's history rolled over.
func TestQuietWatcherSurvivesBusyHistory(t *testing.T) {
	f := newFixture(t, store.Options{HistoryLimit: 4})
	f.session("s")
	f.register("s", "busy", 0)
	f.register("s", "quiet", 0)
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"quiet"}, HeartbeatIntervalMs: 10})
	for i := range 50 {
		f.set("s", "busy", int64(i+1))
	}
	// The heartbeat's revision covers the busy writes.
	for {
		u, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
			t.Fatalf("quiet watcher got %v", u)
		}
		if u.Revision == 52 {
			break
		}
	}
	rev := f.set("s", "quiet", 1)
	if u := recvUpdates(t, s, 1)[0]; u.UpdateType != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE || u.Revision != rev {
		t.Fatalf("quiet watcher got %v", u)
	}
}

func TestWatchWhereFilter(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "t", 20)
	bad, err := f.c.WatchVariables(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", Where: "new >"})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "where") {
		t.Fatalf("bad expression: %v", err)
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{
		SessionId: "s", VariableIdentifiers: []string{"t"}, HeartbeatIntervalMs: 10,
		Where: `new - old > 1 || ("force" in metadata && metadata["force"] == "yes")`,
	})
	f.set("s", "t", 21) // +1: filtered
	rev := f.set("s", "t", 30)
	if u := recvUpdates(t, s, 1)[0]; u.Revision != rev {
		t.Fatalf("got revision %d, want %d", u.Revision, rev)
	}
	if _, err := f.c.SetVariable(f.ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "t", Value: intVal(29), Metadata: map[string]string{"force": "yes"}}); err != nil {
		t.Fatal(err)
	}
	if u := recvUpdates(t, s, 1)[0]; u.Variable.Value.GetIntValue() != 29 || u.UpdateMetadata["force"] != "yes" {
		t.Fatalf("forced update: %v", u)
	}
	rev = f.set("s", "t", 28) // filtered, but the heartbeat covers it
	for {
		u, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if u.UpdateType != pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
			t.Fatalf("filtered update delivered: %v", u)
		}
		if u.Revision == rev {
			break
		}
	}
}

func TestWatchErrors(t *testing.T) {
	f := newFixture(t, store.Options{MaxWatchIdentifiers: 2, MaxWatches: 1})
	f.session("s")
	f.register("s", "a", 0)
	cases := []struct {
		name string
		req  *pb.WatchVariablesRequest
		code codes.Code
		msg  string
	}{
		{"unknown session", &pb.WatchVariablesRequest{SessionId: "nope"}, codes.NotFound, `session "nope"`},
		{"too many identifiers", &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a", "m1", "m2"}}, codes.ResourceExhausted, "max_watch_identifiers"},
		{"missing ones listed", &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"m1", "m2"}}, codes.NotFound, `"m1", "m2"`},
		{"negative start", &pb.WatchVariablesRequest{SessionId: "s", StartRevision: -1}, codes.InvalidArgument, "start_revision"},
		{"negative heartbeat", &pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: -5}, codes.InvalidArgument, "heartbeat_interval_ms"},
		{"non-bool where", &pb.WatchVariablesRequest{SessionId: "s", Where: "name"}, codes.InvalidArgument, "not bool"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := f.c.WatchVariables(f.ctx, tc.req)
			if err == nil {
				_, err = s.Recv()
			}
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
	t.Run("watches per session", func(t *testing.T) {
		ctx, cancel := context.WithCancel(f.ctx)
		defer cancel()
		f.watch(ctx, &pb.WatchVariablesRequest{SessionId: "s"})
		s, _ := f.c.WatchVariables(f.ctx, &pb.WatchVariablesRequest{SessionId: "s"})
		if _, err := s.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_watches_per_session") {
			t.Fatalf("second watch: %v", err)
		}
	})
}

func TestSessionCleanupEndsWatch(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 0)
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s"})
	if _, err := f.c.CleanupSession(f.ctx, &pb.CleanupSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Recv()
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "cleaned up") {
		t.Fatalf("stream ended with %v", err)
	}
}

func TestCoalesceDeliversLatest(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 0)
	f.register("s", "b", 0)
	// Resume from the start of a long run of writes: the stream is behind,
	// so coalesce leaves only the last value of each variable.
	for i := range 100 {
		f.set("s", "a", int64(i+1))
		f.set("s", "b", int64(-i-1))
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a", "b"}, StartRevision: 3, Coalesce: true})
	var last map[string]int64 = map[string]int64{}
	var rev int64
	for rev < 202 {
		u := recvUpdates(t, s, 1)[0]
		if u.Revision <= rev {
			t.Fatalf("revision %d after %d", u.Revision, rev)
		}
		rev = u.Revision
		last[u.VariableName] = u.Variable.Value.GetIntValue()
	}
	if last["a"] != 100 || last["b"] != -100 {
		t.Fatalf("latest values %v", last)
	}
}

// TestStalledWatcherDoesNotBlockWriters opens a watch that never reads while
// writers push far more than the history window and the HTTP/2 window hold.
// Writers finish; the watcher, once it reads, gets a RESYNC and goes on.
func TestStalledWatcherDoesNotBlockWriters(t *testing.T) {
	f := newFixture(t, store.Options{HistoryLimit: 100})
	f.session("s")
	big := strings.Repeat("x", 16<<10)
	if _, err := f.c.RegisterVariable(f.ctx, &pb.RegisterVariableRequest{
		SessionId: "s", Name: "blob", Type: pb.VariableType_VARIABLE_TYPE_STRING,
		InitialValue: &pb.Value{Kind: &pb.Value_StringValue{StringValue: big}},
	}); err != nil {
		t.Fatal(err)
	}
	s := f.watch(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"blob"}})
	const writes = 3000 // ~48 MiB of updates: far past any flow-control window
	for i := range writes {
		v := fmt.Sprintf("%s%08d", big[:len(big)-8], i)
		if _, err := f.c.SetVariable(f.ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "blob",
			Value: &pb.Value{Kind: &pb.Value_StringValue{StringValue: v}}}); err != nil {
			t.Fatal(err)
		}
	}
	var prev int64
	sawResync := false
	for prev < writes+1 {
		u := recvUpdates(t, s, 1)[0]
		if u.Revision <= prev {
			t.Fatalf("revision %d after %d", u.Revision, prev)
		}
		if u.UpdateType == pb.UpdateType_UPDATE_TYPE_RESYNC {
			sawResync = true
		} else if prev != 0 && u.Revision != prev+1 {
			t.Fatalf("gap without RESYNC: %d after %d", u.Revision, prev)
		}
		prev = u.Revision
	}
	if !sawResync {
		t.Fatal("a watcher that fell out of the window got no RESYNC")
	}
}

func TestThousandWatchesThenNoObserverLeft(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 0)
	const n = 1000
	ctx, cancel := context.WithCancel(f.ctx)
	streams := make([]grpc.ServerStreamingClient[pb.VariableUpdate], n)
	for i := range streams {
		streams[i] = f.watch(ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a"}})
	}
	if got := f.srv.Store.WatchCount(); got != n {
		t.Fatalf("server has %d watches, want %d", got, n)
	}
	rev := f.set("s", "a", 42)
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, err := s.Recv()
			if err != nil || u.Revision != rev {
				t.Errorf("got %v, %v", u, err)
			}
		}()
	}
	wg.Wait()
	cancel()
	waitFor(t, "observers removed", func() bool { return f.srv.Store.WatchCount() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchVariableBatchesCarriesTheSameStream(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 0)
	const n = 500
	for i := range n {
		f.set("s", "a", int64(i+1)) // revisions 2..n+1
	}
	s, err := f.c.WatchVariableBatches(f.ctx, &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 2})
	if err != nil {
		t.Fatal(err)
	}
	next, msgs := int64(2), 0
	for next <= n+1 {
		b, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		for _, u := range b.Updates {
			if u.UpdateType == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
				continue
			}
			if u.Revision != next || u.Variable.Value.GetIntValue() != next-1 {
				t.Fatalf("got revision %d value %d, want %d", u.Revision, u.Variable.Value.GetIntValue(), next)
			}
			next++
		}
	}
	if msgs >= n {
		t.Fatalf("%d updates took %d messages: not batched", n, msgs)
	}
}
