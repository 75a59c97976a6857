// Package varbridge shares typed, session-scoped variables between Go and
// Python in real time.
//
// A StateProvider is one session's variables. LocalState keeps them in
// process (the same SessionStore and watch machinery the server runs, no
// network); BridgedState reaches a varbridge server over gRPC. Both have the
// same API and the same semantics, down to revisions and error values, so a
// program can start local and move its session to a server with Export and
// Import.
//
// Watches are ordered, gapless and unique: WatchVariables registers the
// observer before it reads the initial values, every change after them
// follows in revision order, and a BridgedState watch that loses its
// connection resumes exactly where it stopped.
package varbridge

import (
	"context"
	"fmt"
	"time"
)

// StateProvider is one session's variables, local or remote.
//
// Every method that talks to the session takes a context first; identifiers
// are a variable's id or its name.
type StateProvider interface {
	// SessionID returns the session's id.
	SessionID() string
	// Register creates a variable of type t with an initial value. Options:
	// WithConstraints, WithMetadata (the variable's metadata), WithSource.
	Register(ctx context.Context, name string, t Type, initial any, opts ...WriteOption) (*Variable, error)
	// Get reads one variable.
	Get(ctx context.Context, identifier string) (*Variable, error)
	// GetMany reads variables at one revision; found is keyed by identifier
	// as passed, missing lists the identifiers that name nothing.
	GetMany(ctx context.Context, identifiers []string) (found map[string]*Variable, missing []string, err error)
	// Set writes one variable. Options: WithExpectedVersion (compare-and-set,
	// ErrVersionConflict on mismatch), WithMetadata (delivered to watchers),
	// WithSource. Writing the current value is a no-op.
	Set(ctx context.Context, identifier string, value any, opts ...WriteOption) (*Variable, error)
	// SetMany writes variables atomically: all or nothing, at one revision.
	// Options: WithExpectedVersions, WithMetadata, WithSource. The result is
	// keyed by identifier as passed.
	SetMany(ctx context.Context, updates map[string]any, opts ...WriteOption) (map[string]*Variable, error)
	// Delete removes a variable; watchers get a Deleted update.
	Delete(ctx context.Context, identifier string, opts ...WriteOption) error
	// List returns the variables whose names match a glob pattern ("" for
	// all), sorted by name.
	List(ctx context.Context, pattern string) ([]*Variable, error)
	// Export returns the session's variables as a Snapshot.
	Export(ctx context.Context) (*Snapshot, error)
	// Import registers a Snapshot's variables in this session; those that
	// exist already take the snapshot's value.
	Import(ctx context.Context, s *Snapshot) error

	// SupportsWatching reports whether WatchVariables works.
	SupportsWatching() bool
	// WatchVariables calls w for every change of the identified variables
	// (none: every variable in the session) until ctx ends or the watch is
	// removed with UnwatchVariables. Identifiers that name nothing fail the
	// call with a NotFoundError listing all of them. Calls of w for one
	// watch are sequential and in revision order.
	WatchVariables(ctx context.Context, identifiers []string, w Watcher, opts ...WatchOption) (WatchRef, error)
	// UnwatchVariables stops a watch and forgets it; ErrUnknownWatch if ref
	// is not one of this provider's watches. When it returns, the watcher
	// is not running and will not be called again (called from inside the
	// watcher itself, it returns at once and no further call starts).
	UnwatchVariables(ref WatchRef) error
	// ListWatchers describes every watch not yet removed, alive or not.
	ListWatchers() []WatchInfo

	// Close stops every watch, waiting for their watchers as
	// UnwatchVariables does, and releases the provider's resources.
	Close() error
}

// Watcher receives one update: identifier is exactly as the caller passed
// it (for a watch of every variable, the variable's name); old and new are
// Go values (see Variable.Value), nil where there is none (old for initial
// values, new for deletions).
type Watcher func(identifier string, old, new any, meta UpdateMeta)

// UpdateMeta describes an update.
type UpdateMeta struct {
	VariableID string
	Name       string
	Type       Type
	Version    int64
	Revision   int64             // the session revision of the change
	Source     string            // who wrote it
	Metadata   map[string]string // the writer's metadata
	Timestamp  time.Time
	// Incarnation is the incarnation of the session the revision belongs
	// to: resume with WithStartRevision(Revision+1) and
	// WithIncarnation(Incarnation).
	Incarnation string
	Initial     bool // an initial value (WithInitialValues)
	// Resync: the current value, sent instead of the changes that led to it
	// because the history holding them was lost, or the session was created
	// again (a new Incarnation) while the watch was away.
	Resync  bool
	Deleted bool // the variable was deleted; old holds its last value
}

// Update is one watch update, for the channel and iterator forms.
type Update struct {
	Identifier string
	Old, New   any
	Meta       UpdateMeta
	// Err is set on the last value a Watch channel sends when the watch
	// ended with an error; the other fields are then empty.
	Err error
}

