// Package store holds varbridge's SessionStore: sessions, typed variables,
// per-session revisions and history, and the ObserverManager that feeds
// watches from that history.
//
// Every mutation of a session happens under the session's lock, takes the
// next session revision, and is appended to the session's bounded history
// before the lock is released. Watches read that history through a cursor,
// so writers never wait for readers.
package store

import (
	"crypto/rand"
	"encoding/hex"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultTTL                 = time.Hour
	DefaultHistoryLimit        = 10_000
	DefaultHistoryAge          = 10 * time.Minute
	DefaultHistoryBytes        = 64 << 20
	DefaultMaxSessions         = 100_000
	DefaultMaxVariables        = 10_000
	DefaultMaxWatches          = 100_000
	DefaultMaxWatchIdentifiers = 1_000
	DefaultMaxValueBytes       = 4 << 20
	DefaultSweepInterval       = time.Second
)

// Options configure a Store. Zero fields take the defaults above.
type Options struct {
	TTL                 time.Duration // idle time before a session expires
	HistoryLimit        int           // history records kept per session
	HistoryAge          time.Duration // oldest history record kept
	HistoryBytes        int64         // approximate history size kept per session
	MaxSessions         int
	MaxVariables        int // per session
	MaxWatches          int // per session
	MaxWatchIdentifiers int // per watch
	MaxValueBytes       int // encoded size of one value
	SweepInterval       time.Duration
	// Now is the clock; tests inject one to expire sessions without sleeping.
	Now func() time.Time
	// OnExpire, when set, is called after each sweep with the ids of the
	// sessions it removed for want of use, so that the server can log them.
	OnExpire func(ids []string)

	// Filter bounds what where filters cost, per session and per watch.
	Filter FilterLimits
}

func (o *Options) withDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.HistoryLimit, DefaultHistoryLimit)
	def(&o.MaxSessions, DefaultMaxSessions)
	def(&o.MaxVariables, DefaultMaxVariables)
	def(&o.MaxWatches, DefaultMaxWatches)
	def(&o.MaxWatchIdentifiers, DefaultMaxWatchIdentifiers)
	def(&o.MaxValueBytes, DefaultMaxValueBytes)
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.HistoryAge <= 0 {
		o.HistoryAge = DefaultHistoryAge
	}
	if o.HistoryBytes <= 0 {
		o.HistoryBytes = DefaultHistoryBytes
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Filter.Compile.MaxValueBytes == 0 {
		o.Filter.Compile.MaxValueBytes = uint64(o.MaxValueBytes)
	}
}

// Store is the SessionStore: an in-memory set of sessions. It is safe for
// concurrent use; sessions have their own locks, so a busy session does not
// stall the others.
type Store struct {
	opts Options

	mu       sync.RWMutex
	sessions map[string]*session

	stop     chan struct{}
	stopOnce sync.Once
	swept    sync.WaitGroup
}

// New returns a Store and starts its expiry sweeper; Close stops it.
func New(opts Options) *Store {
	opts.withDefaults()
	s := &Store{opts: opts, sessions: map[string]*session{}, stop: make(chan struct{})}
	s.swept.Add(1)
	go s.sweepLoop()
	return s
}

// Close stops the sweeper and closes every session, ending their watches.
func (s *Store) Close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.swept.Wait()
		s.mu.Lock()
		all := s.sessions
		s.sessions = map[string]*session{}
		s.mu.Unlock()
		for _, sess := range all {
			sess.close(ClosedShutdown)
		}
	})
}

