package varbridge

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/varbridge/varbridge/internal/backend"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// provider is what BridgedState and local.State share: the StateProvider
// API on top of a backend.Backend, the seam below the public API (a
// server over gRPC, or the in-process store), so that a new way in (HTTP,
// etcd) is one more backend. Option handling, value conversion, the
// closed check, the watch registry and the watch rules live here, once.
type provider struct {
	be      backend.Backend
	session string
	log     *slog.Logger
	watches watchSet
	closed  atomic.Bool
}

func (p *provider) check(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	return p.be.Ready(ctx)
}

func init() { backend.NewProvider = openProvider }

// openProvider is backend.NewProvider: the provider of package local's
// State, which reaches it only through that seam. opts is a []Option.
func openProvider(opts any, open func(backend.Session) (backend.Backend, string, error)) (any, error) {
	o := newOptions(opts.([]Option))
	be, session, err := open(backend.Session{ID: o.sessionID, TTL: o.ttl, Metadata: o.sessionMeta})
	if err != nil {
		return nil, err
	}
	return &provider{be: be, session: session, log: o.log}, nil
}

// SessionID implements StateProvider.
func (p *provider) SessionID() string { return p.session }

// Register implements StateProvider.
func (p *provider) Register(ctx context.Context, name string, t Type, initial any, opts ...WriteOption) (*Variable, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto(t, initial)
	if err != nil {
		return nil, err
	}
	v, err := p.be.Register(ctx, name, t.Proto(), val, o)
	if err != nil {
		return nil, err
	}
	return variableFromProto(v), nil
}

// Get implements StateProvider.
func (p *provider) Get(ctx context.Context, identifier string) (*Variable, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	v, err := p.be.Get(ctx, identifier)
	if err != nil {
		return nil, err
	}
	return variableFromProto(v), nil
}

// GetMany implements StateProvider.
func (p *provider) GetMany(ctx context.Context, identifiers []string) (map[string]*Variable, []string, error) {
	if err := p.check(ctx); err != nil {
		return nil, nil, err
	}
	resp, err := p.be.GetMany(ctx, identifiers)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Variable, len(resp.GetVariables()))
	for id, v := range resp.GetVariables() {
		out[id] = variableFromProto(v)
	}
	return out, resp.GetMissing(), nil
}

// Set implements StateProvider.
func (p *provider) Set(ctx context.Context, identifier string, value any, opts ...WriteOption) (*Variable, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto("", value)
	if err != nil {
		return nil, err
	}
	v, err := p.be.Set(ctx, identifier, val, o)
	if err != nil {
		return nil, err
	}
	return variableFromProto(v), nil
}

// SetMany implements StateProvider.
func (p *provider) SetMany(ctx context.Context, updates map[string]any, opts ...WriteOption) (map[string]*Variable, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	vals := make(map[string]*pb.Value, len(updates))
	for id, v := range updates {
		val, err := ToProto("", v)
		if err != nil {
			return nil, err
		}
		vals[id] = val
	}
	vars, err := p.be.SetMany(ctx, vals, o)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Variable, len(vars))
	for id, v := range vars {
		out[id] = variableFromProto(v)
	}
	return out, nil
}

// Delete implements StateProvider.
func (p *provider) Delete(ctx context.Context, identifier string, opts ...WriteOption) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	return p.be.Delete(ctx, identifier, newWriteOptions(opts))
}

// List implements StateProvider.
func (p *provider) List(ctx context.Context, pattern string) ([]*Variable, error) {
	vars, _, err := p.list(ctx, pattern)
	return vars, err
}

func (p *provider) list(ctx context.Context, pattern string) ([]*Variable, int64, error) {
	if err := p.check(ctx); err != nil {
		return nil, 0, err
	}
	resp, err := p.be.List(ctx, pattern)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*Variable, len(resp.GetVariables()))
	for i, v := range resp.GetVariables() {
		out[i] = variableFromProto(v)
	}
	return out, resp.GetRevision(), nil
}

