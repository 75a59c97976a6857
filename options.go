package varbridge

import (
	"crypto/tls"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/varbridge/varbridge/internal/store"
)

// Option configures NewLocalState and NewBridgedState. Each says which of
// the two it applies to; the other ignores it.
type Option func(*options)

type options struct {
	sessionID      string
	ttl            time.Duration
	sessionMeta    map[string]string
	log            *slog.Logger
	store          *store.Store
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

// withStore makes a LocalState use an existing store, such as the one an
// in-process server serves, instead of a private one that Close closes.
func withStore(s *store.Store) Option { return func(o *options) { o.store = s } }

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
