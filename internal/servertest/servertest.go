// Package servertest starts the real varbridge gRPC server on loopback for
// tests in other packages.
package servertest

import (
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
)

// Server is a running test server.
type Server struct {
	Addr  string       // host:port on 127.0.0.1
	Store *store.Store // the server's store, for direct writes and counts
}

// Start serves a fresh store on 127.0.0.1:0 until the test ends.
func Start(tb testing.TB, storeOpts store.Options, opts ...server.Option) *Server {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	st := store.New(storeOpts)
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
