// Package server implements varbridge.v1.BridgeService over a store.Store.
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/codec"
	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// RevisionHeader is the response header a watch sends as soon as its
// observer is registered: the session revision it starts after. A client
// that waits for it knows every later write will reach the watch.
const RevisionHeader = "varbridge-watch-revision"

// IncarnationHeader is the response header that carries the watched
// session's incarnation, sent with RevisionHeader: a client resumes with it
// (WatchVariablesRequest.incarnation) so that a session created again under
// the same id is never mistaken for the one it watched.
const IncarnationHeader = "varbridge-watch-incarnation"

// Server is the BridgeService. Create it with New.
type Server struct {
	pb.UnimplementedBridgeServiceServer
	st     *store.Store
	opts   options
	logs   logState       // rate-limited log lines, see logging.go
	health *health.Server // set by GRPCServer; Drain marks it NOT_SERVING
}

type options struct {
	log       *slog.Logger
	keepalive keepalive.ServerParameters
	grpcOpts  []grpc.ServerOption
	auth      bool             // WithAuth, see auth.go
	metrics   *metrics.Metrics // WithMetrics; nil records nothing
	limits    RequestLimits    // WithRequestLimits, see limits.go
	// WithOperatorToken, see sessions.go
	operatorToken string
	snapshot      func(io.Writer) error // WithSnapshots, see snapshot.go
	noSnapshot    string                // WithoutSnapshots
}

// Option configures a Server.
type Option func(*options)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithKeepalive sets how often the server pings an idle client and how long
// it waits for the answer before dropping the connection and its watches.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) { o.keepalive.Time, o.keepalive.Timeout = interval, timeout }
}

// WithGRPCOptions adds grpc.ServerOptions (credentials, interceptors).
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.grpcOpts = append(o.grpcOpts, opts...) }
}

// WithMetrics records the server's metrics in m: gRPC calls and codes, open
// sessions and watches of its store, deliveries, resyncs, closed watches,
// filter errors and recovered panics.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// New returns a Server over st.
func New(st *store.Store, opts ...Option) *Server {
	o := options{log: slog.Default(), keepalive: keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}}
	for _, opt := range opts {
		opt(&o)
	}
	o.limits.withDefaults()
	if err := o.metrics.ObserveStore(st); err != nil {
		o.log.Warn("metrics already observe another store; session and watch gauges show that one", "err", err)
	}
	return &Server{st: st, opts: o}
}

// ClientPingInterval is the most frequent keepalive ping the server accepts
// from clients; clients must not ping more often, or they get GOAWAY.
const ClientPingInterval = 10 * time.Second

// GRPCServer returns a grpc.Server serving BridgeService, health and
// reflection, with keepalive set deliberately on the server side. Its
// interceptors run in this order: metrics (which see every final code),
// call logging (logging.go), panic recovery, auth (WithAuth), request limits.
func (s *Server) GRPCServer() *grpc.Server {
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if s.opts.metrics != nil {
		u, st := s.opts.metrics.ServerOptions()
		unary, stream = append(unary, u), append(stream, st)
	}
	// The rest is shared with the other transports (adapter.go).
	unary, stream = append(unary, s.unaryInterceptors()...), append(stream, s.streamInterceptors()...)
	opts := append([]grpc.ServerOption{
		grpc.KeepaliveParams(s.opts.keepalive),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: ClientPingInterval, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(s.opts.limits.MaxRecvMsgBytes),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Reused handler goroutines keep their grown stacks: without them
		// every unary call starts a fresh goroutine and grows its stack again
		// (5% of the write path's CPU in the profile).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		// Generated marshalling for what the server sends; requests are
		// still decoded (and checked) by protobuf-go.
		grpc.ForceServerCodecV2(codec.Server),
	}, s.opts.grpcOpts...)
	g := grpc.NewServer(opts...)
	pb.RegisterBridgeServiceServer(g, s)
	hs := health.NewServer()
	s.health = hs
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.BridgeService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	s.opts.metrics.InitializeGRPC(g)
	return g
}