// WatchRef identifies a watch of one provider.
type WatchRef struct{ id uint64 }

// String returns a short printable form of the ref.
func (r WatchRef) String() string { return fmt.Sprintf("watch-%d", r.id) }

// IsZero reports whether r is the zero WatchRef, which names no watch.
func (r WatchRef) IsZero() bool { return r.id == 0 }

// WatchInfo describes one watch for ListWatchers.
type WatchInfo struct {
	Ref         WatchRef
	Identifiers []string
	// Alive is false once the watch stopped: its context ended, it gave up
	// reconnecting, or its session closed. Reason then says why.
	Alive  bool
	Reason string
	// UpdatesReceived counts the updates that reached the client (heartbeats
	// excluded); UpdatesFiltered those a WithFilter function dropped.
	UpdatesReceived int64
	UpdatesFiltered int64
	Errors          int64 // stream errors and failed (re)connects
	Panics          int64 // watcher and filter panics, recovered
	Reconnects      int64 // streams re-opened after a break
	// DuplicatesSkipped counts updates a resumed stream sent again (the
	// members of a batch delivered before a cut) and the watch dropped.
	DuplicatesSkipped int64
	StartedAt         time.Time
	Uptime            time.Duration
	// LastRevision is the latest revision the watch has fully covered, in
	// the session incarnation Incarnation.
	LastRevision int64
	Incarnation  string
	LastError    error
}

// SessionInfo describes a session, from Heartbeat.
type SessionInfo struct {
	ID string
	// Incarnation is random, fixed when the session was created and new
	// whenever a session with this id is created again: revisions compare
	// only within one incarnation.
	Incarnation   string
	CreatedAt     time.Time
	ExpiresAt     time.Time
	TTL           time.Duration
	Revision      int64 // the revision of the session's last change
	VariableCount int64
	WatchCount    int64
	Metadata      map[string]string
}

// WriteOption configures Register, Set, SetMany and Delete.
type WriteOption func(*writeOptions)

type writeOptions struct {
	metadata         map[string]string
	source           string
	expectedVersion  *int64
	expectedVersions map[string]int64
	constraints      *Constraints
}

