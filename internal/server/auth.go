package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Session auth (WithAuth).
//
// InitializeSession that creates a session returns a fresh session_token
// (256 random bits). Every later call on that session must carry
// "authorization: Bearer <token>" metadata:
//
//   - no authorization metadata, or not in the Bearer form: UNAUTHENTICATED;
//   - a token that is not the session's (another session's, a stale one):
//     PERMISSION_DENIED;
//   - InitializeSession naming a session that already exists joins it only
//     with its token: without one ALREADY_EXISTS (the id is taken), with a
//     wrong one PERMISSION_DENIED, with the right one the session is returned
//     (created = false) and no token is sent again.
//
// A request naming a session that does not exist passes auth when it
// carries a token, so that a client whose session is gone (expired, cleaned
// up, server restarted) gets a clear NOT_FOUND rather than a refusal.
// Requests with an empty session_id pass auth too; the handler rejects them.
//
// Only the SHA-256 of each token is kept, compared in constant time; tokens
// are never logged. Health and reflection need no token.

// AuthHeader is the metadata key that carries "Bearer <session_token>".
const AuthHeader = "authorization"

// tokenBytes is the entropy of a session token.
const tokenBytes = 32

// WithAuth makes every call on a session require the session's token.
func WithAuth() Option { return func(o *options) { o.auth = true } }

// sessionScoped is what every session-scoped request message implements.
type sessionScoped interface{ GetSessionId() string }

// newTokenKey carries the hash of the token InitializeSession gives a
// session it creates, from the auth interceptor to the handler, which
// creates the session with it (the store keeps it, on disk too).
type newTokenKey struct{}

func newToken() string {
	b := make([]byte, tokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it aborts the program instead)
	return "vbt_" + base64.RawURLEncoding.EncodeToString(b)
}

// bearer returns the token in the call's authorization metadata.
func bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, AuthHeader)
	switch len(vals) {
	case 0:
		return "", statusError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED, `this server requires auth: send "authorization: Bearer <session_token>" metadata with the token InitializeSession returned`, nil)
	case 1:
	default:
		return "", statusError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED, fmt.Sprintf("authorization metadata given %d times; send it once", len(vals)), nil)
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", statusError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED, `authorization metadata must have the form "Bearer <session_token>"`, nil)
	}
	return tok, nil
}

// isBridge reports whether a method belongs to BridgeService (health and
// reflection are open).
func isBridge(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+pb.BridgeService_ServiceDesc.ServiceName+"/")
}

// authorize checks the call's token against the session's.
func (s *Server) authorize(ctx context.Context, sessionID string) error {
	if sessionID == "" {
		return nil // the handler reports the missing session_id
	}
	tok, err := bearer(ctx)
	if err != nil {
		s.opts.metrics.AuthFailure(codes.Unauthenticated.String())
		return err
	}
	want, ok := s.st.TokenHash(sessionID)
	if !ok { // gone or never was: the handler says NOT_FOUND
		return nil
	}
	got := sha256.Sum256([]byte(tok))
	if len(want) != len(got) || subtle.ConstantTimeCompare(got[:], want) != 1 {
		s.opts.metrics.AuthFailure(codes.PermissionDenied.String())
		return statusError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_TOKEN_INVALID,
			fmt.Sprintf("the authorization token does not grant access to session %q", sessionID), map[string]string{"session_id": sessionID})
	}
	return nil
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !isBridge(info.FullMethod) {
		return handler(ctx, req)
	}
	if r, ok := req.(*pb.InitializeSessionRequest); ok {
		return s.authInitialize(ctx, r, handler)
	}
	sr, ok := req.(sessionScoped)
	if !ok {
		return handler(ctx, req)
	}
	if err := s.authorize(ctx, sr.GetSessionId()); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// authInitialize creates a session and hands out its token, or lets a caller
// holding the token join an existing one.
func (s *Server) authInitialize(ctx context.Context, req *pb.InitializeSessionRequest, handler grpc.UnaryHandler) (any, error) {
	id := req.GetSessionId()
	if id != "" {
		if _, err := s.st.GetSession(id); err == nil {
			if err := s.joinExisting(ctx, id); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}
	}
	tok := newToken()
	h := sha256.Sum256([]byte(tok))
	resp, err := handler(context.WithValue(ctx, newTokenKey{}, h[:]), req)
	if err != nil {
		return nil, err
	}
	r, ok := resp.(*pb.InitializeSessionResponse)
	if !ok {
		return nil, status.Error(codes.Internal, "InitializeSession returned an unexpected message")
	}
	if !r.GetCreated() { // created by someone else between the two looks
		if err := s.joinExisting(ctx, r.GetSession().GetSessionId()); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.SessionToken = tok
	return r, nil
}

// joinExisting checks the token of a caller initializing an existing session.
func (s *Server) joinExisting(ctx context.Context, id string) error {
	if len(metadata.ValueFromIncomingContext(ctx, AuthHeader)) == 0 {
		s.opts.metrics.AuthFailure(codes.AlreadyExists.String())
		return statusError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED,
			fmt.Sprintf(`session %q already exists and this server requires auth: to join it, send its session_token as "authorization: Bearer <session_token>" metadata`, id),
			map[string]string{"session_id": id})
	}
	return s.authorize(ctx, id)
}

// authStream checks the session of a stream's first request message.
type authStream struct {
	grpc.ServerStream
	s       *Server
	checked bool
}

func (a *authStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if a.checked {
		return nil
	}
	a.checked = true
	if sr, ok := m.(sessionScoped); ok {
		if err := a.s.authorize(a.Context(), sr.GetSessionId()); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isBridge(info.FullMethod) {
		return handler(srv, ss)
	}
	return handler(srv, &authStream{ServerStream: ss, s: s})
}
