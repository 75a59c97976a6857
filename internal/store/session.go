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

	mu       sync.RWMutex
	closed   bool
	revision int64
	byID     map[string]*variable
	byName   map[string]*variable
	history  history
	watches  map[*Watch]struct{}
	watchAll map[*Watch]struct{}            // watches of every variable
	watchVar map[string]map[*Watch]struct{} // variable id -> watches
	toWake   []*Watch                       // marked by commits, woken on unlock

	filterBudget *Budget // spent by the where filters of all its watches
}

func newSession(id string, ttl time.Duration, md map[string]string, opts *Options) *session {
	now := opts.Now()
	s := &session{
		id: id, incarnation: randomHex(8), ttl: ttl, createdAt: now, metadata: md, opts: opts,
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

// commit takes the next revision for items, records them and marks the
// watches they concern, which unlockAndWake then wakes. The caller holds s.mu
// for writing.
func (s *session) commit(now time.Time, ts *timestamppb.Timestamp, source string, md map[string]string, items []Item) int64 {
	s.revision++
	if ts == nil {
		ts = timestamppb.New(now)
	}
	c := &Change{Revision: s.revision, Time: now, Timestamp: ts, Source: source, Metadata: md, Items: items}
	s.history.append(c)
	s.notify(c)
	return s.revision
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
	sess, err := st.session(sessionID)
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
	c := proto.Clone(rl.c).(*pb.Constraints)
	source := sourceOf(r.Source, r.Metadata)

	sess.mu.Lock()
	defer sess.unlockAndWake()
	if sess.closed {
		return nil, 0, sessionNotFound(sessionID)
	}
	if _, ok := sess.byName[r.Name]; ok {
		return nil, 0, &ExistsError{Session: sess.id, Name: r.Name}
	}
	if len(sess.byID) >= st.opts.MaxVariables {
		return nil, 0, &LimitError{Limit: "max_variables_per_session", Max: int64(st.opts.MaxVariables), What: fmt.Sprintf("cannot register %q in session %q", r.Name, sess.id)}
	}
	now := st.opts.Now()
	ts := timestamppb.New(now)
	pv := &pb.Variable{
		Id: "var_" + randomHex(8), Name: r.Name, Type: r.Type, Value: proto.CloneOf(r.Value),
		Constraints: c, Metadata: cloneMap(r.Metadata), Version: 1, UpdatedAt: ts, CreatedAt: ts,
		Source: source, Revision: sess.revision + 1,
	}
	v := &variable{rules: rl, cur: pv}
	sess.byID[pv.Id], sess.byName[pv.Name] = v, v
	rev := sess.commit(now, ts, source, cloneMap(r.Metadata), []Item{{Kind: Registered, Var: pv}})
	return pv, rev, nil
}

// Get reads one variable and the revision it was read at.
func (st *Store) Get(sessionID, ident string) (*pb.Variable, int64, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if ident == "" {
		return nil, 0, fieldErr("variable_identifier", "is required")
	}
	sess.mu.RLock()
	defer sess.mu.RUnlock()
	if sess.closed {
		return nil, 0, sessionNotFound(sessionID)
	}
	v := sess.lookup(ident)
	if v == nil {
		return nil, 0, &NotFoundError{Session: sess.id, Identifiers: []string{ident}}
	}
	return v.cur, sess.revision, nil
}

// GetMany reads variables at one revision; found is keyed by the identifier
// as passed, and missing lists those that name nothing.
func (st *Store) GetMany(sessionID string, idents []string) (found map[string]*pb.Variable, missing []string, rev int64, err error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, nil, 0, err
	}
	if len(idents) == 0 {
		return nil, nil, 0, fieldErr("variable_identifiers", "is empty")
	}
	sess.mu.RLock()
	defer sess.mu.RUnlock()
	if sess.closed {
		return nil, nil, 0, sessionNotFound(sessionID)
	}
	found = make(map[string]*pb.Variable, len(idents))
	for _, id := range idents {
		if v := sess.lookup(id); v != nil {
			found[id] = v.cur
		} else {
			missing = append(missing, id)
		}
	}
	return found, missing, sess.revision, nil
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
	sess, err := st.session(sessionID)
	if err != nil {
		return WriteResult{}, err
	}
	if len(writes) == 0 {
		return WriteResult{}, fieldErr("updates", "is empty")
	}
	for _, w := range writes {
		if w.Identifier == "" {
			return WriteResult{}, fieldErr("variable_identifier", "is required")
		}
		if w.Value == nil || w.Value.Kind == nil {
			return WriteResult{}, fieldErr("value", "is required for %q", w.Identifier)
		}
		if err := st.checkSize(w.Identifier, w.Value); err != nil {
			return WriteResult{}, err
		}
	}
	source = sourceOf(source, md)

	sess.mu.Lock()
	defer sess.unlockAndWake()
	if sess.closed {
		return WriteResult{}, sessionNotFound(sessionID)
	}
	idents := make([]string, len(writes))
	for i, w := range writes {
		idents[i] = w.Identifier
	}
	vars, err := sess.resolve(idents)
	if err != nil {
		return WriteResult{}, err
	}
	var seen map[*variable]string // a batch naming one variable twice
	if len(vars) > 1 {
		seen = make(map[*variable]string, len(vars))
	}
	for i, v := range vars {
		w := writes[i]
		if seen != nil {
			if prev, dup := seen[v]; dup {
				return WriteResult{}, fieldErr("updates", "%q and %q name the same variable", prev, w.Identifier)
			}
			seen[v] = w.Identifier
		}
		if w.ExpectedVersion != nil && *w.ExpectedVersion != v.cur.Version {
			return WriteResult{}, &VersionConflictError{Variable: v.cur.Name, Expected: *w.ExpectedVersion, Actual: v.cur.Version}
		}
		if err := v.rules.check(v.cur.Name, w.Value); err != nil {
			return WriteResult{}, err
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
		v.cur = next
		res.Variables[i] = next
		res.Changed = append(res.Changed, w.Identifier)
	}
	if len(items) > 0 {
		// One order for a batch's members on every client and engine, by
		// name, whatever order the writes came in (a map on the wire).
		if len(items) > 1 {
			slices.SortFunc(items, func(a, b Item) int { return strings.Compare(a.Var.Name, b.Var.Name) })
		}
		res.Revision = sess.commit(now, ts, source, cloneMap(md), items)
	}
	return res, nil
}

// List returns the variables whose names match a glob pattern (all when
// empty), sorted by name.
func (st *Store) List(sessionID, pattern string) ([]*pb.Variable, int64, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, 0, fieldErr("pattern", "%q is not a valid glob: %v", pattern, err)
	}
	sess.mu.RLock()
	out := make([]*pb.Variable, 0, len(sess.byName))
	for name, v := range sess.byName {
		if ok, _ := path.Match(pattern, name); pattern == "" || ok {
			out = append(out, v.cur)
		}
	}
	rev := sess.revision
	sess.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, rev, nil
}

// Delete removes a variable and returns it as it was.
func (st *Store) Delete(sessionID, ident string, md map[string]string, source string) (*pb.Variable, int64, error) {
	sess, err := st.session(sessionID)
	if err != nil {
		return nil, 0, err
	}
	if ident == "" {
		return nil, 0, fieldErr("variable_identifier", "is required")
	}
	sess.mu.Lock()
	defer sess.unlockAndWake()
	if sess.closed {
		return nil, 0, sessionNotFound(sessionID)
	}
	v := sess.lookup(ident)
	if v == nil {
		return nil, 0, &NotFoundError{Session: sess.id, Identifiers: []string{ident}}
	}
	delete(sess.byID, v.cur.Id)
	delete(sess.byName, v.cur.Name)
	source = sourceOf(source, md)
	rev := sess.commit(st.opts.Now(), nil, source, cloneMap(md), []Item{{Kind: Deleted, Var: v.cur, Old: v.cur.Value}})
	return v.cur, rev, nil
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
