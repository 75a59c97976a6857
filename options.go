package varbridge

import (
	"crypto/tls"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/varbridge/varbridge/internal/backend"
)

// Option configures NewBridgedState and local.New. Each says which of the
// two it applies to; the other ignores it.
type Option func(*options)

type options struct {
	sessionID      string
	ttl            time.Duration
	sessionMeta    map[string]string
	log            *slog.Logger
	tlsConfig      *tls.Config
	token          string
	streamsPerConn int
	dialOpts       []grpc.DialOption
	keepTime       time.Duration
	keepTimeout    time.Duration
}

// Defaults for BridgedState connections.
const (
	// DefaultStreamsPerConn is how many watches share one connection before
	// the pool opens another (HTTP/2 servers commonly allow 100 concurrent
	// streams).
	DefaultStreamsPerConn = 100
	// DefaultKeepaliveTime is how often an idle connection is pinged; the
	// server accepts pings every 10 s or less often.
	DefaultKeepaliveTime = 30 * time.Second
	// DefaultKeepaliveTimeout is how long a ping may go unanswered before
	// the connection (and its watches, which then reconnect) is dropped.
	DefaultKeepaliveTimeout = 10 * time.Second
)

func newOptions(opts []Option) options {
	o := options{
		log: slog.Default(), streamsPerConn: DefaultStreamsPerConn,
		keepTime: DefaultKeepaliveTime, keepTimeout: DefaultKeepaliveTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.streamsPerConn <= 0 {
		o.streamsPerConn = DefaultStreamsPerConn
	}
	return o
}

// WithSessionID names the session to create or join (both). Without it a
// new session with a generated id is created.
func WithSessionID(id string) Option { return func(o *options) { o.sessionID = id } }

// WithSessionTTL sets the idle time after which a new session expires
// (both; default: the store's or server's, 1 h).
func WithSessionTTL(ttl time.Duration) Option { return func(o *options) { o.ttl = ttl } }

// WithSessionMetadata sets a new session's metadata (both).
func WithSessionMetadata(md map[string]string) Option {
	return func(o *options) { o.sessionMeta = md }
}

// WithLogger sets where watcher panics and watch failures are logged (both;
// default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithTLS connects a BridgedState over TLS with the given configuration.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tlsConfig = cfg } }

// WithToken sends "authorization: Bearer <token>" on every call of a
// BridgedState. Without it, the session token that InitializeSession
// returns (when the server requires auth) is used.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithStreamsPerConn sets how many watches share one pooled connection
// before another is opened (BridgedState; default 100). The first
// BridgedState to reach a target sets it for that target's pool.
func WithStreamsPerConn(n int) Option { return func(o *options) { o.streamsPerConn = n } }

// WithKeepalive sets the client keepalive ping interval and timeout
// (BridgedState; defaults 30 s and 10 s). Servers reject pings more frequent
// than they permit (varbridge: every 10 s).
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) { o.keepTime, o.keepTimeout = interval, timeout }
}

// WithDialOptions adds grpc.DialOptions (BridgedState). The state then gets
// connections of its own instead of the shared ones for its target.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WriteOption configures Register, Set, SetMany and Delete.
type WriteOption func(*writeOptions)

// writeOptions are what the backends take as they are.
type writeOptions = backend.WriteOptions

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
	return func(o *writeOptions) { o.Metadata = md }
}

// WithSource names the writer (UpdateMeta.Source, Variable.Source).
func WithSource(source string) WriteOption { return func(o *writeOptions) { o.Source = source } }

// WithExpectedVersion makes Set a compare-and-set: it applies only if the
// variable is at version v, else fails with ErrVersionConflict.
func WithExpectedVersion(v int64) WriteOption {
	return func(o *writeOptions) { o.ExpectedVersion = &v }
}

// WithExpectedVersions makes SetMany a compare-and-set per identifier.
func WithExpectedVersions(versions map[string]int64) WriteOption {
	return func(o *writeOptions) { o.ExpectedVersions = versions }
}

