package server

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Logging of calls. At debug level every call gets one line when it ends:
// method, session, code and duration. Values, metadata and tokens never go
// into a log line. Refused credentials are logged at warn level whatever the
// level, but at most once per logEvery per kind, with the count of those
// left out since, so a client retrying with a bad token cannot flood the
// log.

// logEvery is the least time between two rate-limited lines of one kind.
const logEvery = 10 * time.Second

// logState is the server's rate-limited log lines.
type logState struct {
	auth   rateLimit
	expiry rateLimit
	drain  sync.Once
}

// rateLimit lets one line through per logEvery and counts the rest.
type rateLimit struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one.
func (r *rateLimit) allow(now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.next) {
		r.suppressed++
		return false, 0
	}
	n := r.suppressed
	r.suppressed = 0
	r.next = now.Add(logEvery)
	return true, n
}

// shortMethod is "BridgeService/GetVariable" for "/varbridge.v1.BridgeService/GetVariable".
func shortMethod(full string) string {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		if j := strings.LastIndex(full[:i], "."); j >= 0 {
			return full[j+1:]
		}
	}
	return full
}

// logCall writes a call's debug line and, for refused credentials, the
// rate-limited warning.
func (s *Server) logCall(ctx context.Context, method, session string, err error, start time.Time) {
	log := s.opts.log
	code := status.Code(err)
	if log.Enabled(ctx, slog.LevelDebug) {
		log.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("method", shortMethod(method)),
			slog.String("session", session), slog.String("code", code.String()),
			slog.Duration("duration", time.Since(start)))
	}
	if !isBridge(method) {
		return
	}
	refused := code == codes.Unauthenticated || code == codes.PermissionDenied ||
		// Only auth refuses InitializeSession with AlreadyExists.
		(code == codes.AlreadyExists && method == pb.BridgeService_InitializeSession_FullMethodName)
	if !refused {
		return
	}
	ok, suppressed := s.logs.auth.allow(time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", shortMethod(method)), slog.String("session", session), slog.String("code", code.String()),
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer", p.Addr.String()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed_since_last", suppressed))
	}
	log.LogAttrs(ctx, slog.LevelWarn, "auth refused a call", attrs...)
}

func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	session := ""
	if sr, ok := req.(sessionScoped); ok {
		session = sr.GetSessionId()
	}
	s.logCall(ctx, info.FullMethod, session, err, start)
	return resp, err
}

func (s *Server) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	ls := &loggedStream{ServerStream: ss}
	err := handler(srv, ls)
	s.logCall(ss.Context(), info.FullMethod, ls.session, err, start)
	return err
}

// loggedStream remembers the session its first request names.
type loggedStream struct {
	grpc.ServerStream
	session string
	seen    bool
}

func (l *loggedStream) RecvMsg(m any) error {
	err := l.ServerStream.RecvMsg(m)
	if err == nil && !l.seen {
		l.seen = true
		if sr, ok := m.(sessionScoped); ok {
			l.session = sr.GetSessionId()
		}
	}
	return err
}

// LogSessionsExpired logs, at most once per 10 s (with the count of those
// left out), that sessions expired: pass it to the store as
// store.Options.OnExpire. Expiry ends the session's watches, so an operator
// looking into a client's NotFound finds why here.
func (s *Server) LogSessionsExpired(ids []string) {
	if len(ids) == 0 {
		return
	}
	ok, suppressed := s.logs.expiry.allow(time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.Int("count", len(ids)), slog.String("first", ids[0])}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("sweeps_suppressed_since_last", suppressed))
	}
	s.opts.log.LogAttrs(context.Background(), slog.LevelInfo, "sessions expired", attrs...)
}

// Drain marks the server NOT_SERVING in its health service (for the whole
// server and for BridgeService), so that health-checking load balancers and
// clients stop sending it new work before it stops. Call it first when
// shutting down, then GracefulStop.
func (s *Server) Drain() {
	s.logs.drain.Do(func() {
		if s.health != nil {
			s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			s.health.SetServingStatus(pb.BridgeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	})
}
