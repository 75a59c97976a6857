package store

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// idPattern is the shape of server-assigned variable ids; names may not take
// it, so an identifier is never both one variable's id and another's name.
var idPattern = regexp.MustCompile(`^var_[0-9a-f]{16}$`)

type variable struct {
	rules *rules
	// cur is the committed state. It is never modified once published:
	// every change builds a new one, so readers and watch records share it.
	cur *pb.Variable
}

type session struct {
	id string
	// incarnation tells this session from an earlier or later one with the
	// same id: revisions restart at 1 in each, so a resume point means
	// nothing outside the incarnation it was taken in.
	incarnation string
	ttl         time.Duration
	createdAt   time.Time
	metadata    map[string]string
	opts        *Options
	expiresAt   atomic.Int64 // unix nanoseconds; extended without the lock
	// watched counts open watches: a watched session does not expire, so a
	// worker that only watches a quiet session keeps it. Kept apart from
	// watches so the sweeper reads it without the session lock.
	watched atomic.Int32

	// tokenHash is the SHA-256 of the session's auth token (nil without
	// auth); set at creation, never changed.
	tokenHash []byte
	// savedDeadline is the expiry deadline last given to the engine (unix
	// nanoseconds); touches save a new one only when it moved on by more
	// than expirySlack, so reads do not each cost a write.
	savedDeadline atomic.Int64

	mu       sync.RWMutex
	closed   bool
	revision int64
	// durable is the last revision on disk. Watches read history up to it
	// and no further, so a watcher is never shown a change that a crash
	// could still take back. Without an engine it moves with revision.
	durable  int64
	byID     map[string]*variable
	byName   map[string]*variable
	history  history
	watches  map[*Watch]struct{}
	watchAll map[*Watch]struct{}            // watches of every variable
	watchVar map[string]map[*Watch]struct{} // variable id -> watches
	toWake   []*Watch                       // marked by commits, woken on unlock

	filterBudget *Budget // spent by the where filters of all its watches

	// On a Shared engine: lease carries the session's TTL there, fence is
	// the engine's version of the session at revision (both guarded by
	// mu), and unfollow stops the engine telling this server of other
	// servers' changes, which it does while the session is watched here.
	lease    int64
	fence    int64
	unfollow func()
}

func newSession(id string, ttl time.Duration, md map[string]string, opts *Options) *session {
	now := opts.Now()
	s := &session{
		id: id, incarnation: NewIncarnation(), ttl: ttl, createdAt: now, metadata: md, opts: opts,
		byID: map[string]*variable{}, byName: map[string]*variable{},
		history:  history{limit: opts.HistoryLimit, maxAge: opts.HistoryAge, maxBytes: opts.HistoryBytes},
		watches:  map[*Watch]struct{}{},
		watchAll: map[*Watch]struct{}{},
		watchVar: map[string]map[*Watch]struct{}{},

		filterBudget: newBudget(opts.Filter),
	}
	s.touch(now)
	return s
}

// unlockAndWake releases the write lock, then wakes the watches the commits
// under it concerned: waking a goroutine is the costly part of a commit with
// many watchers, and other writers need not wait for it.
func (s *session) unlockAndWake() {
	ws := s.toWake
	s.toWake = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.signal()
	}
}

func (s *session) touch(now time.Time) { s.expiresAt.Store(now.Add(s.ttl).UnixNano()) }

// maxExpirySlack bounds how far a kept deadline may lag the session's: a
// session used only by reads, restarted just before it would expire, can
// expire this much early.
const maxExpirySlack = 5 * time.Second

// saveExpiry gives the engine the session's deadline when it moved on by
// more than the slack (always, when force), and whether it is watched, and
// waits for it to be kept: a killed server must not forget that a session
// was used or watched. It costs a sync at most once per slack per session,
// and at each start and end of its being watched. Called without s.mu.
func (s *session) saveExpiry(force bool) {
	eng := s.opts.Engine
	if eng == nil {
		return
	}
	d := s.expiresAt.Load()
	if !force && d-s.savedDeadline.Load() < int64(min(s.ttl/10, maxExpirySlack)) {
		return
	}
	s.savedDeadline.Store(d)
	p, err := eng.Save(&Mutation{
		Session: &SessionRecord{ID: s.id, Incarnation: s.incarnation, Lease: s.lease},
		Expiry:  &Expiry{Deadline: time.Unix(0, d), Watched: s.watched.Load() > 0},
	})
	if err == nil && p != nil {
		_ = p.Wait() // a failed engine refuses the next write, which says so
	}
}