func newWriteOptions(opts []WriteOption) writeOptions {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithMetadata attaches metadata: for Register the variable's own metadata,
// for writes the writer's metadata that watchers receive in
// UpdateMeta.Metadata. Its "source" key is the source when WithSource is not
// given.
func WithMetadata(md map[string]string) WriteOption {
	return func(o *writeOptions) { o.metadata = md }
}

// WithSource names the writer (UpdateMeta.Source, Variable.Source).
func WithSource(source string) WriteOption { return func(o *writeOptions) { o.source = source } }

// WithExpectedVersion makes Set a compare-and-set: it applies only if the
// variable is at version v, else fails with ErrVersionConflict.
func WithExpectedVersion(v int64) WriteOption {
	return func(o *writeOptions) { o.expectedVersion = &v }
}

// WithExpectedVersions makes SetMany a compare-and-set per identifier.
func WithExpectedVersions(versions map[string]int64) WriteOption {
	return func(o *writeOptions) { o.expectedVersions = versions }
}

// WithConstraints sets a variable's constraints at Register.
func WithConstraints(c Constraints) WriteOption {
	return func(o *writeOptions) { o.constraints = &c }
}

// Snapshot is a session's variables at one revision, from Export.
type Snapshot struct {
	SessionID string
	Revision  int64
	Variables []*Variable
}

// Defaults for watches.
const (
	DefaultMaxFailures = 10
	DefaultBackoffBase = time.Second
	DefaultBackoffCap  = 30 * time.Second
	// BackoffJitter is the fraction by which a reconnect delay varies, either way.
	BackoffJitter = 0.1
)

// WatchOption configures WatchVariables.
type WatchOption func(*watchConfig)

type watchConfig struct {
	initial       bool
	filter        func(old, new any) bool
	where         string
	coalesce      bool
	heartbeat     time.Duration
	startRevision int64
	onError       func(error)
	maxFailures   int
	backoffBase   time.Duration
	backoffCap    time.Duration
	batched       bool
	incarnation   string
	onDone        func(error)
	// onStop, when set, runs when UnwatchVariables or Close stops the
	// watch, before they wait for it (Watch's channel form uses it to
	// release a watcher blocked on a full channel).
	onStop func()
}

func newWatchConfig(opts []WatchOption) watchConfig {
	c := watchConfig{maxFailures: DefaultMaxFailures, backoffBase: DefaultBackoffBase, backoffCap: DefaultBackoffCap}
	for _, opt := range opts {
		opt(&c)
	}
	if c.maxFailures <= 0 {
		c.maxFailures = DefaultMaxFailures
	}
	if c.backoffBase <= 0 {
		c.backoffBase = DefaultBackoffBase
	}
	if c.backoffCap < c.backoffBase {
		c.backoffCap = c.backoffBase
	}
	return c
}

// WithInitialValues delivers each watched variable's current value first
// (UpdateMeta.Initial), read at the revision after which changes follow.
// WithInitialValues() and WithInitialValues(true) turn it on,
// WithInitialValues(false) off. The default is off, the seed's
// include_initial: false, as in Python's watch_variables and the CLI
// (variables.Watch turns it on by default). Ignored with WithStartRevision.
func WithInitialValues(on ...bool) WatchOption {
	v := len(on) == 0 || on[0]
	return func(c *watchConfig) { c.initial = v }
}

// WithFilter drops value changes for which f(old, new) is false; initial
// values, resyncs and deletions always pass. A panicking filter counts as
// true. Dropped updates still advance the resume point.
func WithFilter(f func(old, new any) bool) WatchOption { return func(c *watchConfig) { c.filter = f } }

// WithWhere filters on the server side with a CEL expression over old, new,
// name and metadata, e.g. `new > 0.5 && metadata.source != "me"`.
func WithWhere(expr string) WatchOption { return func(c *watchConfig) { c.where = expr } }

// WithCoalesce delivers only the latest value per variable when the watch
// is behind (intermediate values are skipped, not delayed).
func WithCoalesce(on bool) WatchOption { return func(c *watchConfig) { c.coalesce = on } }

// WithHeartbeat sets how often the server reports the revision a quiet watch
// has covered (default 5 s), which keeps resumes exact in a busy session.
func WithHeartbeat(d time.Duration) WatchOption { return func(c *watchConfig) { c.heartbeat = d } }

// WithStartRevision resumes: every change with revision >= rev is delivered
// (a Resync update when the server's history no longer holds them). A rev
// beyond the session's revision + 1 fails with a RevisionOutOfRangeError
// unless WithIncarnation names another incarnation of the session.
func WithStartRevision(rev int64) WatchOption {
	return func(c *watchConfig) { c.startRevision = rev }
}

// WithIncarnation names the session incarnation a WithStartRevision
// revision was seen in (UpdateMeta.Incarnation). When the session has
// another one now (it was created again: after a cleanup, an expiry or a
// server that lost it), the revision belongs to another history: the watch
// starts with Resync updates of the current values instead of resuming
// silently at a revision that means something else.
func WithIncarnation(incarnation string) WatchOption {
	return func(c *watchConfig) { c.incarnation = incarnation }
}

// WithErrorHandler adds f to the functions called once, from the watch's
// goroutine, with the error that ended the watch: it gave up reconnecting
// (ErrGaveUp), hit an error that retrying cannot fix, or its session
// closed. Unwatching and ending the context are not errors. Each
// WithErrorHandler adds a handler; they run in the order given.
func WithErrorHandler(f func(error)) WatchOption {
	return func(c *watchConfig) {
		prev := c.onError
		if prev == nil {
			c.onError = f
			return
		}
		c.onError = func(err error) {
			prev(err)
			f(err)
		}
	}
}

// WithDoneHandler adds f to the functions called once when a started watch
// has ended for any reason: its context ended, UnwatchVariables, the
// provider's Close, or an error (then err is that error, as
// WithErrorHandler gets it; otherwise nil). They run from the watch's
// goroutine after its last watcher call has returned, so everything the
// watcher was handed is in by then; that goroutine is gone right after.
// They let whatever serves a watch (Watch's channel, variables.Watch's
// debounce loop) end with it instead of waiting for a context that may
// never end. Each WithDoneHandler adds a handler; they run in the order
// given.
func WithDoneHandler(f func(err error)) WatchOption {
	return func(c *watchConfig) {
		prev := c.onDone
		if prev == nil {
			c.onDone = f
			return
		}
		c.onDone = func(err error) {
			prev(err)
			f(err)
		}
	}
}

// WithMaxFailures sets after how many consecutive failed connects or broken
// streams a BridgedState watch gives up (default 10); a received message
// resets the count.
func WithMaxFailures(n int) WatchOption { return func(c *watchConfig) { c.maxFailures = n } }

// WithBackoff sets the reconnect delays of a BridgedState watch: after a
// break it reconnects at once (within 10% of base, at random), then waits
// base after the second consecutive failure, doubling per failure up to
// limit, each with 10% jitter (defaults 1 s and 30 s).
func WithBackoff(base, limit time.Duration) WatchOption {
	return func(c *watchConfig) { c.backoffBase, c.backoffCap = base, limit }
}

// WithBatchedStream makes a BridgedState watch use WatchVariableBatches:
// the same updates with the same guarantees, but every update that is ready
// travels in one message, so a watch that is far behind catches up with
// fewer, larger messages. The default, WatchVariables, sends one message per
// update, so a connection that breaks often still makes progress message by
// message; a batched stream cut more often than a large batch takes to
// arrive would not.
func WithBatchedStream(on bool) WatchOption { return func(c *watchConfig) { c.batched = on } }