// Export implements StateProvider.
func (p *provider) Export(ctx context.Context) (*Snapshot, error) {
	vars, rev, err := p.list(ctx, "")
	if err != nil {
		return nil, err
	}
	return &Snapshot{SessionID: p.session, Revision: rev, Variables: vars}, nil
}

// Import implements StateProvider. It is not atomic: variables registered
// before a failure stay.
func (p *provider) Import(ctx context.Context, s *Snapshot) error { return importSnapshot(ctx, p, s) }

// SupportsWatching implements StateProvider; it is true.
func (p *provider) SupportsWatching() bool { return true }

// WatchVariables implements StateProvider. The observer is registered (on
// the server, for a BridgedState), and the initial values taken, before it
// returns: every later write reaches the watcher. The watch carries no
// deadline; ctx ending cancels it. A BridgedState watch whose stream breaks
// reconnects and resumes after the last revision it delivered whole,
// sending the session incarnation it has seen, so a session created again
// while the watch was away (a server that lost it) answers with Resync
// updates, never silence.
func (p *provider) WatchVariables(ctx context.Context, identifiers []string, fn Watcher, opts ...WatchOption) (WatchRef, error) {
	if err := p.check(ctx); err != nil {
		return WatchRef{}, err
	}
	if fn == nil {
		return WatchRef{}, &kindError{kind: ErrInvalidArgument, msg: "WatchVariables: the watcher is nil"}
	}
	cfg := newWatchConfig(opts)
	var w *watch
	f, err := p.be.OpenWatch(ctx, identifiers, cfg.WatchConfig, func(s backend.Start) backend.Sink {
		w = newWatch(identifiers, fn, cfg, p.log, s)
		return w
	})
	if err != nil {
		return WatchRef{}, err
	}
	return p.watches.start(w, f)
}

// UnwatchVariables implements StateProvider. When it returns, the watch's
// observer is gone (a BridgedState's stream is cancelled, and the server
// removes its observer as soon as it sees the cancellation).
func (p *provider) UnwatchVariables(ref WatchRef) error { return p.watches.remove(ref) }

// ListWatchers implements StateProvider.
func (p *provider) ListWatchers() []WatchInfo { return p.watches.list() }

// Close implements StateProvider: it stops every watch and releases what
// the provider holds (a BridgedState's share of the connection pool; a
// local.State's own store). The session stays.
func (p *provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.watches.closeAll()
	p.be.Release()
	return nil
}

// Heartbeat marks the session used, restarting its TTL, and returns the
// session as its store describes it. A program that holds a session
// without calling it otherwise (and without a watch open on it, which keeps
// it alive by itself) calls Heartbeat within the TTL.
func (p *provider) Heartbeat(ctx context.Context) (*SessionInfo, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	s, err := p.be.Heartbeat(ctx)
	if err != nil {
		return nil, err
	}
	return sessionFromProto(s), nil
}

// CleanupSession removes the session, ending every watch on it, and closes
// the provider: its own watches stop as Close stops them; those of other
// providers on the session end with ErrSessionClosed.
func (p *provider) CleanupSession(ctx context.Context) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	p.watches.closeAll() // the provider's own watches end as stopped, not failed
	err := p.be.Cleanup(ctx)
	_ = p.Close()
	return err
}

// importSnapshot registers a snapshot's variables in p, setting the value
// of those that exist already.
func importSnapshot(ctx context.Context, p StateProvider, s *Snapshot) error {
	if s == nil {
		return nil
	}
	for _, v := range s.Variables {
		var opts []WriteOption
		if v.Constraints != nil {
			opts = append(opts, WithConstraints(*v.Constraints))
		}
		if len(v.Metadata) > 0 {
			opts = append(opts, WithMetadata(v.Metadata))
		}
		if v.Source != "" {
			opts = append(opts, WithSource(v.Source))
		}
		_, err := p.Register(ctx, v.Name, v.Type, v.Value, opts...)
		if errors.Is(err, ErrAlreadyExists) {
			_, err = p.Set(ctx, v.Name, v.Value, WithSource(v.Source))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