// expired reports whether the session's TTL ran out; an open watch is use
// for as long as it is open.
func (s *session) expired(now time.Time) bool {
	return s.watched.Load() == 0 && now.UnixNano() >= s.expiresAt.Load()
}

func (s *session) info() SessionInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	exp := time.Unix(0, s.expiresAt.Load())
	if s.watched.Load() > 0 { // it cannot expire before the last watch closes
		if next := s.opts.Now().Add(s.ttl); next.After(exp) {
			exp = next
		}
	}
	return SessionInfo{
		ID: s.id, Incarnation: s.incarnation, CreatedAt: s.createdAt, ExpiresAt: exp, TTL: s.ttl,
		Revision: s.revision, VariableCount: len(s.byID), WatchCount: len(s.watches), Metadata: s.metadata,
	}
}

// Proto renders the session for the wire.
func (i SessionInfo) Proto() *pb.Session {
	return &pb.Session{
		SessionId: i.ID, CreatedAt: timestamppb.New(i.CreatedAt), ExpiresAt: timestamppb.New(i.ExpiresAt),
		Ttl: durationpb.New(i.TTL), Revision: i.Revision, VariableCount: int64(i.VariableCount),
		WatchCount: int64(i.WatchCount), Metadata: i.Metadata, Incarnation: i.Incarnation,
	}
}

// close ends the session's watches with a SessionClosedError and returns
// its variable count.
func (s *session) close(cause CloseCause) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	s.closed = true
	err := &SessionClosedError{Session: s.id, Cause: cause, TTL: s.ttl}
	for w := range s.watches {
		w.end(err)
	}
	s.watches, s.watchAll, s.watchVar = nil, nil, nil
	s.history = history{}
	return len(s.byID)
}

// lookup resolves an identifier, trying ids before names.
func (s *session) lookup(ident string) *variable {
	if v, ok := s.byID[ident]; ok {
		return v
	}
	return s.byName[ident]
}

// resolve looks up every identifier and fails listing all missing ones.
func (s *session) resolve(idents []string) ([]*variable, error) {
	vars := make([]*variable, len(idents))
	var missing []string
	for i, id := range idents {
		if vars[i] = s.lookup(id); vars[i] == nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &NotFoundError{Session: s.id, Identifiers: missing}
	}
	return vars, nil
}

// commit takes the next revision for items and records them: first with
// the engine, if any (a refusal leaves everything as it was, so the caller
// applies its change to the variables only after commit succeeds), then in
// the history. Without an engine it marks the watches the change concerns,
// which unlockAndWake then wakes; with one, publish does that once the
// returned Pending is durable. The caller holds s.mu for writing.
func (s *session) commit(now time.Time, ts *timestamppb.Timestamp, source string, md map[string]string, items []Item) (int64, Pending, error) {
	if ts == nil {
		ts = timestamppb.New(now)
	}
	c := &Change{Revision: s.revision + 1, Time: now, Timestamp: ts, Source: source, Metadata: md, Items: items}
	var p Pending
	if eng := s.opts.Engine; eng != nil {
		m := &Mutation{Session: s.record(c.Revision), Change: c, TrimFrom: s.history.first(), TrimBelow: s.history.keptFrom(c)}
		for _, it := range items {
			if it.Kind == Deleted {
				m.Delete = append(m.Delete, it.Var.Id)
			} else {
				m.Put = append(m.Put, it.Var)
			}
		}
		m.Fence = s.fence
		var err error
		if p, err = eng.Save(m); err != nil {
			return 0, nil, err
		}
		s.fence = m.Fence
	}
	s.revision = c.Revision
	s.history.append(c)
	if s.opts.Engine == nil || s.opts.shared {
		// Nothing to wait for: no engine, or a shared one, whose Save
		// returns once the change is committed. (Changes other servers
		// make arrive in between, so marking it durable later could
		// come after a later revision's.)
		s.durable = s.revision
		s.notify(c)
		return s.revision, nil, nil
	}
	return s.revision, p, nil
}

// record is the session's header for the engine at revision rev.
func (s *session) record(rev int64) *SessionRecord {
	return &SessionRecord{
		ID: s.id, Incarnation: s.incarnation, TTL: s.ttl, CreatedAt: s.createdAt,
		Metadata: s.metadata, TokenHash: s.tokenHash, Revision: rev, Lease: s.lease,
	}
}

