// Package variables is the high-level watch API over any
// varbridge.StateProvider: Watch with initial values on by default, a
// client-side filter, per-variable debounce (trailing edge: the last value
// is always delivered) and batch windows.
package variables

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varbridge/varbridge"
)

// Option configures Watch.
type Option func(*config)

type config struct {
	initial     bool
	filter      func(old, new any) bool
	debounce    time.Duration
	batchWindow time.Duration
	batchFn     func([]varbridge.Update)
	watchOpts   []varbridge.WatchOption
	log         *slog.Logger
}

// WithInitial delivers each variable's current value first (default true).
func WithInitial(on bool) Option { return func(c *config) { c.initial = on } }

// WithFilter drops value changes for which f(old, new) is false (see
// varbridge.WithFilter).
func WithFilter(f func(old, new any) bool) Option { return func(c *config) { c.filter = f } }

// WithDebounce delivers a variable's updates only once it has been quiet
// for d: one call with the old value from before the quiet period began and
// the last new value and meta. The last value is always delivered, also
// when the watch stops or ends.
func WithDebounce(d time.Duration) Option { return func(c *config) { c.debounce = d } }

// WithBatch collects updates for window after the first one arrives and
// hands them to fn together, in order; the Watcher passed to Watch must
// then be nil. Collected updates are delivered when the watch stops too.
func WithBatch(window time.Duration, fn func([]varbridge.Update)) Option {
	return func(c *config) { c.batchWindow, c.batchFn = window, fn }
}

// WithWatchOptions passes options to the provider's WatchVariables
// (WithWhere, WithErrorHandler, WithBackoff, ...).
func WithWatchOptions(opts ...varbridge.WatchOption) Option {
	return func(c *config) { c.watchOpts = append(c.watchOpts, opts...) }
}

// WithLogger sets where panics of fn are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Subscription is a running Watch.
type Subscription struct {
	p        varbridge.StateProvider
	ref      varbridge.WatchRef
	stopOnce sync.Once
	stopErr  error
	unhook   func() bool

	// Set when updates go through the debounce/batch loop.
	in      chan varbridge.Update
	quit    chan struct{} // closed by Stop once the underlying watch is gone
	abandon chan struct{} // closed by a Stop from inside a callback
	ended   chan struct{} // closed when the underlying watch ends, for any reason
	done    chan struct{} // closed when the loop returns
	inCall  atomic.Bool   // the loop is running a callback
}

// Ref returns the provider's ref for the underlying watch.
func (s *Subscription) Ref() varbridge.WatchRef { return s.ref }

// Stop ends the watch and delivers what debounce and batching still hold
// before it returns (called from inside a callback, it returns at once and
// they are delivered after the callback). It is idempotent.
func (s *Subscription) Stop() error {
	s.stopOnce.Do(func() {
		s.unhook()
		if s.quit == nil {
			s.stopErr = s.p.UnwatchVariables(s.ref)
			return
		}
		// While the loop runs a callback, this Stop may be that callback:
		// waiting for the loop would deadlock, so let it finish on its own.
		fromLoop := s.inCall.Load()
		if fromLoop {
			close(s.abandon) // the loop is busy here: do not wait on it
		}
		// The loop keeps taking updates until the watch's goroutine is gone.
		s.stopErr = s.p.UnwatchVariables(s.ref)
		close(s.quit)
		if !fromLoop {
			<-s.done
		}
	})
	return s.stopErr
}

