// Package servertest starts the real varbridge gRPC server on loopback for
// tests in other packages.
package servertest

import (
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
	return serve(tb, store.New(storeOpts), opts)
}