// InitializeSession implements BridgeService.
func (s *Server) InitializeSession(ctx context.Context, req *pb.InitializeSessionRequest) (*pb.InitializeSessionResponse, error) {
	tokenHash, _ := ctx.Value(newTokenKey{}).([]byte) // set by the auth interceptor
	info, created, err := s.st.CreateSessionWithToken(req.GetSessionId(), req.GetTtl().AsDuration(), req.GetMetadata(), tokenHash)
	if err != nil {
		return nil, toStatus(err)
	}
	if created {
		s.opts.log.Info("session created", "session", info.ID, "ttl", info.TTL)
	}
	return &pb.InitializeSessionResponse{Session: info.Proto(), Created: created}, nil
}

// GetSession implements BridgeService.
func (s *Server) GetSession(_ context.Context, req *pb.GetSessionRequest) (*pb.GetSessionResponse, error) {
	info, err := s.st.GetSession(req.GetSessionId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetSessionResponse{Session: info.Proto()}, nil
}

// Heartbeat implements BridgeService.
func (s *Server) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	info, err := s.st.Heartbeat(req.GetSessionId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.HeartbeatResponse{Session: info.Proto()}, nil
}

// CleanupSession implements BridgeService.
func (s *Server) CleanupSession(_ context.Context, req *pb.CleanupSessionRequest) (*pb.CleanupSessionResponse, error) {
	n, err := s.st.CleanupSession(req.GetSessionId())
	if err != nil {
		return nil, toStatus(err)
	}
	s.opts.log.Info("session cleaned up", "session", req.GetSessionId(), "variables", n)
	return &pb.CleanupSessionResponse{VariablesRemoved: int64(n)}, nil
}

// RegisterVariable implements BridgeService.
func (s *Server) RegisterVariable(_ context.Context, req *pb.RegisterVariableRequest) (*pb.RegisterVariableResponse, error) {
	v, rev, err := s.st.Register(req.GetSessionId(), store.Register{
		Name: req.GetName(), Type: req.GetType(), Value: req.GetInitialValue(), Constraints: req.GetConstraints(),
		Metadata: req.GetMetadata(), Source: req.GetSource(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.RegisterVariableResponse{Variable: v, Revision: rev}, nil
}

// GetVariable implements BridgeService.
func (s *Server) GetVariable(_ context.Context, req *pb.GetVariableRequest) (*pb.GetVariableResponse, error) {
	v, rev, err := s.st.Get(req.GetSessionId(), req.GetVariableIdentifier())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetVariableResponse{Variable: v, Revision: rev}, nil
}

// GetVariables implements BridgeService.
func (s *Server) GetVariables(_ context.Context, req *pb.GetVariablesRequest) (*pb.GetVariablesResponse, error) {
	found, missing, rev, err := s.st.GetMany(req.GetSessionId(), req.GetVariableIdentifiers())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetVariablesResponse{Variables: found, Missing: missing, Revision: rev}, nil
}

// SetVariable implements BridgeService.
func (s *Server) SetVariable(ctx context.Context, req *pb.SetVariableRequest) (*pb.SetVariableResponse, error) {
	res, err := s.set(ctx, req.GetSessionId(), []store.Write{{
		Identifier: req.GetVariableIdentifier(), Value: req.GetValue(), ExpectedVersion: req.ExpectedVersion,
	}}, req.GetMetadata(), req.GetSource())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SetVariableResponse{
		Variable: res.Variables[0], Revision: res.Revision, Changed: len(res.Changed) > 0,
	}, nil
}

// SetVariables implements BridgeService.
func (s *Server) SetVariables(ctx context.Context, req *pb.SetVariablesRequest) (*pb.SetVariablesResponse, error) {
	writes, err := store.BatchWrites(req.GetUpdates(), req.GetExpectedVersions())
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := s.set(ctx, req.GetSessionId(), writes, req.GetMetadata(), req.GetSource())
	if err != nil {
		return nil, toStatus(err)
	}
	vars := make(map[string]*pb.Variable, len(writes))
	for i, w := range writes {
		vars[w.Identifier] = res.Variables[i]
	}
	return &pb.SetVariablesResponse{Variables: vars, Revision: res.Revision, Changed: res.Changed}, nil
}

// ListVariables implements BridgeService.
func (s *Server) ListVariables(_ context.Context, req *pb.ListVariablesRequest) (*pb.ListVariablesResponse, error) {
	vars, rev, err := s.st.List(req.GetSessionId(), req.GetPattern())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ListVariablesResponse{Variables: vars, Revision: rev}, nil
}

// DeleteVariable implements BridgeService.
func (s *Server) DeleteVariable(_ context.Context, req *pb.DeleteVariableRequest) (*pb.DeleteVariableResponse, error) {
	v, rev, err := s.st.Delete(req.GetSessionId(), req.GetVariableIdentifier(), req.GetMetadata(), req.GetSource())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteVariableResponse{Variable: v, Revision: rev}, nil
}

// WatchVariables implements BridgeService. The handler's goroutine is the
// one that owns the stream: it polls the watch and sends, so a client that
// stops reading stalls only its own stream.
func (s *Server) WatchVariables(req *pb.WatchVariablesRequest, stream grpc.ServerStreamingServer[pb.VariableUpdate]) error {
	return s.watch(req, stream, func(us []*pb.VariableUpdate) error {
		for _, u := range us {
			if err := stream.Send(u); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxBatchBytes keeps a batch well under the 4 MiB that gRPC clients accept
// by default (sizes are estimated, see store.ApproxVariableBytes); a single
// larger update still travels alone.
const maxBatchBytes = 1 << 20

// WatchVariableBatches implements BridgeService: WatchVariables, with every
// update that is ready sent as one message.
func (s *Server) WatchVariableBatches(req *pb.WatchVariablesRequest, stream grpc.ServerStreamingServer[pb.VariableUpdateBatch]) error {
	send := stream.Send // one method value per watch, not one per batch
	return s.watch(req, stream, func(us []*pb.VariableUpdate) error { return SendBatches(us, send) })
}

// SendBatches sends us as VariableUpdateBatch messages of about
// maxBatchBytes at most, in order: WatchVariableBatches' send, whatever the
// transport.
func SendBatches(us []*pb.VariableUpdate, send func(*pb.VariableUpdateBatch) error) error {
	for len(us) > 0 {
		n, size := 0, 0
		for n < len(us) {
			u := us[n]
			sz := 64 + store.ApproxVariableBytes(u.Variable) + store.ApproxValueBytes(u.OldValue) + store.MapBytes(u.UpdateMetadata)
			if n > 0 && size+sz > maxBatchBytes {
				break
			}
			size += sz
			n++
		}
		// A fresh message per Send: grpc-go may read it after Send returns.
		if err := send(&pb.VariableUpdateBatch{Updates: slices.Clone(us[:n])}); err != nil {
			return err
		}
		us = us[n:]
	}
	return nil
}

// watch serves a watch stream: feed.Open turns the request into a watch,
// and this adapter adds the response header and metrics.
func (s *Server) watch(req *pb.WatchVariablesRequest, stream grpc.ServerStream, send feed.Send) error {
	m, log := s.opts.metrics, s.opts.log
	w, err := feed.Open(s.st, req, feed.Hooks{
		OnFilterError: func(err error) {
			m.FilterError()
			log.Debug("where filter failed; update sent", "session", req.GetSessionId(), "err", err)
		},
		OnSent:   m.UpdateSent,
		OnResync: m.Resync,
	})
	if err != nil {
		return toStatus(err)
	}
	m.WatchOpened()
	if err := stream.SendHeader(metadata.Pairs(RevisionHeader, strconv.FormatInt(w.StartsAfter(), 10), IncarnationHeader, w.Incarnation())); err != nil {
		w.Close()
		m.WatchClosed(metrics.ClosedSendFailed)
		return err
	}
	sendFailed := false // tells a broken stream from other ends, for metrics
	err = w.Run(stream.Context(), func(us []*pb.VariableUpdate) error {
		m.SendStarted()
		err := send(us)
		m.SendDone()
		sendFailed = err != nil
		return err
	})
	m.WatchClosed(closeReason(stream.Context(), err, sendFailed))
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return status.Error(codes.Canceled, "watch cancelled by the client")
	}
	return toStatus(err)
}

// closeReason classifies how a watch ended, for metrics.
func closeReason(ctx context.Context, err error, sendFailed bool) string {
	switch {
	case errors.Is(err, store.ErrSessionClosed):
		return metrics.ClosedSessionEnded
	case ctx.Err() != nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled,
		// A send can see the transport close before the stream's context ends.
		sendFailed && status.Code(err) == codes.Unavailable:
		return metrics.ClosedCancelled
	case sendFailed:
		return metrics.ClosedSendFailed
	}
	return metrics.ClosedError
}
