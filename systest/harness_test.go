package systest

// The harness the system suites share. Everything here reaches varbridge as
// a user would, through its exported API, plus the module's test servers
// (internal/servertest, internal/server options), its fault proxy
// (internal/cutproxy) and the server's metrics.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/local"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait on a channel or a condition in these tests.
const waitTimeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var sessionSeq atomic.Int64

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// env is a provider under test plus a way to write to its session from
// outside the provider where there is one: the store of the server a
// BridgedState talks to. A local.State's store is its own, so for it the
// writes go through the local.State, which runs the same store.Set.
type env struct {
	name string
	p    varbridge.StateProvider
	srv  *servertest.Server // nil for a local.State
}

// set writes one variable: through the server's store (BridgedState), or
// through the local.State.
func (e env) set(t testing.TB, ident string, v any, md map[string]string) int64 {
	t.Helper()
	if e.srv == nil {
		vr, err := e.p.Set(context.Background(), ident, v, varbridge.WithMetadata(md))
		if err != nil {
			t.Fatalf("set %s=%v: %v", ident, v, err)
		}
		return vr.Revision
	}
	val, err := varbridge.ToProto("", v)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.srv.Store.Set(e.p.SessionID(), []store.Write{{Identifier: ident, Value: val}}, md, "")
	if err != nil {
		t.Fatalf("store set %s=%v: %v", ident, v, err)
	}
	return res.Revision
}

func newLocalEnv(t testing.TB, opts ...varbridge.Option) env {
	t.Helper()
	l := newLocal(t, opts...)
	return env{name: "local", p: l}
}

// newLocal is a local.State on a private store, closed when the test ends.
func newLocal(t testing.TB, opts ...varbridge.Option) *local.State {
	t.Helper()
	opts = append([]varbridge.Option{varbridge.WithSessionID(fmt.Sprintf("local-%d", sessionSeq.Add(1))), varbridge.WithLogger(quiet)}, opts...)
	l, err := local.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// localObservers is the number of observers in a local.State's session (its
// private store holds no other session), from Heartbeat.
func localObservers(t testing.TB, l *local.State) int {
	t.Helper()
	info, err := l.Heartbeat(context.Background())
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	return int(info.WatchCount)
}

func newBridgedEnv(t testing.TB, storeOpts store.Options, opts ...varbridge.Option) (env, *servertest.Server) {
	t.Helper()
	srv := servertest.Start(t, storeOpts)
	b := dialBridged(t, srv.Addr, opts...)
	return env{name: "bridged", p: b, srv: srv}, srv
}

func dialBridged(t testing.TB, addr string, opts ...varbridge.Option) *varbridge.BridgedState {
	t.Helper()
	opts = append([]varbridge.Option{varbridge.WithSessionID(fmt.Sprintf("bridged-%d", sessionSeq.Add(1))), varbridge.WithLogger(quiet)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := varbridge.NewBridgedState(ctx, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// both runs f against a local.State and a BridgedState.
func both(t *testing.T, f func(t *testing.T, e env)) {
	t.Run("local", func(t *testing.T) { f(t, newLocalEnv(t)) })
	t.Run("bridged", func(t *testing.T) {
		e, _ := newBridgedEnv(t, store.Options{})
		f(t, e)
	})
}

// fastRedial makes grpc-go retry a failed connect within milliseconds
// rather than its default of 1 s and more, so that tests that cut
// connections all the time do not wait on it.
var fastRedial = varbridge.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           grpcbackoff.Config{BaseDelay: 2 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 50 * time.Millisecond},
	MinConnectTimeout: 2 * time.Second,
}))

// newProxy is a fault proxy in front of target, closed when the test ends.
func newProxy(t testing.TB, target string) *cutproxy.Proxy {
	t.Helper()
	p, err := cutproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// recorder is a Watcher that records updates and signals each on a channel.
type recorder struct {
	mu  sync.Mutex
	all []varbridge.Update
	ch  chan varbridge.Update
}

func newRecorder() *recorder { return &recorder{ch: make(chan varbridge.Update, 100_000)} }

func (r *recorder) watch(id string, old, new any, meta varbridge.UpdateMeta) {
	u := varbridge.Update{Identifier: id, Old: old, New: new, Meta: meta}
	r.mu.Lock()
	r.all = append(r.all, u)
	r.mu.Unlock()
	r.ch <- u
}

// next waits for the next update.
func (r *recorder) next(t testing.TB) varbridge.Update {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(waitTimeout):
		t.Fatalf("no update within %v", waitTimeout)
		return varbridge.Update{}
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

func mustRegister(t testing.TB, p varbridge.StateProvider, name string, typ varbridge.Type, v any, opts ...varbridge.WriteOption) *varbridge.Variable {
	t.Helper()
	vr, err := p.Register(context.Background(), name, typ, v, opts...)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return vr
}

func mustWatch(t testing.TB, p varbridge.StateProvider, ctx context.Context, idents []string, w varbridge.Watcher, opts ...varbridge.WatchOption) varbridge.WatchRef {
	t.Helper()
	ref, err := p.WatchVariables(ctx, idents, w, opts...)
	if err != nil {
		t.Fatalf("watch %v: %v", idents, err)
	}
	return ref
}

func watchInfo(t testing.TB, p varbridge.StateProvider, ref varbridge.WatchRef) varbridge.WatchInfo {
	t.Helper()
	for _, wi := range p.ListWatchers() {
		if wi.Ref == ref {
			return wi
		}
	}
	t.Fatalf("watch %v not listed", ref)
	return varbridge.WatchInfo{}
}

// gatherValue sums the samples of a metric in m's registry (-1: absent).
func gatherValue(t testing.TB, m *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, s := range mf.GetMetric() {
			sum += sampleValue(s)
		}
		return sum
	}
	return -1
}

func sampleValue(s *dto.Metric) float64 {
	switch {
	case s.GetGauge() != nil:
		return s.GetGauge().GetValue()
	case s.GetCounter() != nil:
		return s.GetCounter().GetValue()
	}
	return 0
}

// --- goroutines and memory, for the leak and slow-consumer tests -----------

// settleGoroutines waits until runtime.NumGoroutine() is at most want,
// within limit, and returns the count it saw last.
func settleGoroutines(want int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	n := runtime.NumGoroutine()
	for n > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// stableGoroutines returns the goroutine count once it has not changed for
// a while (grpc and the runtime start and stop a few in the background).
func stableGoroutines() int {
	last, same := -1, 0
	for i := 0; i < 500 && same < 20; i++ {
		n := runtime.NumGoroutine()
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	return last
}

// heapInUse returns the live heap after two collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// goroutineDump lists the stacks of the goroutines running now, for a
// failure message.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	stacks := strings.Split(string(buf), "\n\n")
	sort.Strings(stacks)
	return strings.Join(slices.Compact(stacks), "\n\n")
}
