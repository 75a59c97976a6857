package varbridge

// Cluster mode: with VARBRIDGE_TEST_CLUSTER=1 (make test-cluster), the
// tests that start a server through StartServer run on two in-process
// servers over one three-member etcd cluster, shared by the whole test
// binary, each test under a key prefix of its own. Their clients dial both
// servers, so calls and watches spread over the two, and the direct store
// is the second server's: a write made there reaches a watch on the first
// through etcd. The guarantees tested are then the cluster's.

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/varbridge/varbridge/internal/etcdtest"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

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
