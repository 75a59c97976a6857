// Package etcd keeps a varbridge store in an etcd cluster, so that many
// servers share one truth: any server can take any client, and a client
// whose server dies carries on at another (store.Shared says how a store
// uses it).
//
// Every session lives under its own prefix, its keys all attached to the
// lease that carries its TTL:
//
//	<prefix>s/<id>/d/meta         header: incarnation, TTL, metadata, token hash, revision
//	<prefix>s/<id>/d/v/<var id>   a variable
//	<prefix>s/<id>/d/h/<revision> a history change (16 hex digits, so keys sort by revision)
//	<prefix>s/<id>/end            "cleaned_up", for a minute after a cleanup
//	<prefix>i/<id>                the index ListSessions reads
//
// (ids are path-escaped). etcd's revision is global; the session revision
// the wire promises lives in the header, written in the same transaction as
// the variables and the change, and every write compares the header's
// mod_revision with the one it was made against (its fence): that both
// orders concurrent writers and makes compare-and-set one transaction. The
// history window is kept in etcd too, so any server can resume any watch
// from it.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/varbridge/varbridge/internal/store"
)

// Defaults for Options; the limits are etcd's own defaults.
const (
	DefaultPrefix          = "/varbridge/"
	DefaultRequestTimeout  = 5 * time.Second
	DefaultMaxRequestBytes = 1536 * 1024 // etcd --max-request-bytes
	DefaultMaxTxnOps       = 128         // etcd --max-txn-ops
	DefaultHealthInterval  = time.Second
)

// formatKey marks a prefix as varbridge's, and which layout it holds.
const (
	formatKey   = "format"
	formatValue = "varbridge-etcd-1"
)

// tombTTL is how long a cleaned-up session's end marker stays, telling
// servers that follow it that it was cleaned up rather than expired.
const tombTTL = 60

// Options configure an Engine.
type Options struct {
	Endpoints []string
	// Prefix is prepended to every key; several varbridge clusters can
	// share one etcd under different prefixes.
	Prefix   string
	TLS      *tls.Config
	Username string
	Password string
	// RequestTimeout bounds each etcd request; a write that takes longer
	// fails with store.UnavailableError, its outcome unknown.
	RequestTimeout time.Duration
	// MaxRequestBytes and MaxTxnOps are the etcd cluster's limits
	// (--max-request-bytes, --max-txn-ops): a write that would exceed them
	// is refused with a store.LimitError naming the limit.
	MaxRequestBytes int
	MaxTxnOps       int
	// HealthInterval is how often the engine checks that it still reaches
	// a quorum; cut off for longer than RequestTimeout, it ends the
	// watches of this server (UNAVAILABLE), so their clients move to a
	// server that is not.
	HealthInterval time.Duration
	Logger         *slog.Logger
}

func (o *Options) withDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Engine is a store.Shared engine on etcd.
type Engine struct {
	c    *clientv3.Client
	opts Options
	keys keys
	log  *slog.Logger

	mu        sync.Mutex
	followers map[*follower]struct{}
	cutOff    bool

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup // the health loop and every follower
}

var _ store.Shared = (*Engine)(nil)

// Open connects to etcd and checks that the prefix is varbridge's (or
// empty, and claims it).
func Open(ctx context.Context, opts Options) (*Engine, error) {
	opts.withDefaults()
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.RequestTimeout,
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		// A write's request is checked against MaxRequestBytes before it
		// is sent; leave the client room for its framing.
		MaxCallSendMsgSize: opts.MaxRequestBytes + 64*1024,
		MaxCallRecvMsgSize: math.MaxInt32,
		Logger:             zap.NewNop(),
		Context:            context.Background(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	e := &Engine{
		c: c, opts: opts, keys: keys(opts.Prefix), log: opts.Logger,
		followers: map[*follower]struct{}{}, stop: make(chan struct{}),
	}
	if err := e.claim(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	e.wg.Add(2)
	go e.health()
	go e.renewLoop()
	return e, nil
}

// claim marks the prefix as varbridge's, or checks that it is.
func (e *Engine) claim(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.RequestTimeout)
	defer cancel()
	k := e.keys.format()
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, formatValue)).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return fmt.Errorf("etcd at %s: cannot reach a quorum within %v: %w", strings.Join(e.opts.Endpoints, ","), e.opts.RequestTimeout, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && string(kvs[0].Value) != formatValue {
			return fmt.Errorf("etcd prefix %q holds %q, not this server's layout %q: give another --etcd-prefix", e.opts.Prefix, kvs[0].Value, formatValue)
		}
	}
	return nil
}

// Endpoints returns the etcd endpoints the engine talks to.
func (e *Engine) Endpoints() []string { return e.opts.Endpoints }

// Close stops the followers and the health loop and closes the client.
func (e *Engine) Close() error {
	e.stopped.Do(func() {
		close(e.stop)
		e.mu.Lock()
		for f := range e.followers {
			f.cancel()
		}
		e.mu.Unlock()
		e.wg.Wait()
		_ = e.c.Close()
	})
	return nil
}

// Load gives back nothing: a store on a shared engine loads each session
// on its first use (Find), so that a server holds only what it serves.
func (e *Engine) Load(func(*store.Saved) error) error { return nil }

// Barrier returns at once: etcd acknowledges a write once a quorum has it.
func (e *Engine) Barrier() error { return nil }

// ctx is a request's context, bounded by RequestTimeout.
func (e *Engine) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.opts.RequestTimeout)
}

// unavailable wraps an etcd error the client should retry elsewhere.
func (e *Engine) unavailable(what string, err error) error {
	return &store.UnavailableError{Engine: "etcd at " + strings.Join(e.opts.Endpoints, ","), What: what, Err: err}
}