// settle waits for a commit's Pending and then shows the commit to the
// watches. Called without s.mu.
func (s *session) settle(p Pending, rev int64) error {
	if p == nil {
		return nil
	}
	if err := p.Wait(); err != nil {
		return err
	}
	s.publish(rev)
	return nil
}

// settleRead makes sure that what a reader saw at rev is durable before it
// is shown: it waits for the engine's log up to now, which covers rev.
// Called without s.mu.
func (s *session) settleRead(rev int64) error {
	eng := s.opts.Engine
	if eng == nil {
		return nil
	}
	s.mu.RLock()
	done := s.durable >= rev
	s.mu.RUnlock()
	if done {
		return nil
	}
	if err := eng.Barrier(); err != nil {
		return err
	}
	s.publish(rev)
	return nil
}

// publish marks every revision through rev durable and wakes the watches
// the newly durable changes concern. Syncs may complete out of order; the
// log is sequential, so a sync that covers rev covers every revision
// before it.
func (s *session) publish(rev int64) {
	s.mu.Lock()
	if !s.closed && rev > s.durable {
		first := s.history.first()
		for r := s.durable + 1; r <= rev; r++ {
			if s.history.n > 0 && r >= first {
				s.notify(s.history.at(r))
			} else {
				s.notifyAll(r) // trimmed before it was shown: whoever still needs it will resync
			}
		}
		s.durable = rev
	}
	s.unlockAndWake()
}

// Register is a RegisterVariable request.
type Register struct {
	Name        string
	Type        pb.VariableType
	Value       *pb.Value
	Constraints *pb.Constraints
	Metadata    map[string]string
	Source      string
}

// Register creates a variable and returns it with the revision it took.
func (st *Store) Register(sessionID string, r Register) (*pb.Variable, int64, error) {
	sess, err := st.writable(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if err := checkName("name", r.Name); err != nil {
		return nil, 0, err
	}
	if idPattern.MatchString(r.Name) {
		return nil, 0, fieldErr("name", "%q has the form of a variable id; choose another name", r.Name)
	}
	// The rules keep their own copy: the caller may reuse its request.
	rl, err := newRules(r.Type, proto.CloneOf(r.Constraints))
	if err != nil {
		return nil, 0, fmt.Errorf("variable %q: %w", r.Name, err)
	}
	if r.Value == nil || r.Value.Kind == nil {
		return nil, 0, fieldErr("initial_value", "is required for variable %q", r.Name)
	}
	if err := st.checkSize(r.Name, r.Value); err != nil {
		return nil, 0, err
	}
	if err := rl.check(r.Name, r.Value); err != nil {
		return nil, 0, err
	}
	var (
		pv  *pb.Variable
		rev int64
		p   Pending
	)
	err = st.locked(&sess, func(sess *session) (bool, error) {
		pv, rev, p, err = st.register(sess, r, rl)
		return err == nil, err
	})
	if err == nil {
		err = sess.settle(p, rev)
	}
	if err != nil {
		return nil, 0, err
	}
	return pv, rev, nil
}

// register is Register's part under sess.mu.
func (st *Store) register(sess *session, r Register, rl *rules) (*pb.Variable, int64, Pending, error) {
	if sess.closed {
		return nil, 0, nil, sessionNotFound(sess.id)
	}
	if _, ok := sess.byName[r.Name]; ok {
		return nil, 0, nil, &ExistsError{Session: sess.id, Name: r.Name}
	}
	if len(sess.byID) >= st.opts.MaxVariables {
		return nil, 0, nil, &LimitError{Limit: "max_variables_per_session", Max: int64(st.opts.MaxVariables), What: fmt.Sprintf("cannot register %q in session %q", r.Name, sess.id)}
	}
	source := sourceOf(r.Source, r.Metadata)
	now := st.opts.Now()
	ts := timestamppb.New(now)
	pv := &pb.Variable{
		Id: "var_" + randomHex(8), Name: r.Name, Type: r.Type, Value: proto.CloneOf(r.Value),
		Constraints: proto.Clone(rl.c).(*pb.Constraints), Metadata: cloneMap(r.Metadata), Version: 1, UpdatedAt: ts, CreatedAt: ts,
		Source: source, Revision: sess.revision + 1,
	}
	rev, p, err := sess.commit(now, ts, source, cloneMap(r.Metadata), []Item{{Kind: Registered, Var: pv}})
	if err != nil {
		return nil, 0, nil, err
	}
	v := &variable{rules: rl, cur: pv}
	sess.byID[pv.Id], sess.byName[pv.Name] = v, v
	return pv, rev, p, nil
}

// Get reads one variable and the revision it was read at.
func (st *Store) Get(sessionID, ident string) (v *pb.Variable, rev int64, err error) {
	if st.sh == nil { // one server: no copy to read again, and no closure
		return st.get(sessionID, ident)
	}
	err = st.reread(func() error { v, rev, err = st.get(sessionID, ident); return err })
	return v, rev, err
}

func (st *Store) get(sessionID, ident string) (*pb.Variable, int64, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if ident == "" {
		return nil, 0, fieldErr("variable_identifier", "is required")
	}
	sess.mu.RLock()
	if sess.closed {
		sess.mu.RUnlock()
		return nil, 0, sess.goneErr()
	}
	v := sess.lookup(ident)
	if v == nil {
		sess.mu.RUnlock()
		return nil, 0, &NotFoundError{Session: sess.id, Identifiers: []string{ident}}
	}
	cur, rev := v.cur, sess.revision
	sess.mu.RUnlock()
	if err := sess.settleRead(rev); err != nil {
		return nil, 0, err
	}
	return cur, rev, nil
}

// GetMany reads variables at one revision; found is keyed by the identifier
// as passed, and missing lists those that name nothing.
func (st *Store) GetMany(sessionID string, idents []string) (found map[string]*pb.Variable, missing []string, rev int64, err error) {
	if st.sh == nil {
		return st.getMany(sessionID, idents)
	}
	err = st.reread(func() error { found, missing, rev, err = st.getMany(sessionID, idents); return err })
	return found, missing, rev, err
}

func (st *Store) getMany(sessionID string, idents []string) (found map[string]*pb.Variable, missing []string, rev int64, err error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, nil, 0, err
	}
	if len(idents) == 0 {
		return nil, nil, 0, fieldErr("variable_identifiers", "is empty")
	}
	sess.mu.RLock()
	if sess.closed {
		sess.mu.RUnlock()
		return nil, nil, 0, sess.goneErr()
	}
	found = make(map[string]*pb.Variable, len(idents))
	for _, id := range idents {
		if v := sess.lookup(id); v != nil {
			found[id] = v.cur
		} else {
			missing = append(missing, id)
		}
	}
	rev = sess.revision
	sess.mu.RUnlock()
	if err := sess.settleRead(rev); err != nil {
		return nil, nil, 0, err
	}
	return found, missing, rev, nil
}

