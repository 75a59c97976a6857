package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/etcd"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
)

// Cluster is n varbridge servers sharing one truth: each store is on the
// etcd engine, over the same etcd endpoints and key prefix, so a write
// through one server reaches watchers on every other.
type Cluster struct {
	Servers []*Server
}

// Addr is every server's address, comma-separated: the server list the
// clients take (NewBridgedState, varbridge.connect, --addr).
func (c *Cluster) Addr() string {
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = s.Addr
	}
	return strings.Join(addrs, ",")
}

// StartCluster serves n stores on 127.0.0.1:0, each on its own etcd engine
// on endpoints under prefix, until the test ends. Give each test a prefix
// of its own: tests on one etcd cluster then never see each other's
// sessions.
func StartCluster(tb testing.TB, n int, endpoints []string, prefix string, storeOpts store.Options, opts ...server.Option) *Cluster {
	tb.Helper()
	c := &Cluster{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		eng, err := etcd.Open(ctx, etcd.Options{Endpoints: endpoints, Prefix: prefix})
		cancel()
		if err != nil {
			tb.Fatalf("etcd engine on %v: %v", endpoints, err)
		}
		so := storeOpts
		so.Engine = eng
		st, _, err := store.Open(so)
		if err != nil {
			_ = eng.Close()
			tb.Fatalf("store on etcd: %v", err)
		}
		c.Servers = append(c.Servers, serve(tb, st, opts))
	}
	return c
}

// serve serves st on 127.0.0.1:0 until the test ends, then closes it.
func serve(tb testing.TB, st *store.Store, opts []server.Option) *Server {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		tb.Fatalf("listen: %v", err)
	}
	opts = append([]server.Option{server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)
	g := server.New(st, opts...).GRPCServer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis) // returns when Stop runs below
	}()
	tb.Cleanup(func() {
		g.Stop()
		<-done
		st.Close()
	})
	return &Server{Addr: lis.Addr().String(), Store: st}
}
