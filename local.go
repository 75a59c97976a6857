package varbridge

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// LocalState is a StateProvider in process: it runs the same SessionStore
// and watch feed as the server, without a network. Each watch is fed by one
// goroutine that calls its watcher directly.
type LocalState struct {
	st       *store.Store
	ownStore bool
	session  string
	log      *slog.Logger
	watches  watchSet
	closed   atomic.Bool
}

var _ StateProvider = (*LocalState)(nil)

// NewLocalState creates (or, with WithSessionID, joins) a session in a
// private in-memory store, or in the store given by withStore (tests).
func NewLocalState(opts ...Option) (*LocalState, error) {
	o := newOptions(opts)
	l := &LocalState{st: o.store, log: o.log}
	if l.st == nil {
		l.st, l.ownStore = store.New(store.Options{TTL: o.ttl}), true
	}
	info, _, err := l.st.CreateSession(o.sessionID, o.ttl, o.sessionMeta)
	if err != nil {
		if l.ownStore {
			l.st.Close()
		}
		return nil, fromStore(err)
	}
	l.session = info.ID
	return l, nil
}

// SessionID implements StateProvider.
func (l *LocalState) SessionID() string { return l.session }

func (l *LocalState) check(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Register implements StateProvider.
func (l *LocalState) Register(ctx context.Context, name string, t Type, initial any, opts ...WriteOption) (*Variable, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto(t, initial)
	if err != nil {
		return nil, err
	}
	v, _, err := l.st.Register(l.session, store.Register{
		Name: name, Type: t.Proto(), Value: val, Constraints: o.constraints.proto(),
		Metadata: o.metadata, Source: o.source,
	})
	if err != nil {
		return nil, fromStore(err)
	}
	return variableFromProto(v), nil
}

// Get implements StateProvider.
func (l *LocalState) Get(ctx context.Context, identifier string) (*Variable, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	v, _, err := l.st.Get(l.session, identifier)
	if err != nil {
		return nil, fromStore(err)
	}
	return variableFromProto(v), nil
}

// GetMany implements StateProvider.
func (l *LocalState) GetMany(ctx context.Context, identifiers []string) (map[string]*Variable, []string, error) {
	if err := l.check(ctx); err != nil {
		return nil, nil, err
	}
	found, missing, _, err := l.st.GetMany(l.session, identifiers)
	if err != nil {
		return nil, nil, fromStore(err)
	}
	out := make(map[string]*Variable, len(found))
	for id, v := range found {
		out[id] = variableFromProto(v)
	}
	return out, missing, nil
}

// Set implements StateProvider.
func (l *LocalState) Set(ctx context.Context, identifier string, value any, opts ...WriteOption) (*Variable, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	o := newWriteOptions(opts)
	val, err := ToProto("", value)
	if err != nil {
		return nil, err
	}
	res, err := l.st.Set(l.session, []store.Write{{Identifier: identifier, Value: val, ExpectedVersion: o.expectedVersion}}, o.metadata, o.source)
	if err != nil {
		return nil, fromStore(err)
	}
	return variableFromProto(res.Variables[0]), nil
}

// SetMany implements StateProvider.
func (l *LocalState) SetMany(ctx context.Context, updates map[string]any, opts ...WriteOption) (map[string]*Variable, error) {
	if err := l.check(ctx); err != nil {
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
	writes, err := store.BatchWrites(vals, o.expectedVersions)
	if err != nil {
		return nil, fromStore(err)
	}
	res, err := l.st.Set(l.session, writes, o.metadata, o.source)
	if err != nil {
		return nil, fromStore(err)
	}
	out := make(map[string]*Variable, len(res.Variables))
	for i, w := range writes {
		out[w.Identifier] = variableFromProto(res.Variables[i])
	}
	return out, nil
}

// Delete implements StateProvider.
func (l *LocalState) Delete(ctx context.Context, identifier string, opts ...WriteOption) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	o := newWriteOptions(opts)
	_, _, err := l.st.Delete(l.session, identifier, o.metadata, o.source)
	return fromStore(err)
}

// List implements StateProvider.
func (l *LocalState) List(ctx context.Context, pattern string) ([]*Variable, error) {
	vars, _, err := l.list(ctx, pattern)
	return vars, err
}

func (l *LocalState) list(ctx context.Context, pattern string) ([]*Variable, int64, error) {
	if err := l.check(ctx); err != nil {
		return nil, 0, err
	}
	vars, rev, err := l.st.List(l.session, pattern)
	if err != nil {
		return nil, 0, fromStore(err)
	}
	out := make([]*Variable, len(vars))
	for i, v := range vars {
		out[i] = variableFromProto(v)
	}
	return out, rev, nil
}

// Export implements StateProvider.
func (l *LocalState) Export(ctx context.Context) (*Snapshot, error) {
	vars, rev, err := l.list(ctx, "")
	if err != nil {
		return nil, err
	}
	return &Snapshot{SessionID: l.session, Revision: rev, Variables: vars}, nil
}

// Import implements StateProvider.
func (l *LocalState) Import(ctx context.Context, s *Snapshot) error { return importSnapshot(ctx, l, s) }

// SupportsWatching implements StateProvider; it is true.
func (l *LocalState) SupportsWatching() bool { return true }

// WatchVariables implements StateProvider. The observer is registered, and
// the initial values taken, before it returns: every later write reaches the
// watcher.
func (l *LocalState) WatchVariables(ctx context.Context, identifiers []string, fn Watcher, opts ...WatchOption) (WatchRef, error) {
	if err := l.check(ctx); err != nil {
		return WatchRef{}, err
	}
	if fn == nil {
		return WatchRef{}, &kindError{kind: ErrInvalidArgument, msg: "WatchVariables: the watcher is nil"}
	}
	cfg := newWatchConfig(opts)
	sw, err := feed.Open(l.st, &pb.WatchVariablesRequest{
		SessionId: l.session, VariableIdentifiers: identifiers, IncludeInitialValues: cfg.initial,
		StartRevision: cfg.startRevision, Incarnation: cfg.incarnation, Where: cfg.where,
		Coalesce: cfg.coalesce, HeartbeatIntervalMs: heartbeatMs(cfg.heartbeat),
	}, feed.Hooks{})
	if err != nil {
		return WatchRef{}, fromStore(err)
	}
	wctx, cancel := watchContext(ctx)
	w := newWatch(identifiers, fn, cfg, l.log, watchStart{
		identOf: func(id string) (string, bool) {
			s := sw.Identifier(id)
			return s, s != ""
		},
		startsAfter: sw.StartsAfter(), incarnation: sw.Incarnation(),
		cancel: func() { cancel(); sw.Close() }, // Close removes the observer at once
	})
	return l.watches.start(wctx, w, localFeed{sw: sw, w: w})
}

// localFeed is LocalState's watchFeed: the store's own cursor, read in
// process; it never breaks, so there is nothing to resume.
type localFeed struct {
	sw *feed.Watch
	w  *watch
}

func (f localFeed) run(ctx context.Context) error {
	err := f.sw.Run(ctx, func(us []*pb.VariableUpdate) error {
		for _, u := range us {
			f.w.deliver(u)
			if u.GetLastInRevision() {
				f.w.complete(u.GetRevision())
			}
		}
		return nil
	})
	return fromStore(err)
}

// UnwatchVariables implements StateProvider. The store's observer is gone
// when it returns.
func (l *LocalState) UnwatchVariables(ref WatchRef) error { return l.watches.remove(ref) }

// ListWatchers implements StateProvider.
func (l *LocalState) ListWatchers() []WatchInfo { return l.watches.list() }

// Close implements StateProvider: it stops every watch and, when the
// LocalState made its own store, closes it.
func (l *LocalState) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.watches.closeAll()
	if l.ownStore {
		l.st.Close()
	}
	return nil
}

// Heartbeat marks the session used, restarting its TTL, and describes it,
// as BridgedState.Heartbeat does.
func (l *LocalState) Heartbeat(ctx context.Context) (*SessionInfo, error) {
	if err := l.check(ctx); err != nil {
		return nil, err
	}
	info, err := l.st.Heartbeat(l.session)
	if err != nil {
		return nil, fromStore(err)
	}
	return sessionFromProto(info.Proto()), nil
}

// CleanupSession removes the session from its store, ending every watch on
// it, and closes l, as BridgedState.CleanupSession does: l's own watches
// stop as Close stops them; those of other LocalStates on the same store
// end with ErrSessionClosed.
func (l *LocalState) CleanupSession(ctx context.Context) error {
	if err := l.check(ctx); err != nil {
		return err
	}
	l.watches.closeAll() // l's own watches end as stopped, not failed
	_, err := l.st.CleanupSession(l.session)
	_ = l.Close()
	return fromStore(err)
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

// heartbeatMs is a heartbeat interval for the wire; a positive interval
// under a millisecond stays positive (the feed raises it to its minimum).
func heartbeatMs(d time.Duration) int64 {
	if d > 0 {
		return max(d.Milliseconds(), 1)
	}
	return d.Milliseconds()
}
