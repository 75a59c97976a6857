package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

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

type tokenHash = [sha256.Size]byte

type authState struct {
	// create serializes InitializeSession, so a session's token is in place
	// before anyone else can try to join it, and pruning never races a
	// creation.
	create sync.Mutex

	mu     sync.RWMutex
	tokens map[string]tokenHash // session id -> SHA-256 of its token
}

func newToken() string {
	b := make([]byte, tokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it aborts the program instead)
	return "vbt_" + base64.RawURLEncoding.EncodeToString(b)
}

func (a *authState) lookup(id string) (tokenHash, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	h, ok := a.tokens[id]
	return h, ok
}

func (a *authState) set(id string, h tokenHash) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens == nil {
		a.tokens = map[string]tokenHash{}
	}
	a.tokens[id] = h
}

// forget drops id's token if it is still h (a session re-created meanwhile
// keeps its new token).
func (a *authState) forget(id string, h tokenHash) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur, ok := a.tokens[id]; ok && cur == h {
		delete(a.tokens, id)
	}
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

// authorize checks the call's token against the session's. It returns the
// verified token's hash (zero when the check was skipped).
func (s *Server) authorize(ctx context.Context, sessionID string) (tokenHash, error) {
	if sessionID == "" {
		return tokenHash{}, nil // the handler reports the missing session_id
	}
	tok, err := bearer(ctx)
	if err != nil {
		s.opts.metrics.AuthFailure(codes.Unauthenticated.String())
		return tokenHash{}, err
	}
	got := sha256.Sum256([]byte(tok))
	want, ok := s.auth.lookup(sessionID)
	_, serr := s.st.GetSession(sessionID)
	if serr != nil { // gone or never was: the handler says NOT_FOUND
		if ok {
			s.auth.forget(sessionID, want)
		}
		return tokenHash{}, nil
	}
	if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		s.opts.metrics.AuthFailure(codes.PermissionDenied.String())
		return tokenHash{}, statusError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_TOKEN_INVALID,
			fmt.Sprintf("the authorization token does not grant access to session %q", sessionID), map[string]string{"session_id": sessionID})
	}
	return got, nil
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
	h, err := s.authorize(ctx, sr.GetSessionId())
	if err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	if _, cleanup := req.(*pb.CleanupSessionRequest); cleanup && err == nil {
		s.auth.forget(sr.GetSessionId(), h)
	}
	return resp, err
}

// authInitialize creates a session and hands out its token, or lets a caller
// holding the token join an existing one.
func (s *Server) authInitialize(ctx context.Context, req *pb.InitializeSessionRequest, handler grpc.UnaryHandler) (any, error) {
	s.auth.create.Lock()
	defer s.auth.create.Unlock()
	id := req.GetSessionId()
	if id != "" {
		if _, err := s.st.GetSession(id); err == nil {
			if err := s.joinExisting(ctx, id); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}
	}
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, err
	}
	r, ok := resp.(*pb.InitializeSessionResponse)
	if !ok {
		return nil, status.Error(codes.Internal, "InitializeSession returned an unexpected message")
	}
	if !r.GetCreated() { // created outside this server between the two looks
		if err := s.joinExisting(ctx, r.GetSession().GetSessionId()); err != nil {
			return nil, err
		}
		return r, nil
	}
	tok := newToken()
	s.auth.set(r.GetSession().GetSessionId(), sha256.Sum256([]byte(tok)))
	r.SessionToken = tok
	s.pruneTokens()
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
	_, err := s.authorize(ctx, id)
	return err
}

// pruneTokens drops the tokens of sessions that no longer exist (expired
// ones) once they outnumber the live sessions. The caller holds auth.create.
func (s *Server) pruneTokens() {
	s.auth.mu.RLock()
	n := len(s.auth.tokens)
	s.auth.mu.RUnlock()
	if n < 1024 || n < 2*s.st.SessionCount() {
		return
	}
	s.auth.mu.Lock()
	ids := make([]string, 0, n)
	for id := range s.auth.tokens {
		ids = append(ids, id)
	}
	s.auth.mu.Unlock()
	for _, id := range ids {
		if _, err := s.st.GetSession(id); err != nil {
			if h, ok := s.auth.lookup(id); ok {
				s.auth.forget(id, h)
			}
		}
	}
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
		if _, err := a.s.authorize(a.Context(), sr.GetSessionId()); err != nil {
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
