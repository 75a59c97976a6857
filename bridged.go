package varbridge

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BridgedState is a StateProvider on a varbridge server, over gRPC. It
// shares one pool of client connections per target with every other
// BridgedState of the process; each watch is a StreamConsumer that resumes
// exactly where it stopped when its stream breaks.
type BridgedState struct {
	target  string
	session string
	token   string
	log     *slog.Logger
	pool    *connPool
	watches watchSet
	closed  atomic.Bool
}

var _ StateProvider = (*BridgedState)(nil)

// NewBridgedState connects to the server at target ("host:port" or any
// gRPC target) and creates the session, or joins it when WithSessionID
// names an existing one. Like every unary call of a BridgedState, it waits
// for the connection (a server still starting, or restarting) until ctx
// ends, rather than failing at the first refused connect: give ctx a
// deadline.
func NewBridgedState(ctx context.Context, target string, opts ...Option) (*BridgedState, error) {
	o := newOptions(opts)
	pool, err := acquirePool(target, &o)
	if err != nil {
		return nil, err
	}
	b := &BridgedState{target: target, token: o.token, log: o.log, pool: pool}
	req := &pb.InitializeSessionRequest{SessionId: o.sessionID, Metadata: o.sessionMeta}
	if o.ttl > 0 {
		req.Ttl = durationpb.New(o.ttl)
	}
	resp, err := b.api().InitializeSession(b.ctx(ctx), req)
	if err != nil {
		releasePool(pool)
		return nil, fromStatus(err)
	}
	b.session = resp.GetSession().GetSessionId()
	if b.token == "" {
		b.token = resp.GetSessionToken()
	}
	return b, nil
}

func (b *BridgedState) api() pb.BridgeServiceClient { return pb.NewBridgeServiceClient(b.pool.unary()) }

// ctx adds the bearer token, if any, to an outgoing call.
func (b *BridgedState) ctx(ctx context.Context) context.Context { return bearer(b.token).attach(ctx) }

// bearer is a session token that calls carry; "" carries none.
type bearer string

// attach adds "authorization: Bearer <token>" to an outgoing call.
func (t bearer) attach(ctx context.Context) context.Context {
	if t == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+string(t))
}

func (b *BridgedState) check() error {
	if b.closed.Load() {
		return ErrClosed
	}
	return nil
}

// SessionID implements StateProvider.
func (b *BridgedState) SessionID() string { return b.session }

// Token returns the session token the state sends (WithToken, or the one
// the server issued when this state created the session); "" without auth.
// Hand it to other clients, Go or Python, that join the session.
func (b *BridgedState) Token() string { return b.token }

// Target returns the server address the state was created with.
func (b *BridgedState) Target() string { return b.target }

