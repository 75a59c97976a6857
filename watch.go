package varbridge

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varbridge/varbridge/internal/backend"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// watch is the state the provider keeps per watch, whatever its backend,
// and the one place that turns a *pb.VariableUpdate into a Watcher call:
// identifier mapping, filter, panic recovery and statistics. It is the
// backend.Sink its feed delivers into: exactly one goroutine (run, reading
// the watch's feed) calls Deliver and Complete.
type watch struct {
	ref         WatchRef
	identifiers []string
	cfg         watchConfig
	fn          Watcher
	log         *slog.Logger
	started     time.Time
	// identOf maps a variable id to the identifier the caller passed for
	// it; a watch of every variable has none and uses the variable's name.
	identOf func(varID string) (string, bool)

	received, filtered, errors, panics, reconnects, failovers, duplicates atomic.Int64
	// lastRev is the watch's progress, recorded in this one place
	// (Complete): the last revision whose updates were all delivered. It is
	// what ListWatchers reports and what a BridgedState stream resumes after
	// (lastRev+1). -1 only while a BridgedState watch waits for the first
	// revision of a new session incarnation (reported as 0).
	lastRev atomic.Int64
	// incarnation is the session incarnation of the updates being delivered
	// (set by the owning goroutine, read by ListWatchers too).
	incarnation atomic.Pointer[string]

	stopped atomic.Bool     // set by unwatch: no new watcher call starts
	ctx     context.Context // the watch's lifetime (backend.WatchContext), read by run
	cancel  context.CancelFunc
	done    chan struct{} // closed when the owning goroutine returns

	mu      sync.Mutex
	inCall  bool // the owning goroutine is running the caller's code
	alive   bool
	reason  string
	lastErr error
	failErr error // the error that ended the watch, for the done handlers
}

var _ backend.Sink = (*watch)(nil)

// newWatch builds a watch with everything it needs, start being what its
// backend learnt while opening it (stop and run call its Cancel); nothing
// is set on it afterwards but what its owning goroutine records as it goes.
func newWatch(identifiers []string, fn Watcher, cfg watchConfig, log *slog.Logger, start backend.Start) *watch {
	w := &watch{
		identifiers: slices.Clone(identifiers), cfg: cfg, fn: fn, log: log, identOf: start.IdentOf,
		ctx: start.Ctx, cancel: start.Cancel, started: time.Now(), alive: true, done: make(chan struct{}),
	}
	if w.ctx == nil {
		w.ctx = context.Background()
	}
	if w.cancel == nil {
		w.cancel = func() {}
	}
	if start.Incarnation != "" {
		w.setIncarnation(start.Incarnation)
	}
	w.lastRev.Store(start.StartsAfter)
	return w
}

// run is a watch's owning goroutine: it reads f (the in-process store's
// cursor, or BridgedState's streamConsumer) until it stops, then marks the
// watch ended (on purpose) or failed, releases the feed and runs the done
// handlers. A new way in (HTTP, etcd) is one more backend.Feed; the watch
// rules (identifiers, filter, panics, progress, statistics, lifecycle)
// stay here.
func (w *watch) run(f backend.Feed) {
	ctx := w.ctx
	defer close(w.done)
	defer w.exit()
	defer w.cancel()
	err := f.Run(ctx)
	if ctx.Err() != nil || w.stopped.Load() {
		w.end(ctx.Err())
	} else {
		w.fail(err)
	}
}

// identifier returns the identifier the caller passed for an update.
func (w *watch) identifier(u *pb.VariableUpdate) string {
	if w.identOf != nil {
		if id, ok := w.identOf(u.GetVariableId()); ok {
			return id
		}
	}
	if n := u.GetVariable().GetName(); n != "" {
		return n
	}
	return u.GetVariableName()
}

