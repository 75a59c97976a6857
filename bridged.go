package varbridge

import (
	"context"
	"sort"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BridgedState is a StateProvider on a varbridge server, over gRPC. It
// shares one pool of client connections per target with every other
// BridgedState of the process; each watch is a StreamConsumer that resumes
// exactly where it stopped when its stream breaks. It is the gRPC backend
// of the provider both states share.
type BridgedState struct {
	provider
	target string
	token  string
	pool   *connPool
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
	b := &BridgedState{target: target, token: o.token, pool: pool}
	req := &pb.InitializeSessionRequest{SessionId: o.sessionID, Metadata: o.sessionMeta}
	if o.ttl > 0 {
		req.Ttl = durationpb.New(o.ttl)
	}
	resp, err := b.api().InitializeSession(b.ctx(ctx), req)
	if err != nil {
		releasePool(pool)
		return nil, fromStatus(err)
	}
	b.provider = provider{be: b, session: resp.GetSession().GetSessionId(), log: o.log}
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

// Token returns the session token the state sends (WithToken, or the one
// the server issued when this state created the session); "" without auth.
// Hand it to other clients, Go or Python, that join the session.
func (b *BridgedState) Token() string { return b.token }

// Target returns the server address the state was created with.
func (b *BridgedState) Target() string { return b.target }

func (b *BridgedState) ready(context.Context) error { return nil }

func (b *BridgedState) register(ctx context.Context, name string, t pb.VariableType, val *pb.Value, o writeOptions) (*pb.Variable, error) {
	resp, err := b.api().RegisterVariable(b.ctx(ctx), &pb.RegisterVariableRequest{
		SessionId: b.session, Name: name, Type: t, InitialValue: val,
		Constraints: o.constraints.proto(), Metadata: o.metadata, Source: o.source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (b *BridgedState) get(ctx context.Context, identifier string) (*pb.Variable, error) {
	resp, err := b.api().GetVariable(b.ctx(ctx), &pb.GetVariableRequest{SessionId: b.session, VariableIdentifier: identifier})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (b *BridgedState) getMany(ctx context.Context, identifiers []string) (*pb.GetVariablesResponse, error) {
	resp, err := b.api().GetVariables(b.ctx(ctx), &pb.GetVariablesRequest{SessionId: b.session, VariableIdentifiers: identifiers})
	return resp, fromStatus(err)
}

func (b *BridgedState) set(ctx context.Context, identifier string, val *pb.Value, o writeOptions) (*pb.Variable, error) {
	resp, err := b.api().SetVariable(b.ctx(ctx), &pb.SetVariableRequest{
		SessionId: b.session, VariableIdentifier: identifier, Value: val,
		Metadata: o.metadata, ExpectedVersion: o.expectedVersion, Source: o.source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (b *BridgedState) setMany(ctx context.Context, updates map[string]*pb.Value, o writeOptions) (map[string]*pb.Variable, error) {
	resp, err := b.api().SetVariables(b.ctx(ctx), &pb.SetVariablesRequest{
		SessionId: b.session, Updates: updates, Metadata: o.metadata, ExpectedVersions: o.expectedVersions, Source: o.source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariables(), nil
}

func (b *BridgedState) delete(ctx context.Context, identifier string, o writeOptions) error {
	_, err := b.api().DeleteVariable(b.ctx(ctx), &pb.DeleteVariableRequest{
		SessionId: b.session, VariableIdentifier: identifier, Metadata: o.metadata, Source: o.source,
	})
	return fromStatus(err)
}

func (b *BridgedState) list(ctx context.Context, pattern string) (*pb.ListVariablesResponse, error) {
	resp, err := b.api().ListVariables(b.ctx(ctx), &pb.ListVariablesRequest{SessionId: b.session, Pattern: pattern})
	return resp, fromStatus(err)
}

func (b *BridgedState) heartbeat(ctx context.Context) (*pb.Session, error) {
	resp, err := b.api().Heartbeat(b.ctx(ctx), &pb.HeartbeatRequest{SessionId: b.session})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetSession(), nil
}

// cleanup removes the session from the server, ending every watch on it
// (other clients' too).
func (b *BridgedState) cleanup(ctx context.Context) error {
	_, err := b.api().CleanupSession(b.ctx(ctx), &pb.CleanupSessionRequest{SessionId: b.session})
	return fromStatus(err)
}

// release gives back the state's share of the connection pool.
func (b *BridgedState) release() { releasePool(b.pool) }

// openWatch validates the identifiers and reads the revision R the watch
// starts after (and, with WithInitialValues, the values at R: see
// streamConsumer for why the client takes them itself), then opens the
// stream at R+1 and waits until the server has registered it: when it
// returns, every later write reaches the watcher. Each resume sends the
// session incarnation the watch has seen, so a session created again while
// the watch was away (a server that lost it) answers with Resync updates,
// never silence.
func (b *BridgedState) openWatch(ctx context.Context, identifiers []string, cfg watchConfig, build func(watchStart) *watch) (*watch, watchFeed, error) {
	ident := map[string]string{}
	var (
		initial []*pb.Variable
		rev     int64
	)
	if len(identifiers) > 0 {
		resp, err := b.getMany(ctx, identifiers)
		if err != nil {
			return nil, nil, err
		}
		if len(resp.GetMissing()) > 0 {
			return nil, nil, &NotFoundError{Session: b.session, Identifiers: resp.GetMissing()}
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
			return nil, nil, err
		}
		rev, initial = resp.GetRevision(), resp.GetVariables()
	} else {
		resp, err := b.api().GetSession(b.ctx(ctx), &pb.GetSessionRequest{SessionId: b.session})
		if err != nil {
			return nil, nil, fromStatus(err)
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
		return nil, nil, err
	}
	conn := streamConn{session: b.session, auth: bearer(b.token), pool: b.pool, lease: lease}
	wctx, cancel := watchContext(ctx)
	// The incarnation known so far (given, or read with the revision); the
	// stream corrects it if the session was created again meanwhile.
	w := build(watchStart{
		identOf:     func(id string) (string, bool) { s, ok := ident[id]; return s, ok },
		startsAfter: resume - 1, incarnation: cfg.incarnation, ctx: wctx, cancel: cancel,
	})
	c := newStreamConsumer(conn, w, initial, initialRev, cfg.incarnation)
	if err := c.openFirst(wctx); err != nil {
		cancel()
		conn.release()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fromStatus(err)
	}
	return w, c, nil
}

func sessionFromProto(s *pb.Session) *SessionInfo {
	return &SessionInfo{
		ID: s.GetSessionId(), Incarnation: s.GetIncarnation(), CreatedAt: asTime(s.GetCreatedAt()),
		ExpiresAt: asTime(s.GetExpiresAt()), TTL: s.GetTtl().AsDuration(), Revision: s.GetRevision(),
		VariableCount: s.GetVariableCount(), WatchCount: s.GetWatchCount(), Metadata: s.GetMetadata(),
	}
}
