package server

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/feed"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Calls from other transports (internal/httpapi serves the BridgeService
// over HTTP with connect-go, and watches as Server-Sent Events). They go
// through the very interceptors the gRPC server chains (logging, panic
// recovery, auth, request limits) and the same handlers, so a rule has one
// home whatever the transport: an adapter only translates credentials in and
// status errors out.

// Credentials are what a call presents besides its request message.
type Credentials struct {
	// Authorization holds the values of the call's authorization header
	// ("Bearer <token>"); auth judges them as it judges gRPC metadata.
	Authorization []string
	// Peer is the caller's address, for the refused-credentials log line.
	Peer net.Addr
}

// Incoming returns ctx as a gRPC handler sees it: the credentials as
// incoming metadata and the peer.
func (c Credentials) Incoming(ctx context.Context) context.Context {
	if len(c.Authorization) > 0 {
		ctx = metadata.NewIncomingContext(ctx, metadata.MD{AuthHeader: c.Authorization})
	}
	if c.Peer != nil {
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: c.Peer})
	}
	return ctx
}

// unaryInterceptors are the interceptors of every unary call, in order,
// whatever its transport (the gRPC server puts its metrics first).
func (s *Server) unaryInterceptors() []grpc.UnaryServerInterceptor {
	in := []grpc.UnaryServerInterceptor{s.logUnary, s.recoverUnary} // logging.go, recover.go
	if s.opts.auth {
		in = append(in, s.authUnary)
	}
	return append(in, s.limitsUnary)
}

// streamInterceptors are unaryInterceptors' counterparts for streams.
func (s *Server) streamInterceptors() []grpc.StreamServerInterceptor {
	in := []grpc.StreamServerInterceptor{s.logStream, s.recoverStream}
	if s.opts.auth {
		in = append(in, s.authStream)
	}
	return append(in, s.limitsStream)
}

// Handler is one BridgeService unary method, as Server implements it
// (s.SetVariable, say) with its request type erased.
type Handler func(ctx context.Context, req any) (any, error)

// Unary runs a unary BridgeService call that arrived by another transport:
// method is its full name ("/varbridge.v1.BridgeService/SetVariable") and
// call the Server's method for it. It fails with a gRPC status error, whose
// code and details the adapter carries over to its own protocol.
func (s *Server) Unary(ctx context.Context, method string, cred Credentials, req any, call Handler) (any, error) {
	info := &grpc.UnaryServerInfo{Server: s, FullMethod: method}
	return chainUnary(s.unaryInterceptors(), info, grpc.UnaryHandler(call))(cred.Incoming(ctx), req)
}

func chainUnary(in []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) grpc.UnaryHandler {
	for i := len(in) - 1; i >= 0; i-- {
		next, icpt := h, in[i]
		h = func(ctx context.Context, req any) (any, error) { return icpt(ctx, req, info, next) }
	}
	return h
}

// ServeWatch runs a WatchVariables (or WatchVariableBatches, named by method)
// that arrived by another transport: the same interceptors as a gRPC
// stream, then the same watch. header gets the response header as soon as
// the watch is registered (RevisionHeader and IncarnationHeader); send gets
// every batch of ready updates, as feed.Send documents. Watch returns when
// ctx ends, the session ends or send fails, with a gRPC status error.
func (s *Server) ServeWatch(ctx context.Context, method string, cred Credentials, req *pb.WatchVariablesRequest,
	header func(metadata.MD) error, send feed.Send) error {
	ss := &adapterStream{ctx: cred.Incoming(ctx), req: req, header: header}
	h := func(_ any, stream grpc.ServerStream) error {
		if err := stream.RecvMsg(req); err != nil {
			return err
		}
		return s.watch(req, stream, send)
	}
	info := &grpc.StreamServerInfo{FullMethod: method, IsServerStream: true}
	return chainStream(s.streamInterceptors(), info, h)(s, ss)
}

// chainStream wraps h in the interceptors, the first outermost, as grpc-go
// chains a server's stream interceptors.
func chainStream(in []grpc.StreamServerInterceptor, info *grpc.StreamServerInfo, h grpc.StreamHandler) grpc.StreamHandler {
	for i := len(in) - 1; i >= 0; i-- {
		next, icpt := h, in[i]
		h = func(srv any, stream grpc.ServerStream) error { return icpt(srv, stream, info, next) }
	}
	return h
}

// adapterStream is the grpc.ServerStream the stream interceptors and watch
// see for a watch from another transport: it hands over the request it was
// made with and passes the header on; updates go to the watch's send.
type adapterStream struct {
	ctx    context.Context
	req    *pb.WatchVariablesRequest
	header func(metadata.MD) error
	read   bool
}

func (a *adapterStream) Context() context.Context { return a.ctx }

func (a *adapterStream) RecvMsg(m any) error {
	if a.read || m != any(a.req) {
		return status.Error(codes.Internal, "adapter stream: one request, received once")
	}
	a.read = true
	return nil
}

func (a *adapterStream) SendHeader(md metadata.MD) error { return a.header(md) }
func (a *adapterStream) SetHeader(metadata.MD) error     { return nil }
func (a *adapterStream) SetTrailer(metadata.MD)          {}
func (a *adapterStream) SendMsg(any) error {
	return errors.New("adapter stream: updates go through the watch's send")
}

// StatusOf is the status error the server answers err with: a store error
// (store.FieldError, say) becomes its code with the ErrorInfo and the
// standard detail it carries on every transport.
func StatusOf(err error) error { return toStatus(err) }

// MaxRequestBytes is the largest request message the server accepts
// (RequestLimits.MaxRecvMsgBytes), for transports that read the body
// themselves.
func (s *Server) MaxRequestBytes() int { return s.opts.limits.MaxRecvMsgBytes }

// Log is the server's logger.
func (s *Server) Log() *slog.Logger { return s.opts.log }

// ServeWatchStream runs a multiplexed Watch stream that arrived by another
// transport: the same interceptors as a gRPC stream, then the same stream
// owner. recv reads the next request into its argument (a
// *pb.WatchRequest; io.EOF when the client closed its side) and send writes
// a *pb.WatchResponse. It returns when the stream ends, with a gRPC status
// error.
func (s *Server) ServeWatchStream(ctx context.Context, method string, cred Credentials, recv, send func(any) error) error {
	ss := &bidiAdapter{ctx: cred.Incoming(ctx), recv: recv, send: send}
	h := func(_ any, stream grpc.ServerStream) error { return s.serveMux(stream) }
	info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
	return chainStream(s.streamInterceptors(), info, h)(s, ss)
}

// bidiAdapter is the grpc.ServerStream of a multiplexed watch stream from
// another transport: messages go both ways through the transport's own
// stream; headers are not used (each watch's start travels in its created
// response).
type bidiAdapter struct {
	ctx  context.Context
	recv func(any) error
	send func(any) error
}

func (b *bidiAdapter) Context() context.Context     { return b.ctx }
func (b *bidiAdapter) RecvMsg(m any) error          { return b.recv(m) }
func (b *bidiAdapter) SendMsg(m any) error          { return b.send(m) }
func (b *bidiAdapter) SendHeader(metadata.MD) error { return nil }
func (b *bidiAdapter) SetHeader(metadata.MD) error  { return nil }
func (b *bidiAdapter) SetTrailer(metadata.MD)       {}
