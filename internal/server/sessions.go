package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"

	"google.golang.org/grpc/codes"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ListSessions and the operator token.
//
// Listing sessions shows every session's id, and an id is half of what a
// client needs to reach a session, so with auth on (WithAuth) it is not
// open to session tokens: it needs the operator token the server was given
// (WithOperatorToken), sent as "authorization: Bearer <token>". Without auth
// and without an operator token it is open, as every other call is.

// WithOperatorToken sets the token that ListSessions requires. With it set,
// ListSessions requires it even without WithAuth.
func WithOperatorToken(token string) Option { return func(o *options) { o.operatorToken = token } }

// ListSessions implements BridgeService.
func (s *Server) ListSessions(ctx context.Context, req *pb.ListSessionsRequest) (*pb.ListSessionsResponse, error) {
	if err := s.authorizeOperator(ctx, "listing sessions"); err != nil {
		return nil, err
	}
	infos, err := s.st.ListSessions(req.GetPattern())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListSessionsResponse{Sessions: make([]*pb.Session, len(infos))}
	for i, info := range infos {
		resp.Sessions[i] = info.Proto()
	}
	return resp, nil
}

// authorizeOperator checks the call's bearer token against the operator
// token, in constant time (both are hashed first so that their lengths do
// not show either). what names the call for the refusal ("listing
// sessions").
func (s *Server) authorizeOperator(ctx context.Context, what string) error {
	op := s.opts.operatorToken
	if !s.opts.auth && op == "" {
		return nil
	}
	if op == "" {
		s.opts.metrics.AuthFailure(codes.PermissionDenied.String())
		return operatorError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_TOKEN_INVALID,
			what+" on a server with auth on needs an operator token, and this server was started without one (serve --operator-token)")
	}
	tok, err := bearer(ctx)
	if err != nil {
		s.opts.metrics.AuthFailure(codes.Unauthenticated.String())
		return operatorError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED,
			what+` needs the operator token: send "authorization: Bearer <operator token>" metadata`)
	}
	got, want := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(op))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		s.opts.metrics.AuthFailure(codes.PermissionDenied.String())
		return operatorError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_TOKEN_INVALID,
			"the authorization token is not the operator token, which "+what+" needs")
	}
	return nil
}

// operatorError is a refusal of an operator's call.
func operatorError(c codes.Code, r pb.ErrorReason, msg string) error {
	return statusError(c, r, msg, map[string]string{"method": "ListSessions"})
}
