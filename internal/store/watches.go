package store

import (
	"slices"
	"time"
)

// WatchInfo describes an open watch (Store.Watches).
type WatchInfo struct {
	// Identifiers are as the watch named them; none: every variable.
	Identifiers []string
	Created     time.Time
	Where       string
	Coalesce    bool
	// ReadRevision: the watch's owner has polled every change up to it.
	ReadRevision int64
	// Pending: changes after ReadRevision that concern the watch wait.
	Pending bool
	// Lag is how many revisions the session is ahead of ReadRevision.
	Lag int64
}

// Watches describes the session's open watches, oldest first, with the
// session revision they were read at. Like GetSession it does not extend
// the session's TTL: looking is not using.
func (s *Store) Watches(sessionID string) ([]WatchInfo, int64, error) {
	if sessionID == "" {
		return nil, 0, fieldErr("session_id", "is required")
	}
	s.mu.RLock()
	sess, ok := s.sessions[sessionID]
	s.mu.RUnlock()
	if !ok {
		return nil, 0, sessionNotFound(sessionID)
	}
	// The write lock: each watch's owner moves its cursor under the read
	// lock, which only excludes writers. Listing is rare; the session's
	// writers wait for one pass over its watches.
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closed {
		return nil, 0, sessionNotFound(sessionID)
	}
	out := make([]WatchInfo, 0, len(sess.watches))
	for w := range sess.watches {
		if w.closed {
			continue
		}
		read := w.next - 1
		out = append(out, WatchInfo{
			Identifiers: slices.Clone(w.named), Created: w.created, Where: w.opts.Where, Coalesce: w.opts.Coalesce,
			ReadRevision: read, Pending: w.pending != 0, Lag: max(sess.revision-read, 0),
		})
	}
	slices.SortStableFunc(out, func(a, b WatchInfo) int { return a.Created.Compare(b.Created) })
	return out, sess.revision, nil
}