// Watch watches identifiers on p (none: every variable) and calls fn for
// each update, sequentially and in order, until ctx ends or Stop. Unlike
// WatchVariables it delivers initial values unless WithInitial(false).
func Watch(ctx context.Context, p varbridge.StateProvider, identifiers []string, fn varbridge.Watcher, opts ...Option) (*Subscription, error) {
	c := config{initial: true, log: slog.Default()}
	for _, opt := range opts {
		opt(&c)
	}
	if (fn == nil) == (c.batchFn == nil) {
		return nil, fmt.Errorf("%w: variables.Watch needs either a Watcher or WithBatch, not both or neither", varbridge.ErrInvalidArgument)
	}
	if c.batchFn != nil && c.batchWindow <= 0 {
		return nil, fmt.Errorf("%w: WithBatch needs a positive window, got %v", varbridge.ErrInvalidArgument, c.batchWindow)
	}
	wopts := []varbridge.WatchOption{varbridge.WithInitialValues(c.initial)}
	if c.filter != nil {
		wopts = append(wopts, varbridge.WithFilter(c.filter))
	}
	wopts = append(wopts, c.watchOpts...)
	s := &Subscription{p: p}
	watcher := fn
	if c.debounce > 0 || c.batchFn != nil {
		s.in = make(chan varbridge.Update, 256)
		s.quit, s.abandon = make(chan struct{}), make(chan struct{})
		s.ended, s.done = make(chan struct{}), make(chan struct{})
		// Not only an error: the provider's Close ends the watch too, and
		// the loop must then deliver what it holds and go, not wait for a
		// Stop or a context that may never come.
		wopts = append(wopts, varbridge.WithDoneHandler(func(error) { close(s.ended) }))
		watcher = func(id string, old, new any, meta varbridge.UpdateMeta) {
			select {
			case s.in <- varbridge.Update{Identifier: id, Old: old, New: new, Meta: meta}:
			case <-s.abandon:
			case <-ctx.Done():
			}
		}
	}
	ref, err := p.WatchVariables(ctx, identifiers, watcher, wopts...)
	if err != nil {
		return nil, err
	}
	s.ref = ref
	if s.in != nil {
		l := &loop{s: s, c: &c, fn: fn, pending: map[string]*pending{}}
		go l.run(ctx)
	}
	// Ending ctx removes the watch from the provider, as Stop does.
	s.unhook = context.AfterFunc(ctx, func() { _ = s.Stop() })
	return s, nil
}

// pending is a debounced variable's merged update.
type pending struct {
	u   varbridge.Update
	due time.Time
}

// loop is the goroutine that owns debounce and batch state.
type loop struct {
	s       *Subscription
	c       *config
	fn      varbridge.Watcher
	pending map[string]*pending
	order   []string // pending identifiers in arrival order
	batch   []varbridge.Update
	batchAt time.Time // when the open batch window closes
}

func (l *loop) run(ctx context.Context) {
	defer close(l.s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if next, ok := l.nextDue(); ok {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		select {
		case u := <-l.s.in:
			l.add(u)
		case <-timer.C:
			l.fire(time.Now())
		case <-l.s.quit:
			l.finish()
			return
		case <-l.s.ended:
			l.finish()
			return
		case <-ctx.Done():
			l.finish()
			return
		}
	}
}

// finish delivers everything still queued or held back.
func (l *loop) finish() {
	for len(l.s.in) > 0 {
		l.add(<-l.s.in)
	}
	l.fire(time.Time{}) // the zero time: everything is due
}

func (l *loop) nextDue() (time.Time, bool) {
	var next time.Time
	for _, id := range l.order {
		if d := l.pending[id].due; next.IsZero() || d.Before(next) {
			next = d
		}
	}
	if len(l.batch) > 0 && (next.IsZero() || l.batchAt.Before(next)) {
		next = l.batchAt
	}
	return next, !next.IsZero()
}

func (l *loop) add(u varbridge.Update) {
	if l.c.debounce <= 0 {
		l.emit(u)
		return
	}
	due := time.Now().Add(l.c.debounce)
	if p := l.pending[u.Identifier]; p != nil {
		p.u.New, p.u.Meta, p.due = u.New, u.Meta, due // keep the old value from before the burst
		return
	}
	l.pending[u.Identifier] = &pending{u: u, due: due}
	l.order = append(l.order, u.Identifier)
}

// fire delivers the debounced updates due at now (all, for the zero time)
// and the batch if its window closed.
func (l *loop) fire(now time.Time) {
	all := now.IsZero()
	kept := l.order[:0]
	for _, id := range l.order {
		p := l.pending[id]
		if all || !p.due.After(now) {
			delete(l.pending, id)
			l.emit(p.u)
		} else {
			kept = append(kept, id)
		}
	}
	l.order = kept
	if len(l.batch) > 0 && (all || !l.batchAt.After(now)) {
		b := l.batch
		l.batch = nil
		l.call(func() { l.c.batchFn(b) })
	}
}

func (l *loop) emit(u varbridge.Update) {
	if l.c.batchFn == nil {
		l.call(func() { l.fn(u.Identifier, u.Old, u.New, u.Meta) })
		return
	}
	if len(l.batch) == 0 {
		l.batchAt = time.Now().Add(l.c.batchWindow)
	}
	l.batch = append(l.batch, u)
}

// call runs a callback; a panic is logged and the watch goes on.
func (l *loop) call(f func()) {
	l.s.inCall.Store(true)
	defer l.s.inCall.Store(false)
	defer func() {
		if p := recover(); p != nil {
			l.c.log.Error("variables: watch callback panicked; the watch goes on",
				"watch", l.s.ref.String(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	f()
}
