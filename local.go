package varbridge

import (
	"context"
	"errors"
	"time"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// LocalState is a StateProvider in process: it runs the same SessionStore
// and watch feed as the server, without a network. Each watch is fed by one
// goroutine that calls its watcher directly. It is the in-process backend
// of the provider both states share.
type LocalState struct {
	provider
	st       *store.Store
	ownStore bool
}

var _ StateProvider = (*LocalState)(nil)

// NewLocalState creates (or, with WithSessionID, joins) a session in a
// private in-memory store, or in the store given by withStore (tests).
func NewLocalState(opts ...Option) (*LocalState, error) {
	o := newOptions(opts)
	l := &LocalState{st: o.store}
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
	l.provider = provider{be: l, session: info.ID, log: o.log}
	return l, nil
}

func (l *LocalState) ready(ctx context.Context) error { return ctx.Err() }

func (l *LocalState) register(_ context.Context, name string, t pb.VariableType, val *pb.Value, o writeOptions) (*pb.Variable, error) {
	v, _, err := l.st.Register(l.session, store.Register{
		Name: name, Type: t, Value: val, Constraints: o.constraints.proto(), Metadata: o.metadata, Source: o.source,
	})
	return v, fromStore(err)
}

func (l *LocalState) get(_ context.Context, identifier string) (*pb.Variable, error) {
	v, _, err := l.st.Get(l.session, identifier)
	return v, fromStore(err)
}

func (l *LocalState) getMany(_ context.Context, identifiers []string) (*pb.GetVariablesResponse, error) {
	found, missing, rev, err := l.st.GetMany(l.session, identifiers)
	if err != nil {
		return nil, fromStore(err)
	}
	return &pb.GetVariablesResponse{Variables: found, Missing: missing, Revision: rev}, nil
}

func (l *LocalState) set(_ context.Context, identifier string, val *pb.Value, o writeOptions) (*pb.Variable, error) {
	res, err := l.st.Set(l.session, []store.Write{{Identifier: identifier, Value: val, ExpectedVersion: o.expectedVersion}}, o.metadata, o.source)
	if err != nil {
		return nil, fromStore(err)
	}
	return res.Variables[0], nil
}

func (l *LocalState) setMany(_ context.Context, updates map[string]*pb.Value, o writeOptions) (map[string]*pb.Variable, error) {
	writes, err := store.BatchWrites(updates, o.expectedVersions)
	if err != nil {
		return nil, fromStore(err)
	}
	res, err := l.st.Set(l.session, writes, o.metadata, o.source)
	if err != nil {
		return nil, fromStore(err)
	}
	out := make(map[string]*pb.Variable, len(res.Variables))
	for i, w := range writes {
		out[w.Identifier] = res.Variables[i]
	}
	return out, nil
}

func (l *LocalState) delete(_ context.Context, identifier string, o writeOptions) error {
	_, _, err := l.st.Delete(l.session, identifier, o.metadata, o.source)
	return fromStore(err)
}

func (l *LocalState) list(_ context.Context, pattern string) (*pb.ListVariablesResponse, error) {
	vars, rev, err := l.st.List(l.session, pattern)
	if err != nil {
		return nil, fromStore(err)
	}
	return &pb.ListVariablesResponse{Variables: vars, Revision: rev}, nil
}

func (l *LocalState) heartbeat(context.Context) (*pb.Session, error) {
	info, err := l.st.Heartbeat(l.session)
	if err != nil {
		return nil, fromStore(err)
	}
	return info.Proto(), nil
}

// cleanup ends the session's watches in the store; those of other
// LocalStates on the same store end with ErrSessionClosed.
func (l *LocalState) cleanup(context.Context) error {
	_, err := l.st.CleanupSession(l.session)
	return fromStore(err)
}

// release closes the store when the LocalState made its own.
func (l *LocalState) release() {
	if l.ownStore {
		l.st.Close()
	}
}

// openWatch registers the watch's observer in the store, and takes its
// initial values, through the very code the server's watches run
// (feed.Open). The store's observer is gone when UnwatchVariables returns.
func (l *LocalState) openWatch(ctx context.Context, identifiers []string, cfg watchConfig, build func(watchStart) *watch) (*watch, watchFeed, error) {
	sw, err := feed.Open(l.st, &pb.WatchVariablesRequest{
		SessionId: l.session, VariableIdentifiers: identifiers, IncludeInitialValues: cfg.initial,
		StartRevision: cfg.startRevision, Incarnation: cfg.incarnation, Where: cfg.where,
		Coalesce: cfg.coalesce, HeartbeatIntervalMs: heartbeatMs(cfg.heartbeat),
	}, feed.Hooks{})
	if err != nil {
		return nil, nil, fromStore(err)
	}
	wctx, cancel := watchContext(ctx)
	w := build(watchStart{
		identOf: func(id string) (string, bool) {
			s := sw.Identifier(id)
			return s, s != ""
		},
		startsAfter: sw.StartsAfter(), incarnation: sw.Incarnation(),
		ctx: wctx, cancel: func() { cancel(); sw.Close() }, // Close removes the observer at once
	})
	return w, localFeed{sw: sw, w: w}, nil
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

func (localFeed) discard() {} // the watch's cancel closes the store's watch

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
