package store

import (
	"errors"
	"path"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Shared is an Engine that other servers write too (etcd): many servers,
// one truth. A Store on a Shared engine keeps in memory only the sessions
// it is asked about, as a copy of the engine's, and keeps that copy honest:
//   - every write is saved against the version of the session it was made
//     on (Mutation.Fence); when another server changed the session since,
//     the engine refuses it with ErrStale, and the store catches up (Sync)
//     and makes the write again on the current state;
//   - a read, or a write the store would refuse or find changing nothing
//     (which the engine never sees), first asks the engine whether its copy
//     is current (Sync), so nothing stale is served as current;
//   - while a session is watched here, the engine tells the store of every
//     change other servers commit (Follow), which the store takes into the
//     same history the watches read, so a watch here sees every change,
//     wherever it was made, in revision order.
//
// Load gives back nothing: sessions are loaded on first use (Find).
type Shared interface {
	Engine
	// Find reads session id whole; nil when there is none.
	Find(id string) (*Saved, error)
	// Sync tells a server that holds session id at (incarnation, revision,
	// fence) what others changed since.
	Sync(id, incarnation string, revision, fence int64) (SyncResult, error)
	// Follow starts telling fn, on a goroutine of its own, of the changes
	// committed to session s after fence, and keeps the session's lease
	// alive, until stop is called. fn is called for one event at a time.
	Follow(s *SessionRecord, fence int64, fn func(FollowEvent)) (stop func())
	// IDs lists the ids of every session, sorted.
	IDs() ([]string, error)
}

// SyncResult is what Sync found. At most one of Gone, Reload and Changes
// is set; none means the copy is current.
type SyncResult struct {
	Gone  bool       // the session no longer exists
	Cause CloseCause // with Gone: why, when the engine knows
	// Reload is the session whole, when the copy cannot be brought up to
	// date change by change: it is another incarnation, or the changes it
	// missed are no longer kept.
	Reload *Saved
	// Changes are the changes after revision, in order, ending at Fence.
	Changes []*Change
	Fence   int64
}

// FollowEvent is one thing Follow tells: a change another server made
// (Change, with the fence it made), the end of the session (Gone, Cause),
// or that the engine may have missed changes (Behind), after which the
// store syncs.
type FollowEvent struct {
	Change *Change
	Fence  int64
	Gone   bool
	Cause  CloseCause
	Behind bool
	// Lost: the engine lost touch with the shared truth, so this server
	// cannot keep the session's watches current; they end (UNAVAILABLE)
	// and resume elsewhere. The follower has stopped.
	Lost bool
}

// ErrStale is a Shared engine's refusal of a mutation made against a
// version of the session that another server has changed since.
var ErrStale = errors.New("the session was changed by another server")

// ErrSessionExists is a Shared engine's refusal of a Create: another server
// created a session with that id first.
var ErrSessionExists = errors.New("the session was created by another server")

// maxStaleRetries bounds how often one write is made again after losing a
// race to another server's write on the same session.
const maxStaleRetries = 64

// sharedSession returns session id on a Shared engine: the copy in memory,
// brought up to date unless fresh is false, or the engine's, loaded.
func (st *Store) sharedSession(sh Shared, id string, sync bool) (*session, error) {
	st.mu.RLock()
	sess := st.sessions[id]
	st.mu.RUnlock()
	if sess != nil {
		if !sync {
			return sess, nil
		}
		ok, _, err := st.sync(sh, sess)
		if err != nil {
			return nil, err
		}
		if ok {
			return sess, nil
		}
		// It went while we held it; another may have taken its place.
	}
	sv, err := sh.Find(id)
	if err != nil {
		return nil, err
	}
	if sv == nil {
		return nil, sessionNotFound(id)
	}
	fresh, err := st.restore(sv, st.opts.Now())
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	if cur := st.sessions[id]; cur != nil && !cur.isClosed() {
		st.mu.Unlock()
		return cur, nil // loaded meanwhile by another call
	}
	st.sessions[id] = fresh
	st.mu.Unlock()
	return fresh, nil
}

func (s *session) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// sync brings a session's copy up to date with the engine. It reports
// whether the session still exists (when not, it is closed and removed
// from the store) and whether anything changed.
func (st *Store) sync(sh Shared, sess *session) (exists, changed bool, err error) {
	sess.mu.RLock()
	closed, rev, fence := sess.closed, sess.revision, sess.fence
	sess.mu.RUnlock()
	if closed {
		return false, false, nil
	}
	res, err := sh.Sync(sess.id, sess.incarnation, rev, fence)
	if err != nil {
		return true, false, err
	}
	if res.Gone {
		st.forget(sess, res.Cause)
		return false, true, nil
	}
	if res.Reload == nil && len(res.Changes) == 0 {
		return true, false, nil
	}
	if res.Reload != nil && res.Reload.Session.Incarnation != sess.incarnation {
		// The session was cleaned up and created again: its watches end,
		// as on one server, and the new one is loaded on its next use.
		st.forget(sess, ClosedCleanedUp)
		return false, true, nil
	}
	sess.mu.Lock()
	defer sess.unlockAndWake()
	if sess.closed {
		return false, true, nil
	}
	if res.Reload != nil {
		if err := sess.reload(res.Reload); err != nil {
			return true, false, err
		}
		return true, true, nil
	}
	for _, c := range res.Changes {
		sess.take(c, res.Fence)
	}
	return true, true, nil
}

// forget closes a session that no longer exists in the engine, ending its
// watches with cause, and removes it from the store.
func (st *Store) forget(sess *session, cause CloseCause) {
	if cause == "" {
		cause = ClosedExpired
	}
	st.mu.Lock()
	if st.sessions[sess.id] == sess {
		delete(st.sessions, sess.id)
	}
	st.mu.Unlock()
	sess.close(cause)
	sess.stopFollowing()
}

// take applies a change another server committed, if it is the next one;
// sess.mu is held for writing. Changes already held are skipped: this
// server's own, coming back through Follow.
func (s *session) take(c *Change, fence int64) bool {
	if c.Revision != s.revision+1 {
		return c.Revision <= s.revision
	}
	for _, it := range c.Items {
		switch it.Kind {
		case Deleted:
			delete(s.byID, it.Var.Id)
			delete(s.byName, it.Var.Name)
		default:
			v := s.byID[it.Var.Id]
			if v == nil {
				rl, err := newRules(it.Var.Type, it.Var.Constraints)
				if err != nil {
					rl = &rules{typ: it.Var.Type, c: &pb.Constraints{}} // written by a server that accepted them; never refuse what is committed
				}
				v = &variable{rules: rl}
				s.byID[it.Var.Id], s.byName[it.Var.Name] = v, v
			}
			v.cur = it.Var
		}
	}
	if c.Timestamp == nil {
		c.Timestamp = timestamppb.New(c.Time)
	}
	s.history.append(c)
	s.revision, s.durable, s.fence = c.Revision, c.Revision, fence
	s.notify(c)
	return true
}

// reload replaces a session's state with the engine's, when the changes
// in between are no longer kept; sess.mu is held for writing. Every watch
// is woken: those that had not read up to the new state find their next
// revision gone from the history and resync, as past the window on one
// server.
func (s *session) reload(sv *Saved) error {
	if err := s.fill(sv); err != nil {
		return err
	}
	s.fence = sv.Fence
	s.notifyAll(s.revision)
	return nil
}

// follow starts following a session that became watched here; the caller
// holds sess.mu for writing. Follow's stop only cancels, so calling it
// from anywhere, the follower included, cannot deadlock; the engine's
// Close waits for its followers.
func (st *Store) follow(sess *session) {
	sh := st.sh
	if sh == nil || sess.unfollow != nil {
		return
	}
	sess.unfollow = sh.Follow(sess.record(sess.revision), sess.fence, func(ev FollowEvent) {
		st.onFollow(sh, sess, ev)
	})
}

// stopFollowing stops following a session no longer watched here, or
// closed. Called without sess.mu.
func (s *session) stopFollowing() {
	s.mu.Lock()
	stop := s.unfollow
	if s.watched.Load() > 0 && !s.closed {
		stop = nil // watched again meanwhile
	} else {
		s.unfollow = nil
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// onFollow takes in what Follow tells of a session.
func (st *Store) onFollow(sh Shared, sess *session, ev FollowEvent) {
	switch {
	case ev.Gone, ev.Lost:
		cause := ev.Cause
		if ev.Lost {
			cause = ClosedUnavailable
		}
		st.mu.Lock()
		if st.sessions[sess.id] == sess {
			delete(st.sessions, sess.id)
		}
		st.mu.Unlock()
		sess.close(cause) // the follower has stopped itself
		return
	case ev.Change != nil:
		sess.mu.Lock()
		taken := sess.closed || sess.take(ev.Change, ev.Fence)
		sess.unlockAndWake()
		if taken {
			return
		}
	}
	// Behind, or a change after a gap: ask for what was missed. A failure
	// here leaves the copy as it was; the next event or use tries again.
	if exists, _, err := st.sync(sh, sess); err == nil && !exists {
		return
	}
}

// locked runs a write's part under the session's lock: write is called
// with the session, its mu held for writing, and reports whether it
// changed anything. On a Shared engine it goes through retryShared, which
// may replace *sess with a fresh copy.
func (st *Store) locked(sess **session, write func(*session) (bool, error)) error {
	attempt := func(s *session) (bool, error) {
		s.mu.Lock()
		defer s.unlockAndWake()
		return write(s)
	}
	if st.sh == nil {
		_, err := attempt(*sess)
		return err
	}
	return st.retryShared(sess, attempt)
}

// retryShared runs a write's part under the session lock again when, on a
// Shared engine, it may have been decided on a stale copy: the engine
// refused it (ErrStale), or it was refused or changed nothing on what this
// server held, which the engine never saw. It syncs in between; when the
// copy was current, the first answer stands. A copy this server dropped
// meanwhile (the session ended, or the server lost the engine, or the
// copy went unused) is read again from the engine, whose answer stands.
func (st *Store) retryShared(sess **session, attempt func(*session) (changed bool, err error)) error {
	sh := st.sh
	for try := 0; ; try++ {
		changed, err := attempt(*sess)
		if err == nil && changed {
			return nil
		}
		if errors.Is(err, ErrStorage) || isLimit(err) {
			return err
		}
		exists, synced, serr := st.sync(sh, *sess)
		switch {
		case serr != nil:
			return serr
		case !exists:
			fresh, ferr := st.sharedSession(sh, (*sess).id, true)
			if ferr != nil {
				return ferr
			}
			*sess = fresh
		case !synced && !errors.Is(err, ErrStale):
			return err // decided on a current copy
		}
		if try >= maxStaleRetries {
			return err
		}
	}
}

// reread runs a read again when it found its session's copy closed under
// it on a Shared engine (session.goneErr): the next try reads the session
// from the engine, which says whether it still exists.
func (st *Store) reread(read func() error) error {
	for try := 0; ; try++ {
		err := read()
		var snf *SessionNotFoundError
		if try == 3 || !errors.As(err, &snf) || !snf.dropped {
			return err
		}
	}
}

func isLimit(err error) bool { return errors.Is(err, ErrLimit) }

// createShared is CreateSession on a Shared engine: the existing session
// if any server created it, else a new one, unless another server's
// creation wins the race.
func (st *Store) createShared(id string, ttl time.Duration, metadata map[string]string, tokenHash []byte) (SessionInfo, bool, error) {
	for try := 0; ; try++ {
		if sess, err := st.sharedSession(st.sh, id, true); err == nil {
			sess.touch(st.opts.Now())
			sess.saveExpiry(false)
			return sess.info(), false, nil
		} else if !errors.Is(err, ErrSessionNotFound) {
			return SessionInfo{}, false, err
		}
		if st.SessionCount() >= st.opts.MaxSessions {
			return SessionInfo{}, false, &LimitError{Limit: "max_sessions", Max: int64(st.opts.MaxSessions), What: "cannot create session " + id}
		}
		sess := newSession(id, ttl, cloneMap(metadata), &st.opts)
		sess.tokenHash = slices.Clone(tokenHash)
		d := sess.expiresAt.Load()
		sess.savedDeadline.Store(d)
		m := &Mutation{Session: sess.record(0), Create: true, Expiry: &Expiry{Deadline: time.Unix(0, d)}}
		p, err := st.sh.Save(m)
		if errors.Is(err, ErrSessionExists) && try < maxStaleRetries {
			continue
		}
		if err == nil && p != nil {
			err = p.Wait()
		}
		if err != nil {
			return SessionInfo{}, false, err
		}
		sess.fence, sess.lease = m.Fence, m.Session.Lease
		st.mu.Lock()
		old := st.sessions[id]
		st.sessions[id] = sess
		st.mu.Unlock()
		if old != nil { // a copy of an earlier incarnation
			old.close(ClosedCleanedUp)
			old.stopFollowing()
		}
		return sess.info(), true, nil
	}
}

// cleanupShared is CleanupSession on a Shared engine.
func (st *Store) cleanupShared(id string) (int, error) {
	sess, err := st.sharedSession(st.sh, id, false)
	if err != nil {
		return 0, err
	}
	err = st.retryShared(&sess, func(sess *session) (bool, error) {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		if sess.closed {
			return false, sessionNotFound(id)
		}
		m := &Mutation{Drop: id, Session: sess.record(sess.revision), Fence: sess.fence}
		p, err := st.sh.Save(m)
		if err == nil && p != nil {
			err = p.Wait()
		}
		return err == nil, err
	})
	if err != nil {
		return 0, err
	}
	st.mu.Lock()
	if st.sessions[id] == sess {
		delete(st.sessions, id)
	}
	st.mu.Unlock()
	n := sess.close(ClosedCleanedUp)
	sess.stopFollowing()
	return n, nil
}

// listShared is ListSessions on a Shared engine: every server's sessions,
// each read current (and kept here as a copy until unused).
func (st *Store) listShared(pattern string) ([]SessionInfo, error) {
	ids, err := st.sh.IDs()
	if err != nil {
		return nil, err
	}
	var out []SessionInfo
	for _, id := range ids {
		if ok, _ := path.Match(pattern, id); pattern != "" && !ok {
			continue
		}
		sess, err := st.sharedSession(st.sh, id, true)
		if errors.Is(err, ErrSessionNotFound) {
			continue // gone since it was listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sess.info())
	}
	return out, nil
}
