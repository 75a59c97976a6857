// Package varbridge shares typed, session-scoped variables between Go and
// Python in real time.
//
// A StateProvider is one session's variables. BridgedState reaches a
// varbridge server over gRPC; package local's State (the seed's LocalState)
// keeps them in process (the same SessionStore and watch machinery the
// server runs, no network). Both have the same API and the same semantics,
// down to revisions and error values, so a program can start local and move
// its session to a server with Export and Import. A program that only talks
// to a server imports this package alone, and links neither the store nor
// the CEL interpreter of where filters.
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
	// Failovers counts the breaks a BridgedState watch on several servers
	// retried at once on another server that was up, without backoff and
	// without counting them towards giving up.
	Failovers int64
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

// Snapshot is a session's variables at one revision, from Export.
type Snapshot struct {
	SessionID string
	Revision  int64
	Variables []*Variable
}