// Deliver hands one update to the watcher; heartbeats, and a resync of a
// watch whose variables are all gone, call nothing. It records no progress:
// the feed calls Complete once a revision's updates were all delivered.
func (w *watch) Deliver(u *pb.VariableUpdate) {
	ut := u.GetUpdateType()
	if ut == pb.UpdateType_UPDATE_TYPE_HEARTBEAT || u.GetVariableId() == "" {
		return
	}
	w.received.Add(1)
	v := u.GetVariable()
	meta := UpdateMeta{
		VariableID: u.GetVariableId(), Name: u.GetVariableName(), Type: TypeFromProto(v.GetType()),
		Version: v.GetVersion(), Revision: u.GetRevision(), Source: u.GetUpdateSource(),
		Metadata: maps.Clone(u.GetUpdateMetadata()), Timestamp: asTime(u.GetTimestamp()),
		Incarnation: w.currentIncarnation(),
		Initial:     ut == pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE,
		Resync:      ut == pb.UpdateType_UPDATE_TYPE_RESYNC,
		Deleted:     ut == pb.UpdateType_UPDATE_TYPE_DELETED,
	}
	if meta.Name == "" {
		meta.Name = v.GetName()
	}
	var old, cur any
	if u.OldValue != nil {
		old = FromProto(u.OldValue)
	}
	if !meta.Deleted && v != nil {
		cur = FromProto(v.GetValue())
	}
	ident := w.identifier(u)
	if ut == pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE && w.cfg.filter != nil && !w.pass(ident, old, cur) {
		w.filtered.Add(1)
		return
	}
	w.call(ident, old, cur, meta)
}

// setIncarnation records the session incarnation of the updates that follow.
func (w *watch) setIncarnation(inc string) { w.incarnation.Store(&inc) }

func (w *watch) currentIncarnation() string {
	if p := w.incarnation.Load(); p != nil {
		return *p
	}
	return ""
}

// exit is the last thing the owning goroutine does: it runs the done
// handlers (WithDoneHandler), after the last watcher call has returned.
func (w *watch) exit() {
	if w.cfg.onDone == nil {
		return
	}
	w.mu.Lock()
	err := w.failErr
	w.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			w.panics.Add(1)
			w.log.Error("varbridge: watch done handler panicked", "watch", w.ref.String(), "panic", fmt.Sprint(p))
		}
	}()
	w.cfg.onDone(err)
}

// Complete records that every update through rev was delivered (filtered
// ones count as delivered): the watch's progress, in this one place.
func (w *watch) Complete(rev int64) {
	if rev > w.lastRev.Load() {
		w.lastRev.Store(rev)
	}
}

// resumeAt is the first revision not yet completely delivered.
func (w *watch) resumeAt() int64 { return w.lastRev.Load() + 1 }

// restart forgets the watch's progress: the session was created again
// (another incarnation), and its revisions start over.
func (w *watch) restart() { w.lastRev.Store(-1) }

// pass runs the filter; a panic counts as "notify".
func (w *watch) pass(ident string, old, cur any) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			w.panics.Add(1)
			w.log.Error("varbridge: watch filter panicked; delivering the update",
				"watch", w.ref.String(), "identifier", ident, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			ok = true
		}
	}()
	if !w.enter() {
		return true
	}
	defer w.leave()
	return w.cfg.filter(old, cur)
}

// enter marks the start of a call into the caller's code (watcher, filter,
// error handler); false when the watch was stopped, and then nothing runs.
// Checking and marking under one lock is what lets stop promise that no
// call starts after it returns.
func (w *watch) enter() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped.Load() {
		return false
	}
	w.inCall = true
	return true
}

func (w *watch) leave() {
	w.mu.Lock()
	w.inCall = false
	w.mu.Unlock()
}