func (s *Store) sweepLoop() {
	defer s.swept.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep removes every session whose TTL has run out and returns their ids.
// The sweeper calls it periodically; tests call it after moving the clock.
func (s *Store) Sweep() []string {
	now := s.opts.Now()
	var expired []*session
	s.mu.Lock()
	for id, sess := range s.sessions {
		if sess.expired(now) {
			delete(s.sessions, id)
			expired = append(expired, sess)
		}
	}
	s.mu.Unlock()
	ids := make([]string, len(expired))
	for i, sess := range expired {
		sess.close(ClosedExpired)
		ids[i] = sess.id
	}
	if len(ids) > 0 && s.opts.OnExpire != nil {
		s.opts.OnExpire(ids)
	}
	return ids
}

// SessionInfo describes a session.
type SessionInfo struct {
	ID            string
	Incarnation   string
	CreatedAt     time.Time
	ExpiresAt     time.Time
	TTL           time.Duration
	Revision      int64
	VariableCount int
	WatchCount    int
	Metadata      map[string]string
}

// CreateSession creates a session, or returns the existing one with that id
// (created is false). An empty id gets a generated one; ttl <= 0 means the
// store's default.
func (s *Store) CreateSession(id string, ttl time.Duration, metadata map[string]string) (info SessionInfo, created bool, err error) {
	if id == "" {
		id = "s_" + randomHex(8)
	} else if err := checkName("session_id", id); err != nil {
		return SessionInfo{}, false, err
	}
	if ttl < 0 {
		return SessionInfo{}, false, fieldErr("ttl", "must not be negative, got %v", ttl)
	}
	if ttl == 0 {
		ttl = s.opts.TTL
	}
	s.mu.Lock()
	if sess, ok := s.sessions[id]; ok {
		s.mu.Unlock()
		sess.touch(s.opts.Now())
		return sess.info(), false, nil
	}
	if len(s.sessions) >= s.opts.MaxSessions {
		s.mu.Unlock()
		return SessionInfo{}, false, &LimitError{Limit: "max_sessions", Max: int64(s.opts.MaxSessions), What: "cannot create session " + id}
	}
	sess := newSession(id, ttl, cloneMap(metadata), &s.opts)
	s.sessions[id] = sess
	s.mu.Unlock()
	return sess.info(), true, nil
}

// session returns a live session and marks it used.
func (s *Store) session(id string) (*session, error) {
	if id == "" {
		return nil, fieldErr("session_id", "is required")
	}
	s.mu.RLock()
	sess, ok := s.sessions[id]
	s.mu.RUnlock()
	if !ok {
		return nil, sessionNotFound(id)
	}
	sess.touch(s.opts.Now())
	return sess, nil
}

// GetSession describes a session without extending its TTL.
func (s *Store) GetSession(id string) (SessionInfo, error) {
	s.mu.RLock()
	sess, ok := s.sessions[id]
	s.mu.RUnlock()
	if !ok {
		if id == "" {
			return SessionInfo{}, fieldErr("session_id", "is required")
		}
		return SessionInfo{}, sessionNotFound(id)
	}
	return sess.info(), nil
}

// Heartbeat extends a session's TTL.
func (s *Store) Heartbeat(id string) (SessionInfo, error) {
	sess, err := s.session(id)
	if err != nil {
		return SessionInfo{}, err
	}
	return sess.info(), nil
}

// CleanupSession removes a session and ends its watches; it returns how many
// variables went with it.
func (s *Store) CleanupSession(id string) (int, error) {
	if id == "" {
		return 0, fieldErr("session_id", "is required")
	}
	s.mu.Lock()
	sess, ok := s.sessions[id]
	delete(s.sessions, id)
	s.mu.Unlock()
	if !ok {
		return 0, sessionNotFound(id)
	}
	return sess.close(ClosedCleanedUp), nil
}

// ListSessions describes the sessions whose ids match a glob pattern (all
// when empty), sorted by id. It extends no TTL.
func (s *Store) ListSessions(pattern string) ([]SessionInfo, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fieldErr("pattern", "%q is not a valid glob: %v", pattern, err)
	}
	s.mu.RLock()
	all := make([]*session, 0, len(s.sessions))
	for id, sess := range s.sessions {
		if ok, _ := path.Match(pattern, id); pattern == "" || ok {
			all = append(all, sess)
		}
	}
	s.mu.RUnlock()
	out := make([]SessionInfo, len(all))
	for i, sess := range all {
		out[i] = sess.info()
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// SessionCount returns the number of live sessions.
func (s *Store) SessionCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.sessions)
}

// WatchCount returns the number of open watches over all sessions.
func (s *Store) WatchCount() int {
	s.mu.RLock()
	all := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.RUnlock()
	n := 0
	for _, sess := range all {
		sess.mu.RLock()
		n += len(sess.watches)
		sess.mu.RUnlock()
	}
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b)
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// checkName validates a session id or variable name: printable, bounded.
func checkName(field, s string) error {
	if s == "" {
		return fieldErr(field, "is required")
	}
	if len(s) > 256 {
		return fieldErr(field, "is %d bytes long; the limit is 256", len(s))
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fieldErr(field, "%q contains a control character", s)
		}
	}
	return nil
}
