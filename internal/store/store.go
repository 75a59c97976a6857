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

	// Engine, when set, keeps the store's state across restarts (see
	// Engine); Open loads what it holds. Nil keeps everything in memory.
	Engine Engine

	shared bool // Engine is a Shared one; set by Open
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
	sh   Shared // opts.Engine, when other servers write to it too

	mu       sync.RWMutex
	sessions map[string]*session

	stop     chan struct{}
	stopOnce sync.Once
	swept    sync.WaitGroup
}

// New returns a memory-only Store and starts its expiry sweeper; Close
// stops it. A Store with an Engine is made by Open.
func New(opts Options) *Store {
	if opts.Engine != nil {
		panic("store.New: a Store with an Engine is made by store.Open")
	}
	s, _, _ := Open(opts)
	return s
}

// Recovered counts what Open loaded from its engine.
type Recovered struct {
	Sessions  int
	Variables int
	Changes   int // history records, the revisions a watch can resume from
	Expired   int // sessions whose TTL ran out while the server was down
}

// Open returns a Store holding what opts.Engine kept (nothing without an
// engine) and starts its expiry sweeper; Close stops it and closes the
// engine. Sessions that expired while no server ran are removed at once.
func Open(opts Options) (*Store, Recovered, error) {
	opts.withDefaults()
	s := &Store{opts: opts, sessions: map[string]*session{}, stop: make(chan struct{})}
	s.sh, s.opts.shared = opts.Engine.(Shared)
	var rec Recovered
	if opts.Engine != nil {
		var err error
		if rec, err = s.load(); err != nil {
			return nil, rec, err
		}
		rec.Expired = len(s.Sweep())
	}
	s.swept.Add(1)
	go s.sweepLoop()
	return s, rec, nil
}

// Close stops the sweeper, closes every session, ending their watches, and
// closes the engine.
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
			sess.stopFollowing()
		}
		if s.opts.Engine != nil {
			_ = s.opts.Engine.Close()
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
	var saved []Pending
	s.mu.Lock()
	for id, sess := range s.sessions {
		if sess.expired(now) {
			delete(s.sessions, id)
			expired = append(expired, sess)
			if s.sh == nil {
				saved = append(saved, s.drop(id))
			}
		}
	}
	s.mu.Unlock()
	for _, p := range saved {
		if p != nil {
			_ = p.Wait() // a failed engine refuses the next write, which says so
		}
	}
	ids := make([]string, len(expired))
	for i, sess := range expired {
		sess.close(ClosedExpired)
		ids[i] = sess.id
	}
	if s.sh != nil {
		// On a shared engine a session idle here may be in use elsewhere:
		// this server only drops its copy. The session's lease decides
		// when it expires, for every server at once.
		return nil
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
	return s.CreateSessionWithToken(id, ttl, metadata, nil)
}

// CreateSessionWithToken is CreateSession for a server that requires auth:
// a session it creates keeps tokenHash (see TokenHash), on disk too.
func (s *Store) CreateSessionWithToken(id string, ttl time.Duration, metadata map[string]string, tokenHash []byte) (info SessionInfo, created bool, err error) {
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
	if s.sh != nil {
		return s.createShared(id, ttl, metadata, tokenHash)
	}
	s.mu.Lock()
	if sess, ok := s.sessions[id]; ok {
		s.mu.Unlock()
		sess.touch(s.opts.Now())
		sess.saveExpiry(false)
		return sess.info(), false, nil
	}
	if len(s.sessions) >= s.opts.MaxSessions {
		s.mu.Unlock()
		return SessionInfo{}, false, &LimitError{Limit: "max_sessions", Max: int64(s.opts.MaxSessions), What: "cannot create session " + id}
	}
	sess := newSession(id, ttl, cloneMap(metadata), &s.opts)
	sess.tokenHash = slices.Clone(tokenHash)
	var p Pending
	if eng := s.opts.Engine; eng != nil {
		// Ordered under s.mu after the Drop of any earlier session with
		// this id, and before anything saved for this one.
		d := sess.expiresAt.Load()
		sess.savedDeadline.Store(d)
		if p, err = eng.Save(&Mutation{Session: sess.record(0), Create: true, Expiry: &Expiry{Deadline: time.Unix(0, d)}}); err != nil {
			s.mu.Unlock()
			return SessionInfo{}, false, err
		}
	}
	s.sessions[id] = sess
	s.mu.Unlock()
	if p != nil {
		if err := p.Wait(); err != nil {
			return SessionInfo{}, false, err
		}
	}
	return sess.info(), true, nil
}

// TokenHash returns the token hash a session was created with (nil when
// none), and whether the session exists.
func (s *Store) TokenHash(id string) ([]byte, bool) {
	if s.sh != nil {
		sess, err := s.sharedSession(s.sh, id, false)
		if err != nil {
			return nil, false
		}
		return sess.tokenHash, true
	}
	s.mu.RLock()
	sess, ok := s.sessions[id]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return sess.tokenHash, true
}

// drop records with the engine that a session is gone; s.mu is held, so
// that the drop is ordered before any later creation with the same id.
func (s *Store) drop(id string) Pending {
	if s.opts.Engine == nil {
		return nil
	}
	p, _ := s.opts.Engine.Save(&Mutation{Drop: id}) // a failed engine refuses the next write, which says so
	return p
}

// session returns a live session, current on a shared engine, and marks
// it used.
func (s *Store) session(id string) (*session, error) { return s.use(id, true) }

// writable is session for a write: on a shared engine the write itself
// finds out whether the copy was current (see Shared), sparing a round
// trip.
func (s *Store) writable(id string) (*session, error) { return s.use(id, false) }

func (s *Store) use(id string, current bool) (*session, error) {
	if id == "" {
		return nil, fieldErr("session_id", "is required")
	}
	var sess *session
	if s.sh != nil {
		var err error
		if sess, err = s.sharedSession(s.sh, id, current); err != nil {
			return nil, err
		}
	} else {
		s.mu.RLock()
		var ok bool
		sess, ok = s.sessions[id]
		s.mu.RUnlock()
		if !ok {
			return nil, sessionNotFound(id)
		}
	}
	sess.touch(s.opts.Now())
	sess.saveExpiry(false)
	return sess, nil
}

// GetSession describes a session without extending its TTL.
func (s *Store) GetSession(id string) (SessionInfo, error) {
	if s.sh != nil && id != "" {
		sess, err := s.sharedSession(s.sh, id, true)
		if err != nil {
			return SessionInfo{}, err
		}
		return sess.info(), nil
	}
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
	if s.sh != nil {
		return s.cleanupShared(id)
	}
	s.mu.Lock()
	sess, ok := s.sessions[id]
	if !ok {
		s.mu.Unlock()
		return 0, sessionNotFound(id)
	}
	delete(s.sessions, id)
	p := s.drop(id)
	s.mu.Unlock()
	n := sess.close(ClosedCleanedUp)
	if p != nil {
		if err := p.Wait(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// ListSessions describes the sessions whose ids match a glob pattern (all
// when empty), sorted by id. It extends no TTL.
func (s *Store) ListSessions(pattern string) ([]SessionInfo, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fieldErr("pattern", "%q is not a valid glob: %v", pattern, err)
	}
	if s.sh != nil {
		return s.listShared(pattern)
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

// NewIncarnation returns a new session incarnation: 16 random hex digits.
func NewIncarnation() string { return randomHex(8) }

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
