// Package local is varbridge's StateProvider in process: State (the seed's
// LocalState) runs the same SessionStore and watch feed as the server,
// without a network, behind the same API and semantics as
// varbridge.BridgedState, down to revisions and error values.
//
// It is a package of its own so that a program that only talks to a server
// imports varbridge alone and links neither the store nor cel-go, which
// where filters compile with.
package local

import (
	"context"
	"errors"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/backend"
	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/testhooks"
	"github.com/varbridge/varbridge/internal/verr"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// State is a varbridge.StateProvider in process: it runs the same
// SessionStore and watch feed as the server, without a network. Each watch
// is fed by one goroutine that calls its watcher directly. local.State is
// the seed's LocalState. Its methods are those of the provider
// varbridge.BridgedState has too, on the in-process backend.
type State struct {
	p provider
}

// provider is varbridge's provider on a State's backend, as
// backend.NewProvider returns it.
type provider interface {
	varbridge.StateProvider
	Heartbeat(ctx context.Context) (*varbridge.SessionInfo, error)
	CleanupSession(ctx context.Context) error
}

var _ varbridge.StateProvider = (*State)(nil)

// New creates (or, with varbridge.WithSessionID, joins) a session in a
// private in-memory store, which Close closes. Of the varbridge.Options it
// reads WithSessionID, WithSessionTTL, WithSessionMetadata and WithLogger.
func New(opts ...varbridge.Option) (*State, error) { return newState(nil, opts) }

// newState is New on the store st when it is not nil, such as the one an
// in-process server serves (tests, through testhooks.LocalOnStore); Close
// then leaves it open.
func newState(st *store.Store, opts []varbridge.Option) (*State, error) {
	be := &storeBackend{st: st}
	p, err := backend.NewProvider(opts, func(s backend.Session) (backend.Backend, string, error) {
		if be.st == nil {
			be.st, be.own = store.New(store.Options{TTL: s.TTL}), true
		}
		info, _, err := be.st.CreateSession(s.ID, s.TTL, s.Metadata)
		if err != nil {
			be.Release()
			return nil, "", fromStore(err)
		}
		be.session = info.ID
		return be, info.ID, nil
	})
	if err != nil {
		return nil, err
	}
	return &State{p: p.(provider)}, nil
}

func init() {
	testhooks.LocalOnStore = func(st *store.Store, opts ...varbridge.Option) (*State, error) { return newState(st, opts) }
}

// SessionID implements varbridge.StateProvider.
func (s *State) SessionID() string { return s.p.SessionID() }

// Register implements varbridge.StateProvider.
func (s *State) Register(ctx context.Context, name string, t varbridge.Type, initial any, opts ...varbridge.WriteOption) (*varbridge.Variable, error) {
	return s.p.Register(ctx, name, t, initial, opts...)
}

// Get implements varbridge.StateProvider.
func (s *State) Get(ctx context.Context, identifier string) (*varbridge.Variable, error) {
	return s.p.Get(ctx, identifier)
}

// GetMany implements varbridge.StateProvider.
func (s *State) GetMany(ctx context.Context, identifiers []string) (map[string]*varbridge.Variable, []string, error) {
	return s.p.GetMany(ctx, identifiers)
}

// Set implements varbridge.StateProvider.
func (s *State) Set(ctx context.Context, identifier string, value any, opts ...varbridge.WriteOption) (*varbridge.Variable, error) {
	return s.p.Set(ctx, identifier, value, opts...)
}

// SetMany implements varbridge.StateProvider.
func (s *State) SetMany(ctx context.Context, updates map[string]any, opts ...varbridge.WriteOption) (map[string]*varbridge.Variable, error) {
	return s.p.SetMany(ctx, updates, opts...)
}

// Delete implements varbridge.StateProvider.
func (s *State) Delete(ctx context.Context, identifier string, opts ...varbridge.WriteOption) error {
	return s.p.Delete(ctx, identifier, opts...)
}

// List implements varbridge.StateProvider.
func (s *State) List(ctx context.Context, pattern string) ([]*varbridge.Variable, error) {
	return s.p.List(ctx, pattern)
}

// Export implements varbridge.StateProvider.
func (s *State) Export(ctx context.Context) (*varbridge.Snapshot, error) { return s.p.Export(ctx) }

// Import implements varbridge.StateProvider. It is not atomic: variables
// registered before a failure stay.
func (s *State) Import(ctx context.Context, snap *varbridge.Snapshot) error {
	return s.p.Import(ctx, snap)
}

// SupportsWatching implements varbridge.StateProvider; it is true.
func (s *State) SupportsWatching() bool { return s.p.SupportsWatching() }

// WatchVariables implements varbridge.StateProvider. The watch's observer
// is registered in the store, and the initial values taken, before it
// returns: every later write reaches the watcher. The watch carries no
// deadline; ctx ending cancels it.
func (s *State) WatchVariables(ctx context.Context, identifiers []string, w varbridge.Watcher, opts ...varbridge.WatchOption) (varbridge.WatchRef, error) {
	return s.p.WatchVariables(ctx, identifiers, w, opts...)
}

// UnwatchVariables implements varbridge.StateProvider. When it returns,
// the watch's observer is gone from the store.
func (s *State) UnwatchVariables(ref varbridge.WatchRef) error { return s.p.UnwatchVariables(ref) }

// ListWatchers implements varbridge.StateProvider.
func (s *State) ListWatchers() []varbridge.WatchInfo { return s.p.ListWatchers() }

// Close implements varbridge.StateProvider: it stops every watch and
// closes the State's own store. The session stays in a store it did not
// make.
func (s *State) Close() error { return s.p.Close() }

// Heartbeat marks the session used, restarting its TTL, and returns the
// session as the store describes it. A program that holds a session
// without calling it otherwise (and without a watch open on it, which keeps
// it alive by itself) calls Heartbeat within the TTL.
func (s *State) Heartbeat(ctx context.Context) (*varbridge.SessionInfo, error) {
	return s.p.Heartbeat(ctx)
}

// CleanupSession removes the session, ending every watch on it, and closes
// the State: its own watches stop as Close stops them; those of other
// States on the same store end with varbridge.ErrSessionClosed.
func (s *State) CleanupSession(ctx context.Context) error { return s.p.CleanupSession(ctx) }

// storeBackend is State's backend.Backend: a session in a store, the
// server's own code run in process.
type storeBackend struct {
	st      *store.Store
	own     bool // st was made for this State, and Release closes it
	session string
}

var _ backend.Backend = (*storeBackend)(nil)

// Ready is the context's error: the store does not look at it.
func (b *storeBackend) Ready(ctx context.Context) error { return ctx.Err() }

func (b *storeBackend) Register(_ context.Context, name string, t pb.VariableType, val *pb.Value, o backend.WriteOptions) (*pb.Variable, error) {
	v, _, err := b.st.Register(b.session, store.Register{
		Name: name, Type: t, Value: val, Constraints: o.Constraints, Metadata: o.Metadata, Source: o.Source,
	})
	return v, fromStore(err)
}

func (b *storeBackend) Get(_ context.Context, identifier string) (*pb.Variable, error) {
	v, _, err := b.st.Get(b.session, identifier)
	return v, fromStore(err)
}

func (b *storeBackend) GetMany(_ context.Context, identifiers []string) (*pb.GetVariablesResponse, error) {
	found, missing, rev, err := b.st.GetMany(b.session, identifiers)
	if err != nil {
		return nil, fromStore(err)
	}
	return &pb.GetVariablesResponse{Variables: found, Missing: missing, Revision: rev}, nil
}

func (b *storeBackend) Set(_ context.Context, identifier string, val *pb.Value, o backend.WriteOptions) (*pb.Variable, error) {
	res, err := b.st.Set(b.session, []store.Write{{Identifier: identifier, Value: val, ExpectedVersion: o.ExpectedVersion}}, o.Metadata, o.Source)
	if err != nil {
		return nil, fromStore(err)
	}
	return res.Variables[0], nil
}

func (b *storeBackend) SetMany(_ context.Context, updates map[string]*pb.Value, o backend.WriteOptions) (map[string]*pb.Variable, error) {
	writes, err := store.BatchWrites(updates, o.ExpectedVersions)
	if err != nil {
		return nil, fromStore(err)
	}
	res, err := b.st.Set(b.session, writes, o.Metadata, o.Source)
	if err != nil {
		return nil, fromStore(err)
	}
	out := make(map[string]*pb.Variable, len(res.Variables))
	for i, w := range writes {
		out[w.Identifier] = res.Variables[i]
	}
	return out, nil
}

func (b *storeBackend) Delete(_ context.Context, identifier string, o backend.WriteOptions) error {
	_, _, err := b.st.Delete(b.session, identifier, o.Metadata, o.Source)
	return fromStore(err)
}

func (b *storeBackend) List(_ context.Context, pattern string) (*pb.ListVariablesResponse, error) {
	vars, rev, err := b.st.List(b.session, pattern)
	if err != nil {
		return nil, fromStore(err)
	}
	return &pb.ListVariablesResponse{Variables: vars, Revision: rev}, nil
}

func (b *storeBackend) Heartbeat(context.Context) (*pb.Session, error) {
	info, err := b.st.Heartbeat(b.session)
	if err != nil {
		return nil, fromStore(err)
	}
	return info.Proto(), nil
}

// Cleanup ends the session's watches in the store; those of other States
// on the same store end with ErrSessionClosed.
func (b *storeBackend) Cleanup(context.Context) error {
	_, err := b.st.CleanupSession(b.session)
	return fromStore(err)
}

// Release closes the store when the State made its own.
func (b *storeBackend) Release() {
	if b.own {
		b.st.Close()
	}
}

// OpenWatch registers the watch's observer in the store, and takes its
// initial values, through the very code the server's watches run
// (feed.Open). The store's observer is gone when UnwatchVariables returns.
func (b *storeBackend) OpenWatch(ctx context.Context, identifiers []string, cfg backend.WatchConfig, build func(backend.Start) backend.Sink) (backend.Feed, error) {
	sw, err := feed.Open(b.st, &pb.WatchVariablesRequest{
		SessionId: b.session, VariableIdentifiers: identifiers, IncludeInitialValues: cfg.Initial,
		StartRevision: cfg.StartRevision, Incarnation: cfg.Incarnation, Where: cfg.Where,
		Coalesce: cfg.Coalesce, HeartbeatIntervalMs: backend.HeartbeatMs(cfg.Heartbeat),
	}, feed.Hooks{})
	if err != nil {
		return nil, fromStore(err)
	}
	wctx, cancel := backend.WatchContext(ctx)
	w := build(backend.Start{
		IdentOf: func(id string) (string, bool) {
			s := sw.Identifier(id)
			return s, s != ""
		},
		StartsAfter: sw.StartsAfter(), Incarnation: sw.Incarnation(),
		Ctx: wctx, Cancel: func() { cancel(); sw.Close() }, // Close removes the observer at once
	})
	return storeFeed{sw: sw, w: w}, nil
}

// storeFeed is State's backend.Feed: the store's own cursor, read in
// process; it never breaks, so there is nothing to resume.
type storeFeed struct {
	sw *feed.Watch
	w  backend.Sink
}

func (f storeFeed) Run(ctx context.Context) error {
	err := f.sw.Run(ctx, func(us []*pb.VariableUpdate) error {
		for _, u := range us {
			f.w.Deliver(u)
			if u.GetLastInRevision() {
				f.w.Complete(u.GetRevision())
			}
		}
		return nil
	})
	return fromStore(err)
}

func (storeFeed) Discard() {} // the watch's Cancel closes the store's watch

// fromStore gives State's errors: the store's own (internal/verr's types
// and sentinels, the very values varbridge exports, as they are), and the
// watch filter's two, which a BridgedState hears as a limit and an invalid
// argument.
func fromStore(err error) error {
	var fc *where.CostError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fc): // as BridgedState hears it: FILTER_TOO_COSTLY is a limit
		return verr.Limit(fc.Limit, err.Error())
	case errors.Is(err, where.ErrInvalid):
		return invalidWhere{err}
	}
	return err
}

// invalidWhere is a where expression that does not compile: it matches
// varbridge.ErrInvalidArgument, as BridgedState's INVALID_ARGUMENT does,
// and unwraps to the compiler's error.
type invalidWhere struct{ err error }

func (e invalidWhere) Error() string        { return e.err.Error() }
func (e invalidWhere) Is(target error) bool { return target == varbridge.ErrInvalidArgument }
func (e invalidWhere) Unwrap() error        { return e.err }
