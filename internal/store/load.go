package store

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// load fills a new Store from its engine, before anyone can reach it.
func (s *Store) load() (Recovered, error) {
	var rec Recovered
	now := s.opts.Now()
	err := s.opts.Engine.Load(func(sv *Saved) error {
		sess, err := s.restore(sv, now)
		if err != nil {
			return err
		}
		r := sv.Session
		if _, dup := s.sessions[r.ID]; dup {
			return fmt.Errorf("session %q is kept twice", r.ID)
		}
		s.sessions[r.ID] = sess
		rec.Sessions++
		rec.Variables += len(sv.Variables)
		rec.Changes += len(sv.History)
		return nil
	})
	return rec, err
}

// restore builds a session from what an engine kept.
func (s *Store) restore(sv *Saved, now time.Time) (*session, error) {
	r := sv.Session
	sess := newSession(r.ID, r.TTL, r.Metadata, &s.opts)
	sess.incarnation, sess.createdAt, sess.tokenHash = r.Incarnation, r.CreatedAt, r.TokenHash
	sess.lease, sess.fence = r.Lease, sv.Fence
	// The deadline keeps counting across a restart, except for a
	// watched session: its watchers get a TTL from now to come back.
	d := sv.Expiry.Deadline
	if sv.Expiry.Watched || d.IsZero() {
		d = now.Add(r.TTL)
	}
	sess.expiresAt.Store(d.UnixNano())
	sess.savedDeadline.Store(d.UnixNano())
	if err := sess.fill(sv); err != nil {
		return nil, err
	}
	return sess, nil
}

// fill gives a session the variables, revision and history kept of it.
// The caller holds s.mu or has not published the session yet.
func (s *session) fill(sv *Saved) error {
	r := sv.Session
	byID := make(map[string]*variable, len(sv.Variables))
	byName := make(map[string]*variable, len(sv.Variables))
	for _, pv := range sv.Variables {
		rl, err := newRules(pv.Type, pv.Constraints)
		if err != nil {
			return fmt.Errorf("session %q, variable %q: kept constraints are invalid: %w", r.ID, pv.Name, err)
		}
		v := &variable{rules: rl, cur: pv}
		byID[pv.Id], byName[pv.Name] = v, v
	}
	h := history{limit: s.opts.HistoryLimit, maxAge: s.opts.HistoryAge, maxBytes: s.opts.HistoryBytes}
	for i, c := range sv.History {
		if c.Revision > r.Revision || (i > 0 && c.Revision != sv.History[i-1].Revision+1) {
			return fmt.Errorf("session %q: kept history is not contiguous at revision %d (session revision %d)", r.ID, c.Revision, r.Revision)
		}
		if c.Timestamp == nil {
			c.Timestamp = timestamppb.New(c.Time)
		}
		h.append(c)
	}
	s.byID, s.byName, s.history = byID, byName, h
	s.revision, s.durable = r.Revision, r.Revision
	return nil
}
