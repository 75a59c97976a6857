// Package httpapi is varbridge's HTTP face, beside the gRPC port: the
// BridgeService through connect-go (the Connect protocol with JSON or binary
// bodies, gRPC-Web and gRPC, so that curl and browsers can call it) and
// watches as Server-Sent Events (sse.go). It is an adapter only: every call
// goes through internal/server (Server.Unary, Server.Watch), which owns
// auth, request limits, the watch and the error details; this package
// translates credentials in and gRPC statuses out.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// Options configure Handler.
type Options struct {
	// CORSOrigins are the origins (scheme://host[:port], or "*" for any)
	// whose pages may call the API and open watches; none: CORS is off and
	// browsers allow only pages served from this origin (the dashboard).
	CORSOrigins []string
	// Root serves every path the API does not ("/", the dashboard); nil
	// answers 404.
	Root http.Handler
}

// WatchPath is the pattern of the Server-Sent Events watch.
const WatchPath = "/v1/sessions/{session}/watch"

// Handler returns the HTTP face of srv: the BridgeService at
// /varbridge.v1.BridgeService/<Method>, the SSE watch at WatchPath, and
// opts.Root below "/".
func Handler(srv *server.Server, opts Options) http.Handler {
	mux := http.NewServeMux()
	path, bridge := varbridgev1connect.NewBridgeServiceHandler(&bridgeService{s: srv},
		connect.WithReadMaxBytes(srv.MaxRequestBytes()))
	cors := newCORS(opts.CORSOrigins)
	mux.Handle(path, cors.wrap(bridge))
	mux.Handle("GET "+WatchPath, cors.wrap(&sseHandler{s: srv}))
	if cors.on() { // preflights of the watch (a GET with an Authorization header)
		mux.Handle("OPTIONS "+WatchPath, cors.wrap(http.NotFoundHandler()))
	}
	root := opts.Root
	if root == nil {
		root = http.NotFoundHandler()
	}
	mux.Handle("/", root)
	return mux
}

// NewServer returns an http.Server for h that speaks HTTP/1.1 and HTTP/2
// without TLS (h2c, which gRPC clients need) as well as over TLS. When it
// shuts down, the contexts of its requests end at once, so that open
// watches, which never finish by themselves, end and let Shutdown complete;
// their clients resume elsewhere or when the server is back.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	ctx, cancel := context.WithCancel(context.Background())
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetHTTP2(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	hs.RegisterOnShutdown(cancel)
	return hs
}

// connectError is a gRPC status error from the server as a Connect error:
// the same code, message and details (ErrorInfo first, then BadRequest,
// QuotaFailure or ResourceInfo), which the Connect protocol renders in its
// JSON error body and gRPC in grpc-status-details-bin.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	out := connect.NewError(connect.Code(st.Code()), errors.New(st.Message()))
	for _, d := range st.Proto().GetDetails() {
		if ed, err := connect.NewErrorDetail(d); err == nil {
			out.AddDetail(ed)
		}
	}
	return out
}

// credentials are what an HTTP request presents: its authorization header
// (or, for the SSE watch, the token query parameter) and its peer.
func credentials(authorization []string, remoteAddr string) server.Credentials {
	c := server.Credentials{Authorization: authorization}
	if remoteAddr != "" {
		c.Peer = peerAddr(remoteAddr)
	}
	return c
}

// peerAddr is a client's address as net/http and connect-go report it.
type peerAddr string

func (peerAddr) Network() string  { return "tcp" }
func (a peerAddr) String() string { return string(a) }
