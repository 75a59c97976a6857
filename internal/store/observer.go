package store

import (
	"fmt"
	"slices"
	"sort"
	"time"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// This file is the ObserverManager: watches are registered on their session
// under its lock, together with the snapshot, so no change can fall between
// the snapshot and the stream. A commit wakes the watches it concerns through
// a one-slot channel and never waits for them; each watch's owner then reads
// the shared history from its own cursor.

// WatchOptions configure Store.Watch.
type WatchOptions struct {
	// StartRevision > 0 resumes: every change with revision >= it is
	// delivered (RESYNC when history no longer holds them). Initial values
	// are not taken then.
	StartRevision int64
	// IncludeInitial takes a snapshot of the watched variables at the
	// registration revision.
	IncludeInitial bool
	// Incarnation is the session incarnation StartRevision was taken in.
	// Another one means another history: the watch starts with a Resync.
	// Empty with StartRevision > 0 means the caller cannot say, and then a
	// StartRevision ahead of the session fails.
	Incarnation string
	// Where and Coalesce are the feed's filter and coalescing: the store
	// only reports them (Watches).
	Where    string
	Coalesce bool
	// Waker, if set, is signalled instead of the watch's own Wake channel
	// (which it then lacks): one owner drives many watches (feed.Group).
	Waker *Waker
}

// Watch is one observer of a session's variables. One goroutine owns it: it
// waits on Wake, Done and its own timers, and calls Poll.
type Watch struct {
	sess   *session
	all    bool
	idents identSet // variable id -> the identifier as first passed

	initial []*pb.Variable
	snapRev int64
	// incarnation is the session's; the feed sends it to the client.
	incarnation string
	// named and opts describe the watch to Watches.
	named   []string
	opts    WatchOptions
	created time.Time

	wake  chan struct{} // nil with a Waker
	waker *Waker
	// queued: the watch is in waker's ready list; guarded by waker.mu.
	queued bool
	// done is made by the first Done (most owners never ask: it would be
	// a channel per idle watch); guarded by sess.mu, as ended is.
	done  chan struct{}
	ended bool // the session ended the watch; err says why
	// first: the session had no other watch when this one was registered.
	first bool

	// Guarded by sess.mu. Writers (holding the write lock) set pending; the
	// owner reads and clears it, and moves next, under the read lock, which
	// excludes writers while other watches poll concurrently.
	next    int64 // the first revision not yet returned by Poll
	pending int64 // the first concerning revision not yet polled; 0 if none
	resync  bool  // the next Poll returns a Resync (a resume from another incarnation)
	closed  bool
	err     error
}

// Watch registers an observer of the identified variables (ids or names; none
// means every variable, including ones registered later). Identifiers that
// name nothing fail the call, all of them listed.
func (st *Store) Watch(sessionID string, identifiers []string, opts WatchOptions) (w *Watch, err error) {
	if st.sh == nil { // one server: no copy to read again, and no closure
		return st.watchSession(sessionID, identifiers, opts)
	}
	err = st.reread(func() error { w, err = st.watchSession(sessionID, identifiers, opts); return err })
	return w, err
}

func (st *Store) watchSession(sessionID string, identifiers []string, opts WatchOptions) (*Watch, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, err
	}
	if len(identifiers) > st.opts.MaxWatchIdentifiers {
		return nil, &LimitError{Limit: "max_watch_identifiers", Max: int64(st.opts.MaxWatchIdentifiers), What: fmt.Sprintf("a watch names %d variables", len(identifiers))}
	}
	if opts.StartRevision < 0 {
		return nil, fieldErr("start_revision", "must not be negative, got %d", opts.StartRevision)
	}
	sess.mu.Lock()
	w, err := st.watch(sess, identifiers, opts)
	if err == nil && w.first {
		st.follow(sess)
	}
	sess.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if w.first {
		sess.saveExpiry(true) // its deadline stops counting until the watches end
	}
	if w.snapRev > 0 {
		// The snapshot (or, resuming, the revision the watch starts after)
		// must be durable before anyone sees it.
		if err := sess.settleRead(w.snapRev); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// watch is Watch's part under sess.mu.
func (st *Store) watch(sess *session, identifiers []string, opts WatchOptions) (*Watch, error) {
	if sess.closed {
		return nil, sess.goneErr()
	}
	if len(sess.watches) >= st.opts.MaxWatches {
		return nil, &LimitError{Limit: "max_watches_per_session", Max: int64(st.opts.MaxWatches), What: fmt.Sprintf("session %q has %d watches", sess.id, len(sess.watches))}
	}
	vars, err := sess.resolve(identifiers)
	if err != nil {
		return nil, err
	}
	rev := sess.revision
	otherHistory := opts.StartRevision > 0 && opts.Incarnation != "" && opts.Incarnation != sess.incarnation
	if !otherHistory && opts.StartRevision > rev+1 {
		return nil, &OutOfRangeError{Session: sess.id, StartRevision: opts.StartRevision, SessionRevision: rev, Incarnation: sess.incarnation}
	}
	w := &Watch{
		sess: sess, all: len(identifiers) == 0, idents: newIdentSet(len(vars)), incarnation: sess.incarnation,
		named: slices.Clone(identifiers), opts: opts, created: st.opts.Now(), waker: opts.Waker,
	}
	if w.waker == nil {
		w.wake = make(chan struct{}, 1)
	}
	for i, v := range vars {
		w.idents.add(v.cur.Id, identifiers[i])
	}
	w.snapRev = rev
	switch {
	case otherHistory:
		// Revisions of another incarnation say nothing about this one: the
		// current values, flagged, are the only honest answer.
		w.next, w.pending, w.resync = rev+1, rev+1, true
		w.signal()
	case opts.StartRevision > 0:
		w.next = opts.StartRevision
		if opts.StartRevision <= rev {
			w.pending = opts.StartRevision
			w.signal()
		}
	default:
		w.next = rev + 1
		if opts.IncludeInitial {
			w.initial = w.current()
		}
	}
	sess.watches[w] = struct{}{}
	w.first = sess.watched.Add(1) == 1
	if w.all {
		sess.watchAll[w] = struct{}{}
	}
	for id := range w.idents.ids() {
		set := sess.watchVar[id]
		if set == nil {
			set = map[*Watch]struct{}{}
			sess.watchVar[id] = set
		}
		set[w] = struct{}{}
	}
	return w, nil
}

// current returns the watched variables that exist now, sorted by name. The
// caller holds sess.mu.
func (w *Watch) current() []*pb.Variable {
	var out []*pb.Variable
	if w.all {
		for _, v := range w.sess.byID {
			out = append(out, v.cur)
		}
	} else {
		for id := range w.idents.ids() {
			if v := w.sess.byID[id]; v != nil {
				out = append(out, v.cur)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Initial returns the snapshot taken at registration (empty unless asked
// for) and the session revision at registration.
func (w *Watch) Initial() ([]*pb.Variable, int64) { return w.initial, w.snapRev }

// Incarnation returns the incarnation of the watched session.
func (w *Watch) Incarnation() string { return w.incarnation }

// Identifier returns the identifier the caller used for a variable id, or
// "" when the watch covers every variable.
func (w *Watch) Identifier(varID string) string {
	ident, _ := w.idents.get(varID)
	return ident
}

// Concerns reports whether an item is one this watch observes.
func (w *Watch) Concerns(it Item) bool {
	if w.all {
		return true
	}
	return w.idents.has(it.Var.Id)
}

// Wake receives a value when changes may be ready for Poll; nil for a
// watch registered with a Waker, which its owner waits on instead.
func (w *Watch) Wake() <-chan struct{} { return w.wake }

// Done is closed when the session ends; Err then says why.
func (w *Watch) Done() <-chan struct{} {
	s := w.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.done == nil {
		w.done = make(chan struct{})
		if w.ended {
			close(w.done)
		}
	}
	return w.done
}

// Err returns why the watch ended, once Done is closed.
func (w *Watch) Err() error {
	s := w.sess
	s.mu.RLock()
	defer s.mu.RUnlock()
	if w.ended {
		return w.err
	}
	return nil
}

// Close unregisters the watch. It is idempotent.
func (w *Watch) Close() {
	s := w.sess
	s.mu.Lock()
	last := w.close()
	s.mu.Unlock()
	if last {
		s.stopFollowing()
		s.saveExpiry(true)
	}
}

// close unregisters the watch under s.mu and reports whether it was the
// session's last.
func (w *Watch) close() (last bool) {
	s := w.sess
	if w.closed {
		return false
	}
	w.closed = true
	if s.closed {
		return false
	}
	delete(s.watches, w)
	if s.watched.Add(-1) == 0 {
		s.touch(s.opts.Now()) // the TTL counts from the last watch's end
		last = true
	}
	delete(s.watchAll, w)
	for id := range w.idents.ids() {
		if set := s.watchVar[id]; set != nil {
			delete(set, w)
			if len(set) == 0 {
				delete(s.watchVar, id)
			}
		}
	}
	return last
}

// end finishes the watch because its session ended; sess.mu is held. The
// owner learns it from Done, or from Wake and then Poll.
func (w *Watch) end(err error) {
	if !w.closed {
		w.closed = true
		w.ended = true
		w.err = err
		if w.done != nil {
			close(w.done)
		}
		w.signal()
	}
}

// Interrupt wakes the owner without a change, so that it can notice
// something of its own, such as its context ending. Anyone may call it.
func (w *Watch) Interrupt() { w.signal() }

// signal wakes the owner if it is not already due to wake.
func (w *Watch) signal() {
	if w.waker != nil {
		w.waker.add(w)
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// notify marks the watches a change concerns as having work and queues them
// for waking; sess.mu is held for writing. A watch already marked needs no
// second wake-up: it has not polled since.
func (s *session) notify(c *Change) {
	mark := func(w *Watch) {
		if w.pending == 0 {
			w.pending = c.Revision
			s.toWake = append(s.toWake, w)
		}
	}
	for w := range s.watchAll {
		mark(w)
	}
	for _, it := range c.Items {
		for w := range s.watchVar[it.Var.Id] {
			mark(w)
		}
	}
}

// notifyAll marks every watch as having work at rev; sess.mu is held for
// writing. It stands in for notify when the change itself is gone.
func (s *session) notifyAll(rev int64) {
	for w := range s.watches {
		if w.pending == 0 {
			w.pending = rev
			s.toWake = append(s.toWake, w)
		}
	}
}

// Batch is what one Poll returns.
type Batch struct {
	// Changes that concern the watch, in revision order. Items of a change
	// that the watch does not observe are still present; see Concerns.
	Changes []*Change
	// Resync is set instead of Changes when the history no longer holds
	// revisions the watch had not read.
	Resync *Resync
	// Covered is the revision through which every change was returned or did
	// not concern the watch: a resume point.
	Covered int64
	// More is true when max was reached and Poll should be called again.
	More bool
	// Settle asks the owner to call Watch.Settle and then Poll again: what
	// the watch needs (a resync's current values) is not all on disk yet.
	Settle bool
}

// Settle waits until every change committed so far is durable. The owner
// calls it when a Batch asks it to.
func (w *Watch) Settle() error {
	s := w.sess
	s.mu.RLock()
	rev := s.revision
	s.mu.RUnlock()
	return s.settleRead(rev)
}

// Resync is the current state of the watched variables at Revision.
type Resync struct {
	Revision int64
	Vars     []*pb.Variable
	// Gone lists watched variable ids that no longer exist.
	Gone []string
}

// Poll returns up to max history records from the watch's cursor and
// advances it. Only the watch's owner calls it.
func (w *Watch) Poll(max int) (Batch, error) {
	s := w.sess
	s.mu.RLock()
	defer s.mu.RUnlock()
	if w.closed {
		if w.err != nil {
			return Batch{}, w.err
		}
		return Batch{}, fmt.Errorf("%w: the watch was closed", ErrSessionClosed)
	}
	p := w.pending
	w.pending = 0
	if p == 0 {
		w.next = maxInt64(w.next, s.durable+1)
		return Batch{Covered: w.next - 1}, nil
	}
	from := maxInt64(w.next, p)
	if w.resync || from <= s.durable && (s.history.n == 0 || from < s.history.first()) {
		if s.revision > s.durable {
			// The current values include changes not yet on disk: the
			// owner waits for them (Settle) and polls again.
			w.pending = p
			return Batch{Covered: w.next - 1, Settle: true}, nil
		}
		w.resync = false
		rs := &Resync{Revision: s.revision, Vars: w.current()}
		for id := range w.idents.ids() {
			if s.byID[id] == nil {
				rs.Gone = append(rs.Gone, id)
			}
		}
		sort.Strings(rs.Gone)
		w.next = s.revision + 1
		return Batch{Resync: rs, Covered: s.revision}, nil
	}
	var b Batch
	r := from
	for ; r <= s.durable && r-from < int64(max); r++ {
		c := s.history.at(r)
		if w.all || w.concernsAny(c) {
			b.Changes = append(b.Changes, c)
		}
	}
	w.next = maxInt64(w.next, r)
	if r <= s.durable {
		w.pending = r
		b.More = true
	}
	b.Covered = w.next - 1
	return b, nil
}

func (w *Watch) concernsAny(c *Change) bool {
	for _, it := range c.Items {
		if w.idents.has(it.Var.Id) {
			return true
		}
	}
	return false
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