// Write is one variable write.
type Write struct {
	Identifier string
	// Value becomes the variable's state, shared with every watcher and the
	// history: the caller hands it over and must not change it afterwards.
	// (Both callers build it afresh: the server from a request, LocalState
	// with ToProto. A copy here cost a memcpy of every tensor written.
	// Register, which is rare, keeps a copy of what it is given.)
	Value *pb.Value
	// ExpectedVersion, when set, makes the write a compare-and-set.
	ExpectedVersion *int64
}

// BatchWrites turns a SetVariables request (identifier to value, and
// optional expected versions by identifier) into writes for Set; every
// expected version must name an identifier of updates.
func BatchWrites(updates map[string]*pb.Value, expected map[string]int64) ([]Write, error) {
	for id := range expected {
		if _, ok := updates[id]; !ok {
			return nil, fieldErr("expected_versions", "names %q, which is not in updates", id)
		}
	}
	writes := make([]Write, 0, len(updates))
	for id, v := range updates {
		w := Write{Identifier: id, Value: v}
		if ev, ok := expected[id]; ok {
			w.ExpectedVersion = &ev
		}
		writes = append(writes, w)
	}
	return writes, nil
}

// WriteResult reports a committed write. Changed is false for a no-op write,
// which takes no revision (Revision is then the current one).
type WriteResult struct {
	Variables []*pb.Variable // the state after the write, in the order of the writes
	Changed   []string       // identifiers whose value changed
	Revision  int64
}

// Set writes one or more variables atomically: every write is validated
// before any is applied, and all changes take one revision.
func (st *Store) Set(sessionID string, writes []Write, md map[string]string, source string) (WriteResult, error) {
	res, sess, p, err := st.apply(sessionID, writes, md, source)
	if err == nil {
		err = sess.settle(p, res.Revision)
	}
	if err != nil {
		return WriteResult{}, err
	}
	return res, nil
}

