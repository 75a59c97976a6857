package varbridge

import (
	"context"
	"sort"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varbridge/varbridge/internal/backend"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BridgedState is a StateProvider on a varbridge server, over gRPC. It
// shares one pool of client connections per target with every other
// BridgedState of the process; each watch is a StreamConsumer that resumes
// exactly where it stopped when its stream breaks. It is the provider both
// states share on the gRPC backend.
type BridgedState struct {
	provider
	rb *remote
}

// remote is BridgedState's backend.Backend: a session on a server, reached
// over the shared connection pool.
type remote struct {
	target  string
	session string
	token   string
	pool    *connPool
}

var _ StateProvider = (*BridgedState)(nil)

// NewBridgedState connects to the server at target ("host:port" or any
// gRPC target) and creates the session, or joins it when WithSessionID
// names an existing one. Like every unary call of a BridgedState, it waits
// for the connection (a server still starting, or restarting) until ctx
// ends, rather than failing at the first refused connect: give ctx a
// deadline.
//
// Several servers that share their sessions (varbridge servers over one
// etcd cluster) are named by a comma-separated list, "h1:p1,h2:p2,h3:p3",
// or by a DNS name with a record per server, "dns:///name:port". Calls
// and watch streams then spread over the servers that are up (gRPC's
// round_robin), and a server that dies leaves the rotation at once: a
// watch on it resumes on another from its revision and incarnation, with
// nothing lost or repeated and without waiting out its backoff or counting
// towards WithMaxFailures (WatchInfo.Failovers counts these); reads cut off
// are retried on another server; a write in flight fails with
// ErrUnavailable (it may or may not have been applied, so it is never sent
// again), and later writes go to a server that is up. A malformed list
// fails with ErrInvalidArgument.
func NewBridgedState(ctx context.Context, target string, opts ...Option) (*BridgedState, error) {
	o := newOptions(opts)
	pool, err := acquirePool(target, &o)
	if err != nil {
		return nil, err
	}
	r := &remote{target: target, token: o.token, pool: pool}
	req := &pb.InitializeSessionRequest{SessionId: o.sessionID, Metadata: o.sessionMeta}
	if o.ttl > 0 {
		req.Ttl = durationpb.New(o.ttl)
	}
	resp, err := r.api().InitializeSession(r.ctx(ctx), req)
	if err != nil {
		releasePool(pool)
		return nil, fromStatus(err)
	}
	r.session = resp.GetSession().GetSessionId()
	if r.token == "" {
		r.token = resp.GetSessionToken()
	}
	return &BridgedState{provider: provider{be: r, session: r.session, log: o.log}, rb: r}, nil
}

func (r *remote) api() pb.BridgeServiceClient { return pb.NewBridgeServiceClient(r.pool.unary()) }

// ctx adds the bearer token, if any, to an outgoing call.
func (r *remote) ctx(ctx context.Context) context.Context { return bearer(r.token).attach(ctx) }

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
func (b *BridgedState) Token() string { return b.rb.token }

// Target returns the server address the state was created with (a list,
// for several servers, as given).
func (b *BridgedState) Target() string { return b.rb.target }

var _ backend.Backend = (*remote)(nil)

// Ready is nil: gRPC checks the context.
func (r *remote) Ready(context.Context) error { return nil }

func (r *remote) Register(ctx context.Context, name string, t pb.VariableType, val *pb.Value, o backend.WriteOptions) (*pb.Variable, error) {
	resp, err := r.api().RegisterVariable(r.ctx(ctx), &pb.RegisterVariableRequest{
		SessionId: r.session, Name: name, Type: t, InitialValue: val,
		Constraints: o.Constraints, Metadata: o.Metadata, Source: o.Source,
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (r *remote) Get(ctx context.Context, identifier string) (*pb.Variable, error) {
	resp, err := r.api().GetVariable(r.ctx(ctx), &pb.GetVariableRequest{SessionId: r.session, VariableIdentifier: identifier})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (r *remote) GetMany(ctx context.Context, identifiers []string) (*pb.GetVariablesResponse, error) {
	resp, err := r.api().GetVariables(r.ctx(ctx), &pb.GetVariablesRequest{SessionId: r.session, VariableIdentifiers: identifiers})
	return resp, fromStatus(err)
}

// Set and SetMany go on the pool's write stream, or unary (writes.go).
func (r *remote) Set(ctx context.Context, identifier string, val *pb.Value, o backend.WriteOptions) (*pb.Variable, error) {
	req := &pb.SetVariableRequest{
		SessionId: r.session, VariableIdentifier: identifier, Value: val,
		Metadata: o.Metadata, ExpectedVersion: o.ExpectedVersion, Source: o.Source,
	}
	ack, err := r.streamWrite(ctx, &pb.WriteRequest{Write: &pb.WriteRequest_SetVariable{SetVariable: req}})
	if err == nil {
		return ack.GetSetVariable().GetVariable(), nil
	}
	if err != errNotStreamed {
		return nil, fromStatus(err)
	}
	resp, err := r.api().SetVariable(r.ctx(ctx), req)
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariable(), nil
}

func (r *remote) SetMany(ctx context.Context, updates map[string]*pb.Value, o backend.WriteOptions) (map[string]*pb.Variable, error) {
	req := &pb.SetVariablesRequest{
		SessionId: r.session, Updates: updates, Metadata: o.Metadata, ExpectedVersions: o.ExpectedVersions, Source: o.Source,
	}
	ack, err := r.streamWrite(ctx, &pb.WriteRequest{Write: &pb.WriteRequest_SetVariables{SetVariables: req}})
	if err == nil {
		return ack.GetSetVariables().GetVariables(), nil
	}
	if err != errNotStreamed {
		return nil, fromStatus(err)
	}
	resp, err := r.api().SetVariables(r.ctx(ctx), req)
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetVariables(), nil
}

func (r *remote) Delete(ctx context.Context, identifier string, o backend.WriteOptions) error {
	_, err := r.api().DeleteVariable(r.ctx(ctx), &pb.DeleteVariableRequest{
		SessionId: r.session, VariableIdentifier: identifier, Metadata: o.Metadata, Source: o.Source,
	})
	return fromStatus(err)
}

func (r *remote) List(ctx context.Context, pattern string) (*pb.ListVariablesResponse, error) {
	resp, err := r.api().ListVariables(r.ctx(ctx), &pb.ListVariablesRequest{SessionId: r.session, Pattern: pattern})
	return resp, fromStatus(err)
}

func (r *remote) Heartbeat(ctx context.Context) (*pb.Session, error) {
	resp, err := r.api().Heartbeat(r.ctx(ctx), &pb.HeartbeatRequest{SessionId: r.session})
	if err != nil {
		return nil, fromStatus(err)
	}
	return resp.GetSession(), nil
}

// Cleanup removes the session from the server, ending every watch on it
// (other clients' too).
func (r *remote) Cleanup(ctx context.Context) error {
	_, err := r.api().CleanupSession(r.ctx(ctx), &pb.CleanupSessionRequest{SessionId: r.session})
	return fromStatus(err)
}

// Release gives back the state's share of the connection pool.
func (r *remote) Release() { releasePool(r.pool) }

// OpenWatch validates the identifiers and reads the revision R the watch
// starts after (and, with WithInitialValues, the values at R: see
// streamConsumer for why the client takes them itself), then opens the
// stream at R+1 and waits until the server has registered it: when it
// returns, every later write reaches the watcher. Each resume sends the
// session incarnation the watch has seen, so a session created again while
// the watch was away (a server that lost it) answers with Resync updates,
// never silence.
//
// build is always the provider's: the sink it makes is the provider's
// watch, which the stream consumer drives (resume point, incarnation,
// statistics).
func (r *remote) OpenWatch(ctx context.Context, identifiers []string, cfg backend.WatchConfig, build func(backend.Start) backend.Sink) (backend.Feed, error) {
	ident := map[string]string{}
	var (
		initial []*pb.Variable
		rev     int64
	)
	if len(identifiers) > 0 {
		resp, err := r.GetMany(ctx, identifiers)
		if err != nil {
			return nil, err
		}
		if len(resp.GetMissing()) > 0 {
			return nil, &NotFoundError{Session: r.session, Identifiers: resp.GetMissing()}
		}
		rev = resp.GetRevision()
		for _, id := range identifiers { // the first identifier of a variable wins, as on the server
			v := resp.GetVariables()[id]
			if _, dup := ident[v.GetId()]; !dup {
				ident[v.GetId()] = id
				initial = append(initial, v)
			}
		}
	} else if cfg.Initial && cfg.StartRevision == 0 {
		resp, err := r.List(ctx, "")
		if err != nil {
			return nil, err
		}
		rev, initial = resp.GetRevision(), resp.GetVariables()
	} else {
		resp, err := r.api().GetSession(r.ctx(ctx), &pb.GetSessionRequest{SessionId: r.session})
		if err != nil {
			return nil, fromStatus(err)
		}
		rev = resp.GetSession().GetRevision()
		if cfg.Incarnation == "" {
			cfg.Incarnation = resp.GetSession().GetIncarnation()
		}
	}
	resume, initialRev := rev+1, rev
	if cfg.StartRevision > 0 {
		resume, initial = cfg.StartRevision, nil
	} else if cfg.Initial {
		sort.Slice(initial, func(i, j int) bool { return initial[i].GetName() < initial[j].GetName() })
	} else {
		initial = nil
	}

	lease, err := r.pool.lease()
	if err != nil {
		return nil, err
	}
	conn := streamConn{session: r.session, auth: bearer(r.token), pool: r.pool, lease: lease}
	wctx, cancel := backend.WatchContext(ctx)
	// The incarnation known so far (given, or read with the revision); the
	// stream corrects it if the session was created again meanwhile.
	w := build(backend.Start{
		IdentOf:     func(id string) (string, bool) { s, ok := ident[id]; return s, ok },
		StartsAfter: resume - 1, Incarnation: cfg.Incarnation, Ctx: wctx, Cancel: cancel,
	}).(*watch)
	c := newStreamConsumer(conn, w, initial, initialRev, cfg.Incarnation)
	if err := c.openFirst(wctx); err != nil {
		cancel()
		conn.release()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fromStatus(err)
	}
	return c, nil
}

func sessionFromProto(s *pb.Session) *SessionInfo {
	return &SessionInfo{
		ID: s.GetSessionId(), Incarnation: s.GetIncarnation(), CreatedAt: asTime(s.GetCreatedAt()),
		ExpiresAt: asTime(s.GetExpiresAt()), TTL: s.GetTtl().AsDuration(), Revision: s.GetRevision(),
		VariableCount: s.GetVariableCount(), WatchCount: s.GetWatchCount(), Metadata: s.GetMetadata(),
	}
}
