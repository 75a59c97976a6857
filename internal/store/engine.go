package store

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Engine keeps a Store's state across restarts. The Store still serves
// every read and watch from memory; an engine only records each mutation,
// in the order the Store made them, and gives them back at startup. Without
// one (Options.Engine nil) the Store is memory only.
//
// The Store calls Save under the lock that orders the mutations it records
// (a session's lock for its variables, the store's for sessions coming and
// going), so Save must be quick: it orders the mutation (a write to a log)
// and hands back a Pending that the Store waits on after releasing the
// lock. That is how concurrent writers share a sync: they wait together.
type Engine interface {
	// Load gives back every session kept, one at a time.
	Load(fn func(*Saved) error) error
	// Save records a mutation after every one saved before it.
	Save(m *Mutation) (Pending, error)
	// Barrier returns once everything saved before it is durable.
	Barrier() error
	// Close releases the engine; the Store calls it from Close.
	Close() error
}

// Pending is a saved mutation on its way to disk.
type Pending interface {
	// Wait returns once the mutation is durable, or the reason it is not.
	// It is called exactly once.
	Wait() error
}

// SessionRecord is what an engine keeps of a session apart from its
// variables and history.
type SessionRecord struct {
	ID          string
	Incarnation string
	TTL         time.Duration
	CreatedAt   time.Time
	Metadata    map[string]string
	// TokenHash is the SHA-256 of the session's auth token, when the server
	// requires auth; the store keeps it for the server.
	TokenHash []byte
	Revision  int64
	// Lease is the id of the lease that carries the session's TTL, on an
	// engine that has leases (etcd); others leave it 0.
	Lease int64
}

// Expiry is a session's expiry deadline as last recorded. Watched says the
// session had open watches then: its deadline is not counting, and after a
// restart it counts from the restart, giving the watchers time to return.
type Expiry struct {
	Deadline time.Time
	Watched  bool
}

// Mutation is one change to record. Exactly one of its forms is set:
//   - Create: a new session (Session and Expiry);
//   - Change: a committed Change of Session (its header, with the new
//     revision), the variables it put or deleted, and the history records
//     it trimmed (revisions TrimFrom to TrimBelow, TrimBelow excluded);
//   - Expiry alone: a session's deadline moved (never waited for);
//   - Drop: the session and everything of it is gone.
type Mutation struct {
	Session   *SessionRecord
	Create    bool
	Change    *Change
	Put       []*pb.Variable
	Delete    []string // variable ids
	TrimFrom  int64
	TrimBelow int64
	Expiry    *Expiry
	Drop      string // session id
	// Fence is, for a Shared engine, the version of the session the
	// mutation was made against (see Shared): Save refuses it with
	// ErrStale when another server has changed the session since, and on
	// success sets Fence to the version it made (and Session.Lease, for a
	// Create). Other engines ignore it.
	Fence int64
}

// Saved is one session as an engine gives it back.
type Saved struct {
	Session   SessionRecord
	Expiry    Expiry
	Variables []*pb.Variable
	// History holds the kept changes in revision order. Items' Var and Old
	// are complete; variables in Variables and items are separate copies.
	History []*Change
	// Fence is the version of the session this was read at (Shared
	// engines; see Mutation.Fence).
	Fence int64
}

// ErrStorage is matched by every error of an engine's storage: the disk is
// full, or a write or sync failed.
var ErrStorage = errors.New("storage error")

// StorageFullError refuses a write because the data directory's disk is
// (nearly) full. Nothing was written; writes succeed again once space is
// freed.
type StorageFullError struct {
	Dir       string
	Available uint64 // bytes
	Reserve   uint64 // bytes the engine keeps free for its own work
}

// Error says how little space is left and what to do.
func (e *StorageFullError) Error() string {
	return fmt.Sprintf("%v: the disk of data directory %s is full (%d bytes available, %d kept in reserve): free space there; writes resume by themselves",
		ErrStorage, e.Dir, e.Available, e.Reserve)
}

// Is makes a StorageFullError match ErrStorage.
func (e *StorageFullError) Is(target error) bool { return target == ErrStorage }

// StorageFailedError reports a storage failure after which the engine
// cannot promise what is on disk: the write that met it is not
// acknowledged, and no later one is, until a restart recovers from disk.
type StorageFailedError struct {
	Dir string
	Err error
}

// Error names the failure and what to do.
func (e *StorageFailedError) Error() string {
	return fmt.Sprintf("%v: storage in %s failed (%v): writes are refused until the server restarts and recovers from disk", ErrStorage, e.Dir, e.Err)
}

// Is makes a StorageFailedError match ErrStorage.
func (e *StorageFailedError) Is(target error) bool { return target == ErrStorage }

// Unwrap returns the engine's error.
func (e *StorageFailedError) Unwrap() error { return e.Err }

// UnavailableError reports that a shared engine (etcd) could not be reached
// in time. A write that meets it may or may not have been made: its
// outcome is unknown, as when a server dies mid-call. Clients retry, on
// another server if this one stays cut off.
type UnavailableError struct {
	Engine string // e.g. "etcd at h1:2379,h2:2379"
	What   string // what was being done
	Err    error
}

// Error names the engine, what failed and why.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%v: %s: %s is unavailable (%v); the outcome of a write is unknown: retry, or use another server", ErrStorage, e.What, e.Engine, e.Err)
}

// Is makes an UnavailableError match ErrStorage.
func (e *UnavailableError) Is(target error) bool { return target == ErrStorage }

// Unwrap returns the engine's error.
func (e *UnavailableError) Unwrap() error { return e.Err }
