package varbridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait on a channel or a condition in these tests.
const waitTimeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var sessionSeq atomic.Int64

// env is a provider under test plus direct access to the store behind it:
// LocalState's own store, or the store of the server BridgedState talks to.
type env struct {
	name string
	p    StateProvider
	st   *store.Store
}

// set writes through the store, not through the provider.
func (e env) set(t testing.TB, ident string, v any, md map[string]string) int64 {
	t.Helper()
	val, err := ToProto("", v)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.st.Set(e.p.SessionID(), []store.Write{{Identifier: ident, Value: val}}, md, "")
	if err != nil {
		t.Fatalf("store set %s=%v: %v", ident, v, err)
	}
	return res.Revision
}

// setMany writes a batch through the store.
func (e env) setMany(t testing.TB, vals map[string]any) int64 {
	t.Helper()
	var ws []store.Write
	for id, v := range vals {
		val, err := ToProto("", v)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, store.Write{Identifier: id, Value: val})
	}
	res, err := e.st.Set(e.p.SessionID(), ws, nil, "batch")
	if err != nil {
		t.Fatalf("store set many: %v", err)
	}
	return res.Revision
}

func newLocalEnv(t testing.TB, opts ...Option) env {
	t.Helper()
	opts = append([]Option{WithSessionID(fmt.Sprintf("local-%d", sessionSeq.Add(1))), WithLogger(quiet)}, opts...)
	l, err := NewLocalState(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return env{name: "local", p: l, st: l.st}
}

func newBridgedEnv(t testing.TB, storeOpts store.Options, opts ...Option) (env, *servertest.Server) {
	t.Helper()
	srv := servertest.Start(t, storeOpts)
	b := dialBridged(t, srv.Addr, opts...)
	return env{name: "bridged", p: b, st: srv.Store}, srv
}

func dialBridged(t testing.TB, addr string, opts ...Option) *BridgedState {
	t.Helper()
	opts = append([]Option{WithSessionID(fmt.Sprintf("bridged-%d", sessionSeq.Add(1))), WithLogger(quiet)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := NewBridgedState(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// both runs f against a LocalState and a BridgedState.
func both(t *testing.T, f func(t *testing.T, e env)) {
	t.Run("local", func(t *testing.T) { f(t, newLocalEnv(t)) })
	t.Run("bridged", func(t *testing.T) {
		e, _ := newBridgedEnv(t, store.Options{})
		f(t, e)
	})
}

// recorder is a Watcher that records updates and signals each on a channel.
type recorder struct {
	mu  sync.Mutex
	all []Update
	ch  chan Update
}

func newRecorder() *recorder { return &recorder{ch: make(chan Update, 100_000)} }

func (r *recorder) watch(id string, old, new any, meta UpdateMeta) {
	u := Update{Identifier: id, Old: old, New: new, Meta: meta}
	r.mu.Lock()
	r.all = append(r.all, u)
	r.mu.Unlock()
	r.ch <- u
}

// next waits for the next update.
func (r *recorder) next(t testing.TB) Update {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(waitTimeout):
		t.Fatalf("no update within %v", waitTimeout)
		return Update{}
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mustRegister(t testing.TB, p StateProvider, name string, typ Type, v any, opts ...WriteOption) *Variable {
	t.Helper()
	vr, err := p.Register(context.Background(), name, typ, v, opts...)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return vr
}

func mustWatch(t testing.TB, p StateProvider, ctx context.Context, idents []string, w Watcher, opts ...WatchOption) WatchRef {
	t.Helper()
	ref, err := p.WatchVariables(ctx, idents, w, opts...)
	if err != nil {
		t.Fatalf("watch %v: %v", idents, err)
	}
	return ref
}

func watchInfo(t testing.TB, p StateProvider, ref WatchRef) WatchInfo {
	t.Helper()
	for _, wi := range p.ListWatchers() {
		if wi.Ref == ref {
			return wi
		}
	}
	t.Fatalf("watch %v not listed", ref)
	return WatchInfo{}
}

// heartbeatUpdate is a helper for consumer unit tests.
func heartbeatUpdate(rev int64) *pb.VariableUpdate {
	return &pb.VariableUpdate{UpdateType: pb.UpdateType_UPDATE_TYPE_HEARTBEAT, Revision: rev, LastInRevision: true}
}
