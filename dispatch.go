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

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// watch is the state both providers keep per watch, and the one place that
// turns a *pb.VariableUpdate into a Watcher call: identifier mapping,
// filter, panic recovery and statistics. Exactly one goroutine (the feed for
// LocalState, the StreamConsumer for BridgedState) calls deliver.
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

	received, filtered, errors, panics, reconnects, duplicates, lastRev atomic.Int64
	// incarnation is the session incarnation of the updates being delivered
	// (set by the owning goroutine, read by ListWatchers too).
	incarnation atomic.Pointer[string]

	stopped atomic.Bool // set by unwatch: no new watcher call starts
	cancel  context.CancelFunc
	done    chan struct{} // closed when the owning goroutine returns

	mu      sync.Mutex
	inCall  bool // the owning goroutine is running the caller's code
	alive   bool
	reason  string
	lastErr error
	failErr error // the error that ended the watch, for the done handlers
}

func newWatch(identifiers []string, fn Watcher, cfg watchConfig, log *slog.Logger) *watch {
	return &watch{
		identifiers: slices.Clone(identifiers), cfg: cfg, fn: fn, log: log,
		started: time.Now(), alive: true, done: make(chan struct{}),
	}
}

// watchContext derives the watch's lifetime from the caller's context
// without its deadline: a deadline on a gRPC stream would become a
// grpc-timeout that kills the watch later. Ending ctx still ends the watch.
func watchContext(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return wctx, func() { stop(); cancel() }
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

// deliver hands one update to the watcher. Heartbeats only advance the
// watch's revision.
func (w *watch) deliver(u *pb.VariableUpdate) {
	ut := u.GetUpdateType()
	if ut == pb.UpdateType_UPDATE_TYPE_HEARTBEAT || u.GetVariableId() == "" {
		// A heartbeat, or a resync of a watch whose variables are all gone.
		w.advance(u)
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
		w.advance(u)
		return
	}
	w.call(ident, old, cur, meta)
	w.advance(u)
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

// advance records the revision an update completes: the last update of a
// revision (flagged by the feed) or a heartbeat.
func (w *watch) advance(u *pb.VariableUpdate) {
	if r := u.GetRevision(); u.GetLastInRevision() && r > w.lastRev.Load() {
		w.lastRev.Store(r)
	}
}

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
		Errors: w.errors.Load(), Panics: w.panics.Load(), Reconnects: w.reconnects.Load(), DuplicatesSkipped: w.duplicates.Load(),
		StartedAt: w.started, Uptime: time.Since(w.started), LastRevision: w.lastRev.Load(), LastError: w.lastErr,
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
