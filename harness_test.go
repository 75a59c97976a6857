package varbridge

// The harness of the package's tests. Its helpers are exported (to the
// tests only) for the tests of package varbridge_test, which run every
// scenario on both providers and so cannot be in this package: package
// local, which holds the other provider, imports it. Those tests keep the
// scenarios' parity; the tests here look inside BridgedState.

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

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// TestMain checks for leaks after the tests; in cluster mode (see
// StartServer) it starts the etcd cluster they share before them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(clusterMain{m}) }

// WaitTimeout bounds every wait on a channel or a condition in these tests.
const WaitTimeout = 10 * time.Second

// Quiet is a logger that drops everything.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// SessionSeq numbers the sessions the tests create.
var SessionSeq atomic.Int64

// DialBridged is a BridgedState on addr in a new session, closed when the
// test ends.
func DialBridged(t testing.TB, addr string, opts ...Option) *BridgedState {
	t.Helper()
	opts = append([]Option{WithSessionID(fmt.Sprintf("bridged-%d", SessionSeq.Add(1))), WithLogger(Quiet)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	b, err := NewBridgedState(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Recorder is a Watcher that records updates and signals each on a channel.
type Recorder struct {
	mu  sync.Mutex
	all []Update
	ch  chan Update
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{ch: make(chan Update, 100_000)} }

// Watch is the Watcher.
func (r *Recorder) Watch(id string, old, new any, meta UpdateMeta) {
	u := Update{Identifier: id, Old: old, New: new, Meta: meta}
	r.mu.Lock()
	r.all = append(r.all, u)
	r.mu.Unlock()
	r.ch <- u
}

// Next waits for the next update.
func (r *Recorder) Next(t testing.TB) Update {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(WaitTimeout):
		t.Fatalf("no update within %v", WaitTimeout)
		return Update{}
	}
}

// Poll returns an update not yet taken with Next, if there is one, without
// waiting.
func (r *Recorder) Poll() (Update, bool) {
	select {
	case u := <-r.ch:
		return u, true
	default:
		return Update{}, false
	}
}

// Eventually polls cond until it holds or WaitTimeout passes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// MustRegister registers a variable or fails the test.
func MustRegister(t testing.TB, p StateProvider, name string, typ Type, v any, opts ...WriteOption) *Variable {
	t.Helper()
	vr, err := p.Register(context.Background(), name, typ, v, opts...)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return vr
}

// MustWatch starts a watch or fails the test.
func MustWatch(t testing.TB, p StateProvider, ctx context.Context, idents []string, w Watcher, opts ...WatchOption) WatchRef {
	t.Helper()
	ref, err := p.WatchVariables(ctx, idents, w, opts...)
	if err != nil {
		t.Fatalf("watch %v: %v", idents, err)
	}
	return ref
}

// WatchInfoOf is ref's entry in p.ListWatchers.
func WatchInfoOf(t testing.TB, p StateProvider, ref WatchRef) WatchInfo {
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
