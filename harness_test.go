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
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/etcdtest"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
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

// Cluster mode: with VARBRIDGE_TEST_CLUSTER=1 (make test-cluster), the
// tests that start a server through StartServer run on two in-process
// servers over one three-member etcd cluster, shared by the whole test
// binary, each test under a key prefix of its own. Their clients dial both
// servers, so calls and watches spread over the two, and the direct store
// is the second server's: a write made there reaches a watch on the first
// through etcd. The guarantees tested are then the cluster's.

// ClusterMode reports whether the tests run on a cluster.
var ClusterMode = os.Getenv("VARBRIDGE_TEST_CLUSTER") == "1"

// clusterServers and clusterMembers are the cluster mode's shape.
const (
	clusterServers = 2
	clusterMembers = 3
)

// sharedEtcd is the binary's etcd cluster in cluster mode, started by
// TestMain before any test and stopped after the last.
var sharedEtcd *etcdtest.Cluster

// prefixSeq numbers the tests' etcd prefixes, so that a test run twice
// (-count) starts on an empty prefix too.
var prefixSeq atomic.Int64

// clusterMain is the testing.M TestMain hands to goleak: in cluster mode
// it runs the tests between the etcd cluster's start and its stop, so that
// no goroutine of the cluster's counts as leaked.
type clusterMain struct{ m *testing.M }

func (c clusterMain) Run() int {
	if !ClusterMode {
		return c.m.Run()
	}
	// The tests keep nothing across a crash of the machine: no fsync.
	cl, stop, err := etcdtest.StartMain(clusterMembers, etcdtest.WithFlags("--unsafe-no-fsync"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster mode: starting etcd: %v\n", err)
		return 1
	}
	sharedEtcd = cl
	code := c.m.Run()
	if err := stop(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster mode: etcd: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// TestServer is what a test's clients dial and the store behind it.
type TestServer struct {
	Addr   string       // one address, or in cluster mode both ("A,B")
	Store  *store.Store // for direct writes: in cluster mode server B's
	stores []*store.Store
}

// Stores are every server's store: one, or in cluster mode both.
func (s *TestServer) Stores() []*store.Store { return s.stores }

// WatchCount is the number of watches on every server.
func (s *TestServer) WatchCount() int {
	n := 0
	for _, st := range s.stores {
		n += st.WatchCount()
	}
	return n
}

// StartServer starts what the test's clients dial: one in-process server
// on a memory store; in cluster mode two on the shared etcd cluster, under
// a prefix of the test's own.
func StartServer(t testing.TB, storeOpts store.Options, opts ...server.Option) *TestServer {
	t.Helper()
	if !ClusterMode {
		srv := servertest.Start(t, storeOpts, opts...)
		return &TestServer{Addr: srv.Addr, Store: srv.Store, stores: []*store.Store{srv.Store}}
	}
	prefix := fmt.Sprintf("/vbtest/%d/%s/", prefixSeq.Add(1), t.Name())
	c := servertest.StartCluster(t, clusterServers, sharedEtcd.Endpoints(), prefix, storeOpts, opts...)
	ts := &TestServer{Addr: c.Addr()}
	for _, s := range c.Servers {
		ts.stores = append(ts.stores, s.Store)
	}
	ts.Store = ts.stores[len(ts.stores)-1]
	return ts
}

// SkipInClusterMode skips a test that cannot apply to a cluster, saying why.
func SkipInClusterMode(t testing.TB, why string) {
	t.Helper()
	if ClusterMode {
		t.Skip("not in cluster mode: " + why)
	}
}

// Size is a test's size: full on one server; in cluster mode the shorter
// cluster one, since every write there is an etcd transaction agreed by
// three members, one after the other within a session (each is fenced on
// the one before), which on a small machine is a thousand times slower
// than a write to memory.
func Size(full, cluster int) int {
	if ClusterMode {
		return cluster
	}
	return full
}