// WithConstraints sets a variable's constraints at Register.
func WithConstraints(c Constraints) WriteOption {
	return func(o *writeOptions) { o.Constraints = c.proto() }
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

// watchConfig is a watch's options: what its backend needs (initial
// values, where, coalesce, heartbeat, start revision, incarnation), and
// what the provider's watch and the gRPC stream consumer keep.
type watchConfig struct {
	backend.WatchConfig
	filter      func(old, new any) bool
	onError     func(error)
	maxFailures int
	backoffBase time.Duration
	backoffCap  time.Duration
	batched     bool
	ownStream   bool
	onDone      func(error)
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
	return func(c *watchConfig) { c.Initial = v }
}

// WithFilter drops value changes for which f(old, new) is false; initial
// values, resyncs and deletions always pass. A panicking filter counts as
// true. Dropped updates still advance the resume point.
func WithFilter(f func(old, new any) bool) WatchOption { return func(c *watchConfig) { c.filter = f } }

// WithWhere filters on the server side with a CEL expression over old, new,
// name and metadata, e.g. `new > 0.5 && metadata.source != "me"`.
func WithWhere(expr string) WatchOption { return func(c *watchConfig) { c.Where = expr } }

// WithCoalesce delivers only the latest value per variable when the watch
// is behind (intermediate values are skipped, not delayed).
func WithCoalesce(on bool) WatchOption { return func(c *watchConfig) { c.Coalesce = on } }

// WithHeartbeat sets how often the server reports the revision a quiet watch
// has covered (default 5 s), which keeps resumes exact in a busy session.
func WithHeartbeat(d time.Duration) WatchOption { return func(c *watchConfig) { c.Heartbeat = d } }

// WithStartRevision resumes: every change with revision >= rev is delivered
// (a Resync update when the server's history no longer holds them). A rev
// beyond the session's revision + 1 fails with a RevisionOutOfRangeError
// unless WithIncarnation names another incarnation of the session.
func WithStartRevision(rev int64) WatchOption {
	return func(c *watchConfig) { c.StartRevision = rev }
}

// WithIncarnation names the session incarnation a WithStartRevision
// revision was seen in (UpdateMeta.Incarnation). When the session has
// another one now (it was created again: after a cleanup, an expiry or a
// server that lost it), the revision belongs to another history: the watch
// starts with Resync updates of the current values instead of resuming
// silently at a revision that means something else.
func WithIncarnation(incarnation string) WatchOption {
	return func(c *watchConfig) { c.Incarnation = incarnation }
}

// WithErrorHandler adds f to the functions called once, from the watch's
// goroutine, with the error that ended the watch: it gave up reconnecting
// (ErrGaveUp), hit an error that retrying cannot fix, or its session
// closed. Unwatching and ending the context are not errors. Each
// WithErrorHandler adds a handler; they run in the order given.
func WithErrorHandler(f func(error)) WatchOption {
	return func(c *watchConfig) { c.onError = thenCall(c.onError, f) }
}

// thenCall returns a handler that calls prev (if any), then f.
func thenCall(prev, f func(error)) func(error) {
	if prev == nil {
		return f
	}
	return func(err error) {
		prev(err)
		f(err)
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
	return func(c *watchConfig) { c.onDone = thenCall(c.onDone, f) }
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
//
// It applies to a watch on a stream of its own (WithOwnStream, or a server
// without the shared Watch stream); on the shared stream updates always
// travel batched.
func WithBatchedStream(on bool) WatchOption { return func(c *watchConfig) { c.batched = on } }

// WithOwnStream gives a BridgedState watch a gRPC stream of its own
// (WatchVariables, or WatchVariableBatches with WithBatchedStream) instead
// of a place on its connection's shared Watch stream, where by default
// every watch of the connection travels, each with the same guarantees,
// resumed on its own after a break. A watch on its own stream is not held
// back by the other watches' readers (see watchmux.go), at the cost of a
// stream, and on the server a goroutine, per watch. Against a server
// without the shared stream, every watch has its own.
func WithOwnStream(on bool) WatchOption { return func(c *watchConfig) { c.ownStream = on } }
