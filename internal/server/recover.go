package server

import (
	"context"
	"fmt"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The recovery interceptors are the last line of defence: a handler that
// panics fails its call with INTERNAL, is logged with its stack and counted
// in metrics, and the server goes on. No input is meant to get here; the
// fuzz tests look for any that does.

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.panicked(info.FullMethod, r)
		}
	}()
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = s.panicked(info.FullMethod, r)
		}
	}()
	return handler(srv, ss)
}

// PanicMessage starts the message of the INTERNAL status a recovered panic
// returns.
const PanicMessage = "internal error: the server recovered from a panic"

func (s *Server) panicked(method string, r any) error {
	s.opts.log.Error("panic in handler; the call fails with INTERNAL", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	s.opts.metrics.Panic()
	return status.Errorf(codes.Internal, "%s in %s; see the server log", PanicMessage, method)
}
