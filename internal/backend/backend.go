// Package backend is the seam below varbridge's public Go API: one way to
// reach a session's variables. The root package's BridgedState (a server
// over gRPC) and package local's State (the in-process store) each
// implement Backend; the root package turns a Backend into the
// StateProvider API once (options, value conversion, the closed check, the
// watch registry and the watch rules), so a new way in (HTTP, etcd) is one
// more Backend, not a copy of those rules.
//
// It lives below both packages so that neither reaches into the other:
// importing BridgedState does not link the store, the feed or cel-go, and
// package local reaches the provider only through NewProvider. Its
// vocabulary is the wire's: values and variables as protobuf messages,
// errors already the ones varbridge returns (internal/verr's types and the
// root package's sentinels).
package backend

import (
	"context"
	"time"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Backend is one way to reach a session's variables. Writes take their
// arguments and write options rather than a request message: the local
// Set then allocates nothing for it.
type Backend interface {
	// Ready is checked after the provider's closed check, before anything
	// else (local: the context's error; gRPC: nil, gRPC checks it).
	Ready(ctx context.Context) error
	Register(ctx context.Context, name string, t pb.VariableType, val *pb.Value, o WriteOptions) (*pb.Variable, error)
	Get(ctx context.Context, identifier string) (*pb.Variable, error)
	GetMany(ctx context.Context, identifiers []string) (*pb.GetVariablesResponse, error)
	Set(ctx context.Context, identifier string, val *pb.Value, o WriteOptions) (*pb.Variable, error)
	// SetMany returns the variables written, keyed by identifier as passed.
	SetMany(ctx context.Context, updates map[string]*pb.Value, o WriteOptions) (map[string]*pb.Variable, error)
	Delete(ctx context.Context, identifier string, o WriteOptions) error
	List(ctx context.Context, pattern string) (*pb.ListVariablesResponse, error)
	Heartbeat(ctx context.Context) (*pb.Session, error)
	// Cleanup removes the session, ending every watch on it.
	Cleanup(ctx context.Context) error
	// OpenWatch opens a watch and returns its feed, not yet running: when
	// it returns, every later write reaches the feed. build makes the
	// watch's sink from what the backend learnt while opening it; the
	// feed delivers into that sink.
	OpenWatch(ctx context.Context, identifiers []string, cfg WatchConfig, build func(Start) Sink) (Feed, error)
	// Release frees what the backend holds, once, when the provider closes.
	Release()
}

// WriteOptions are a write's options, as the root package's WriteOptions
// set them.
type WriteOptions struct {
	Metadata         map[string]string
	Source           string
	ExpectedVersion  *int64
	ExpectedVersions map[string]int64
	Constraints      *pb.Constraints // Register only
}

// WatchConfig is what a backend needs of a watch's options; the rest
// (filter, handlers, reconnect schedule) stays with the provider's watch.
type WatchConfig struct {
	Initial       bool
	Where         string
	Coalesce      bool
	Heartbeat     time.Duration
	StartRevision int64
	Incarnation   string
}

// Start is what a backend knows about a watch when it opens it.
type Start struct {
	// IdentOf maps a variable id to the identifier the caller passed; nil
	// for a watch of every variable.
	IdentOf func(varID string) (string, bool)
	// StartsAfter is the revision the watch starts after: updates with a
	// later revision follow.
	StartsAfter int64
	// Incarnation is the session incarnation the watch reports until its
	// feed says otherwise ("" when not known yet).
	Incarnation string
	// Ctx is the watch's lifetime (WatchContext); Cancel ends it and
	// releases what its feed holds open.
	Ctx    context.Context
	Cancel context.CancelFunc
}

// Sink is the watch a feed delivers into. Exactly one goroutine, the one
// running the feed, calls it.
type Sink interface {
	// Deliver hands one update to the watcher (heartbeats call nothing).
	// It records no progress.
	Deliver(u *pb.VariableUpdate)
	// Complete records that every update through rev was delivered: the
	// watch's progress.
	Complete(rev int64)
}

// A Feed is where a watch's updates come from: the in-process store's
// cursor, or a gRPC stream that reconnects and resumes by itself.
type Feed interface {
	// Run hands the watch's updates to its sink, records progress with
	// Complete, and returns why it stopped: an error when the feed failed
	// for good, or anything once ctx ended. It releases what the feed holds
	// before it returns.
	Run(ctx context.Context) error
	// Discard releases what the feed holds when it will never run (the
	// provider closed while the watch was being opened).
	Discard()
}

// Session is what a provider's options say about the session to create or
// join.
type Session struct {
	ID       string // "" for a new session with a generated id
	TTL      time.Duration
	Metadata map[string]string
}

// NewProvider wraps a backend in the root package's StateProvider API.
// Package varbridge sets it when it initializes; package local, which
// imports varbridge and so initializes after it, calls it. It is a
// variable rather than an exported function because varbridge's provider
// and options are not part of its API, and this package cannot name
// varbridge's types (varbridge imports it), hence the two anys: opts is a
// []varbridge.Option, and the result is the provider, which has every
// method of varbridge.StateProvider plus Heartbeat and CleanupSession.
//
// open creates or joins the session the options describe and returns the
// backend that reaches it and the session's id; when it fails, NewProvider
// returns its error.
var NewProvider func(opts any, open func(Session) (Backend, string, error)) (any, error)

// WatchContext derives a watch's lifetime from the caller's context
// without its deadline: a deadline on a gRPC stream would become a
// grpc-timeout that kills the watch later. Ending ctx still ends the watch.
func WatchContext(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return wctx, func() { stop(); cancel() }
}

// HeartbeatMs is a heartbeat interval for the wire; a positive interval
// under a millisecond stays positive (the feed raises it to its minimum).
func HeartbeatMs(d time.Duration) int64 {
	if d > 0 {
		return max(d.Milliseconds(), 1)
	}
	return d.Milliseconds()
}