// Settle waits until a write that SetPipelined applied is durable and
// shows it to the watches; its error is the write's.
type Settle func() error

// SetPipelined is Set without the wait for durability: the write is
// applied (it has its revision, and later writes see it) when it returns,
// and settle, nil when there is nothing to wait for, waits until it is
// durable. Nobody may be told of the write before settle returns nil.
// A writer that applies writes one after another and settles them in the
// same order from another goroutine lets the engine commit them together
// (one fsync for many), which a writer waiting in Set for each cannot.
func (st *Store) SetPipelined(sessionID string, writes []Write, md map[string]string, source string) (WriteResult, Settle, error) {
	res, sess, p, err := st.apply(sessionID, writes, md, source)
	if err != nil {
		return WriteResult{}, nil, err
	}
	if p == nil {
		return res, nil, nil
	}
	return res, func() error { return sess.settle(p, res.Revision) }, nil
}

// Durable reports whether the store keeps its state on disk (an Engine),
// so that writes have something to settle.
func (st *Store) Durable() bool { return st.opts.Engine != nil }

// apply is Set up to the wait for durability: it checks and applies the
// writes under the session's lock and returns what to settle.
func (st *Store) apply(sessionID string, writes []Write, md map[string]string, source string) (WriteResult, *session, Pending, error) {
	sess, err := st.writable(sessionID)
	if err != nil {
		return WriteResult{}, nil, nil, err
	}
	if len(writes) == 0 {
		return WriteResult{}, nil, nil, fieldErr("updates", "is empty")
	}
	for _, w := range writes {
		if w.Identifier == "" {
			return WriteResult{}, nil, nil, fieldErr("variable_identifier", "is required")
		}
		if w.Value == nil || w.Value.Kind == nil {
			return WriteResult{}, nil, nil, fieldErr("value", "is required for %q", w.Identifier)
		}
		if err := st.checkSize(w.Identifier, w.Value); err != nil {
			return WriteResult{}, nil, nil, err
		}
	}
	source = sourceOf(source, md)

	var (
		res WriteResult
		p   Pending
	)
	if st.sh == nil { // the hot path, without locked's closure
		sess.mu.Lock()
		res, p, err = st.set(sess, writes, md, source)
		sess.unlockAndWake()
		return res, sess, p, err
	}
	err = st.locked(&sess, func(sess *session) (bool, error) {
		res, p, err = st.set(sess, writes, md, source)
		return len(res.Changed) > 0, err
	})
	return res, sess, p, err
}

// set is Set's part under sess.mu.
func (st *Store) set(sess *session, writes []Write, md map[string]string, source string) (WriteResult, Pending, error) {
	if sess.closed {
		return WriteResult{}, nil, sess.goneErr()
	}
	idents := make([]string, len(writes))
	for i, w := range writes {
		idents[i] = w.Identifier
	}
	vars, err := sess.resolve(idents)
	if err != nil {
		return WriteResult{}, nil, err
	}
	var seen map[*variable]string // a batch naming one variable twice
	if len(vars) > 1 {
		seen = make(map[*variable]string, len(vars))
	}
	for i, v := range vars {
		w := writes[i]
		if seen != nil {
			if prev, dup := seen[v]; dup {
				return WriteResult{}, nil, fieldErr("updates", "%q and %q name the same variable", prev, w.Identifier)
			}
			seen[v] = w.Identifier
		}
		if w.ExpectedVersion != nil && *w.ExpectedVersion != v.cur.Version {
			return WriteResult{}, nil, &VersionConflictError{Variable: v.cur.Name, Expected: *w.ExpectedVersion, Actual: v.cur.Version}
		}
		if err := v.rules.check(v.cur.Name, w.Value); err != nil {
			return WriteResult{}, nil, err
		}
	}

	res := WriteResult{Variables: make([]*pb.Variable, len(writes)), Revision: sess.revision}
	now := st.opts.Now()
	ts := timestamppb.New(now)
	var items []Item
	for i, v := range vars {
		w := writes[i]
		if ValuesEqual(v.cur.Value, w.Value) {
			res.Variables[i] = v.cur
			continue
		}
		// A new state that shares the unchanging parts (constraints,
		// metadata, created_at) with the old one, which stays valid for its
		// readers: published states are never modified.
		c := v.cur
		next := &pb.Variable{
			Id: c.Id, Name: c.Name, Type: c.Type, Value: w.Value, Constraints: c.Constraints,
			Metadata: c.Metadata, Version: c.Version + 1, UpdatedAt: ts, Source: source,
			Revision: sess.revision + 1, CreatedAt: c.CreatedAt,
		}
		items = append(items, Item{Kind: Updated, Var: next, Old: v.cur.Value})
		res.Variables[i] = next
		res.Changed = append(res.Changed, w.Identifier)
	}
	if len(items) > 0 {
		// One order for a batch's members on every client and engine, by
		// name, whatever order the writes came in (a map on the wire).
		if len(items) > 1 {
			slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.Var.Name, b.Var.Name) })
		}
		rev, p, err := sess.commit(now, ts, source, cloneMap(md), items)
		if err != nil {
			return WriteResult{}, nil, err
		}
		for i, v := range vars {
			v.cur = res.Variables[i]
		}
		res.Revision = rev
		return res, p, nil
	}
	// A write that changed nothing answers with the state it found, which
	// must be durable before anyone is told of it.
	if st.opts.Engine == nil {
		return res, nil, nil
	}
	return res, readPending{sess, res.Revision}, nil
}