// call runs the watcher; a panic is logged and counted and the watch goes on.
func (w *watch) call(ident string, old, cur any, meta UpdateMeta) {
	defer func() {
		if p := recover(); p != nil {
			w.panics.Add(1)
			w.log.Error("varbridge: watcher panicked; the watch goes on",
				"watch", w.ref.String(), "identifier", ident, "revision", meta.Revision,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	if !w.enter() {
		return
	}
	defer w.leave()
	w.fn(ident, old, cur, meta)
}

// noteError records a stream error that the watch survives.
func (w *watch) noteError(err error) {
	w.errors.Add(1)
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

// end marks the watch stopped on purpose: unwatched, or its context ended.
func (w *watch) end(ctxErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.alive {
		return
	}
	w.alive = false
	switch {
	case w.stopped.Load():
		w.reason = "unwatched"
	case ctxErr != nil:
		w.reason = "context ended: " + ctxErr.Error()
	default:
		w.reason = "stopped"
	}
}

// fail marks the watch stopped by err and reports it to the error handler.
func (w *watch) fail(err error) {
	w.mu.Lock()
	if !w.alive {
		w.mu.Unlock()
		return
	}
	w.alive = false
	w.reason, w.lastErr, w.failErr = err.Error(), err, err
	w.mu.Unlock()
	w.log.Warn("varbridge: watch stopped", "watch", w.ref.String(), "identifiers", w.identifiers, "err", err)
	if w.cfg.onError != nil {
		w.safeOnError(err)
	}
}

func (w *watch) safeOnError(err error) {
	defer func() {
		if p := recover(); p != nil {
			w.panics.Add(1)
			w.log.Error("varbridge: watch error handler panicked", "watch", w.ref.String(), "panic", fmt.Sprint(p))
		}
	}()
	if !w.enter() {
		return
	}
	defer w.leave()
	w.cfg.onError(err)
}

// stop ends the watch on behalf of UnwatchVariables or Close: no call of
// the caller's code starts afterwards. When none is running it waits for
// the owning goroutine to return; when one is (a watcher unwatching itself,
// or another goroutine racing a running call) it cannot wait, since the
// running call may be the caller, and the goroutine returns right after.
// Before the wait it runs the onStop hook: a watcher of the channel form
// may be blocked on a send that only the hook releases.
func (w *watch) stop() {
	w.mu.Lock()
	w.stopped.Store(true)
	running := w.inCall
	w.mu.Unlock()
	w.cancel()
	if w.cfg.onStop != nil {
		w.cfg.onStop()
	}
	if !running {
		<-w.done
	}
}

func (w *watch) info() WatchInfo {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatchInfo{
		Ref: w.ref, Identifiers: slices.Clone(w.identifiers), Alive: w.alive, Reason: w.reason,
		UpdatesReceived: w.received.Load(), UpdatesFiltered: w.filtered.Load(),
		Errors: w.errors.Load(), Panics: w.panics.Load(), Reconnects: w.reconnects.Load(), Failovers: w.failovers.Load(), DuplicatesSkipped: w.duplicates.Load(),
		StartedAt: w.started, Uptime: time.Since(w.started), LastRevision: max(w.lastRev.Load(), 0), LastError: w.lastErr,
		Incarnation: w.currentIncarnation(),
	}
}

// watchSet is a provider's registry of watches.
type watchSet struct {
	mu      sync.Mutex
	next    uint64
	closed  bool
	watches map[WatchRef]*watch
}

// add registers w and gives it a ref; false when the provider is closed.
func (s *watchSet) add(w *watch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.watches == nil {
		s.watches = map[WatchRef]*watch{}
	}
	s.next++
	w.ref = WatchRef{id: s.next}
	s.watches[w.ref] = w
	return true
}

// start registers w and runs its goroutine on f; ErrClosed (and w is
// released) when the provider is closed.
func (s *watchSet) start(w *watch, f backend.Feed) (WatchRef, error) {
	if !s.add(w) {
		w.cancel()
		f.Discard()
		return WatchRef{}, ErrClosed
	}
	go w.run(f)
	return w.ref, nil
}

// remove stops and forgets the watch ref names.
func (s *watchSet) remove(ref WatchRef) error {
	s.mu.Lock()
	w, ok := s.watches[ref]
	delete(s.watches, ref)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownWatch, ref)
	}
	w.stop()
	return nil
}

func (s *watchSet) list() []WatchInfo {
	s.mu.Lock()
	ws := make([]*watch, 0, len(s.watches))
	for _, w := range s.watches {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	out := make([]WatchInfo, len(ws))
	for i, w := range ws {
		out[i] = w.info()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.id < out[j].Ref.id })
	return out
}

// closeAll stops every watch and refuses new ones.
func (s *watchSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	ws := s.watches
	s.watches = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}