// Register implements StateProvider.
func (b *BridgedState) Register(ctx context.Context, name string, t Type, initial any, opts ...WriteOption) (*Variable, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto(t, initial)
	if err != nil {
		return nil, err
	}
	resp, err := b.api().RegisterVariable(b.ctx(ctx), &pb.RegisterVariableRequest{
		SessionId: b.session, Name: name, Type: t.Proto(), InitialValue: val,
		Constraints: o.constraints.proto(), Metadata: o.metadata, Source: o.source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return variableFromProto(resp.GetVariable()), nil
}

// Get implements StateProvider.
func (b *BridgedState) Get(ctx context.Context, identifier string) (*Variable, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	resp, err := b.api().GetVariable(b.ctx(ctx), &pb.GetVariableRequest{SessionId: b.session, VariableIdentifier: identifier})
	if err != nil {
		return nil, fromStatus(err)
	}
	return variableFromProto(resp.GetVariable()), nil
}

// GetMany implements StateProvider.
func (b *BridgedState) GetMany(ctx context.Context, identifiers []string) (map[string]*Variable, []string, error) {
	resp, err := b.getMany(ctx, identifiers)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Variable, len(resp.GetVariables()))
	for id, v := range resp.GetVariables() {
		out[id] = variableFromProto(v)
	}
	return out, resp.GetMissing(), nil
}

func (b *BridgedState) getMany(ctx context.Context, identifiers []string) (*pb.GetVariablesResponse, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	resp, err := b.api().GetVariables(b.ctx(ctx), &pb.GetVariablesRequest{SessionId: b.session, VariableIdentifiers: identifiers})
	return resp, fromStatus(err)
}

// Set implements StateProvider.
func (b *BridgedState) Set(ctx context.Context, identifier string, value any, opts ...WriteOption) (*Variable, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto("", value)
	if err != nil {
		return nil, err
	}
	resp, err := b.api().SetVariable(b.ctx(ctx), &pb.SetVariableRequest{
		SessionId: b.session, VariableIdentifier: identifier, Value: val,
		Metadata: o.metadata, ExpectedVersion: o.expectedVersion, Source: o.source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return variableFromProto(resp.GetVariable()), nil
}

// SetMany implements StateProvider.
func (b *BridgedState) SetMany(ctx context.Context, updates map[string]any, opts ...WriteOption) (map[string]*Variable, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	req := &pb.SetVariablesRequest{
		SessionId: b.session, Updates: make(map[string]*pb.Value, len(updates)),
		Metadata: o.metadata, ExpectedVersions: o.expectedVersions, Source: o.source,
	}
	for id, v := range updates {
		val, err := ToProto("", v)
		if err != nil {
			return nil, err
		}
		req.Updates[id] = val
	}
	resp, err := b.api().SetVariables(b.ctx(ctx), req)
	if err != nil {
		return nil, fromStatus(err)
	}
	out := make(map[string]*Variable, len(resp.GetVariables()))
	for id, v := range resp.GetVariables() {
		out[id] = variableFromProto(v)
	}
	return out, nil
}

// Delete implements StateProvider.
func (b *BridgedState) Delete(ctx context.Context, identifier string, opts ...WriteOption) error {
	if err := b.check(); err != nil {
		return err
	}
	o := newWriteOptions(opts)
	_, err := b.api().DeleteVariable(b.ctx(ctx), &pb.DeleteVariableRequest{
		SessionId: b.session, VariableIdentifier: identifier, Metadata: o.metadata, Source: o.source,
	})
	return fromStatus(err)
}

// List implements StateProvider.
func (b *BridgedState) List(ctx context.Context, pattern string) ([]*Variable, error) {
	resp, err := b.list(ctx, pattern)
	if err != nil {
		return nil, err
	}
	out := make([]*Variable, len(resp.GetVariables()))
	for i, v := range resp.GetVariables() {
		out[i] = variableFromProto(v)
	}
	return out, nil
}

func (b *BridgedState) list(ctx context.Context, pattern string) (*pb.ListVariablesResponse, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	resp, err := b.api().ListVariables(b.ctx(ctx), &pb.ListVariablesRequest{SessionId: b.session, Pattern: pattern})
	return resp, fromStatus(err)
}

// Export implements StateProvider.
func (b *BridgedState) Export(ctx context.Context) (*Snapshot, error) {
	resp, err := b.list(ctx, "")
	if err != nil {
		return nil, err
	}
	s := &Snapshot{SessionID: b.session, Revision: resp.GetRevision()}
	for _, v := range resp.GetVariables() {
		s.Variables = append(s.Variables, variableFromProto(v))
	}
	return s, nil
}

// Import implements StateProvider. It is not atomic: variables registered
// before a failure stay.
func (b *BridgedState) Import(ctx context.Context, s *Snapshot) error {
	return importSnapshot(ctx, b, s)
}

// SupportsWatching implements StateProvider; it is true.
func (b *BridgedState) SupportsWatching() bool { return true }

// WatchVariables implements StateProvider. It validates the identifiers and
// reads the revision R the watch starts after (and, with
// WithInitialValues, the values at R), then opens the stream at R+1 and
// waits until the server has registered it: when it returns, every later
// write reaches the watcher. The watch carries no deadline; ctx ending
// cancels it. Each resume sends the session incarnation the watch has
// seen, so a session created again while the watch was away (a server that
// lost it) answers with Resync updates, never silence.
func (b *BridgedState) WatchVariables(ctx context.Context, identifiers []string, fn Watcher, opts ...WatchOption) (WatchRef, error) {
	if err := b.check(); err != nil {
		return WatchRef{}, err
	}
	if fn == nil {
		return WatchRef{}, &kindError{kind: ErrInvalidArgument, msg: "WatchVariables: the watcher is nil"}
	}
	cfg := newWatchConfig(opts)
	ident := map[string]string{}
	var (
		initial []*pb.Variable
		rev     int64
	)
	if len(identifiers) > 0 {
		resp, err := b.getMany(ctx, identifiers)
		if err != nil {
			return WatchRef{}, err
		}
		if len(resp.GetMissing()) > 0 {
			return WatchRef{}, &NotFoundError{Session: b.session, Identifiers: resp.GetMissing()}
		}
		rev = resp.GetRevision()
		for _, id := range identifiers { // the first identifier of a variable wins, as on the server
			v := resp.GetVariables()[id]
			if _, dup := ident[v.GetId()]; !dup {
				ident[v.GetId()] = id
				initial = append(initial, v)
			}
		}
	} else if cfg.initial && cfg.startRevision == 0 {
		resp, err := b.list(ctx, "")
		if err != nil {
			return WatchRef{}, err
		}
		rev, initial = resp.GetRevision(), resp.GetVariables()
	} else {
		resp, err := b.api().GetSession(b.ctx(ctx), &pb.GetSessionRequest{SessionId: b.session})
		if err != nil {
			return WatchRef{}, fromStatus(err)
		}
		rev = resp.GetSession().GetRevision()
		if cfg.incarnation == "" {
			cfg.incarnation = resp.GetSession().GetIncarnation()
		}
	}
	resume, initialRev := rev+1, rev
	if cfg.startRevision > 0 {
		resume, initial = cfg.startRevision, nil
	} else if cfg.initial {
		sort.Slice(initial, func(i, j int) bool { return initial[i].GetName() < initial[j].GetName() })
	} else {
		initial = nil
	}

	lease, err := b.pool.lease()
	if err != nil {
		return WatchRef{}, err
	}
	conn := streamConn{session: b.session, auth: bearer(b.token), pool: b.pool, lease: lease}
	wctx, cancel := watchContext(ctx)
	// The watch's incarnation stays unknown until its stream names one.
	w := newWatch(identifiers, fn, cfg, b.log, watchStart{
		identOf:     func(id string) (string, bool) { s, ok := ident[id]; return s, ok },
		startsAfter: resume - 1, cancel: cancel,
	})
	c := newStreamConsumer(conn, w, initial, initialRev, cfg.incarnation)
	if err := c.openFirst(wctx); err != nil {
		cancel()
		conn.release()
		if ctx.Err() != nil {
			return WatchRef{}, ctx.Err()
		}
		return WatchRef{}, fromStatus(err)
	}
	ref, err := b.watches.start(wctx, w, c)
	if err != nil {
		conn.release()
	}
	return ref, err
}

// UnwatchVariables implements StateProvider. The stream is cancelled; the
// server removes its observer as soon as it sees the cancellation.
func (b *BridgedState) UnwatchVariables(ref WatchRef) error { return b.watches.remove(ref) }

// ListWatchers implements StateProvider.
func (b *BridgedState) ListWatchers() []WatchInfo { return b.watches.list() }

// Close implements StateProvider: it stops every watch and releases the
// state's share of the connection pool. The session stays on the server.
func (b *BridgedState) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.watches.closeAll()
	releasePool(b.pool)
	return nil
}

// Heartbeat marks the session used, restarting its TTL, and returns the
// session as the server describes it. A program that holds a session
// without calling it otherwise (and without a watch open on it, which keeps
// it alive by itself) calls Heartbeat within the TTL.
func (b *BridgedState) Heartbeat(ctx context.Context) (*SessionInfo, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	resp, err := b.api().Heartbeat(b.ctx(ctx), &pb.HeartbeatRequest{SessionId: b.session})
	if err != nil {
		return nil, fromStatus(err)
	}
	return sessionFromProto(resp.GetSession()), nil
}

func sessionFromProto(s *pb.Session) *SessionInfo {
	return &SessionInfo{
		ID: s.GetSessionId(), Incarnation: s.GetIncarnation(), CreatedAt: asTime(s.GetCreatedAt()),
		ExpiresAt: asTime(s.GetExpiresAt()), TTL: s.GetTtl().AsDuration(), Revision: s.GetRevision(),
		VariableCount: s.GetVariableCount(), WatchCount: s.GetWatchCount(), Metadata: s.GetMetadata(),
	}
}

// CleanupSession removes the session from the server, ending every watch
// on it (other clients' too), and closes b.
func (b *BridgedState) CleanupSession(ctx context.Context) error {
	if err := b.check(); err != nil {
		return err
	}
	b.watches.closeAll() // b's own watches stop as Close stops them, not failed
	_, err := b.api().CleanupSession(b.ctx(ctx), &pb.CleanupSessionRequest{SessionId: b.session})
	_ = b.Close()
	return fromStatus(err)
}