// readPending waits until what a reader saw at rev is durable.
type readPending struct {
	sess *session
	rev  int64
}

func (r readPending) Wait() error { return r.sess.settleRead(r.rev) }

// List returns the variables whose names match a glob pattern (all when
// empty), sorted by name.
func (st *Store) List(sessionID, pattern string) (vars []*pb.Variable, rev int64, err error) {
	if st.sh == nil {
		return st.list(sessionID, pattern)
	}
	err = st.reread(func() error { vars, rev, err = st.list(sessionID, pattern); return err })
	return vars, rev, err
}

func (st *Store) list(sessionID, pattern string) ([]*pb.Variable, int64, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, 0, fieldErr("pattern", "%q is not a valid glob: %v", pattern, err)
	}
	sess.mu.RLock()
	if sess.closed {
		sess.mu.RUnlock()
		return nil, 0, sess.goneErr()
	}
	out := make([]*pb.Variable, 0, len(sess.byName))
	for name, v := range sess.byName {
		if ok, _ := path.Match(pattern, name); pattern == "" || ok {
			out = append(out, v.cur)
		}
	}
	rev := sess.revision
	sess.mu.RUnlock()
	if err := sess.settleRead(rev); err != nil {
		return nil, 0, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, rev, nil
}

// Delete removes a variable and returns it as it was.
func (st *Store) Delete(sessionID, ident string, md map[string]string, source string) (*pb.Variable, int64, error) {
	sess, err := st.writable(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if ident == "" {
		return nil, 0, fieldErr("variable_identifier", "is required")
	}
	var (
		old *pb.Variable
		rev int64
		p   Pending
	)
	err = st.locked(&sess, func(sess *session) (bool, error) {
		old, rev, p, err = st.delete(sess, ident, md, source)
		return err == nil, err
	})
	if err == nil {
		err = sess.settle(p, rev)
	}
	if err != nil {
		return nil, 0, err
	}
	return old, rev, nil
}

// delete is Delete's part under sess.mu.
func (st *Store) delete(sess *session, ident string, md map[string]string, source string) (*pb.Variable, int64, Pending, error) {
	if sess.closed {
		return nil, 0, nil, sessionNotFound(sess.id)
	}
	v := sess.lookup(ident)
	if v == nil {
		return nil, 0, nil, &NotFoundError{Session: sess.id, Identifiers: []string{ident}}
	}
	source = sourceOf(source, md)
	rev, p, err := sess.commit(st.opts.Now(), nil, source, cloneMap(md), []Item{{Kind: Deleted, Var: v.cur, Old: v.cur.Value}})
	if err != nil {
		return nil, 0, nil, err
	}
	delete(sess.byID, v.cur.Id)
	delete(sess.byName, v.cur.Name)
	return v.cur, rev, p, nil
}

func (st *Store) checkSize(name string, v *pb.Value) error {
	if st.opts.MaxValueBytes >= maxScalarBytes && scalar(v) {
		return nil // proto.Size would cost more than the rest of a small write
	}
	if n := proto.Size(v); n > st.opts.MaxValueBytes {
		return &LimitError{Limit: "max_value_bytes", Max: int64(st.opts.MaxValueBytes), What: fmt.Sprintf("value for %q is %d bytes", name, n)}
	}
	return nil
}

func sourceOf(source string, md map[string]string) string {
	if source != "" {
		return source
	}
	return md["source"]
}
