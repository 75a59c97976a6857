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
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
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

// done is the Pending of a mutation etcd has already acknowledged.
type done struct{}

func (done) Wait() error { return nil }

// Save records a mutation as one etcd transaction, fenced on the session's
// header; see store.Shared.
func (e *Engine) Save(m *store.Mutation) (store.Pending, error) {
	switch {
	case m.Create:
		return e.create(m)
	case m.Change != nil:
		return e.change(m)
	case m.Drop != "":
		return e.drop(m)
	case m.Expiry != nil:
		e.keepAlive(m.Session.Lease)
		return done{}, nil
	}
	return nil, errors.New("etcd: empty mutation")
}

func (e *Engine) create(m *store.Mutation) (store.Pending, error) {
	r := m.Session
	ctx, cancel := e.ctx()
	defer cancel()
	lease, err := e.c.Grant(ctx, int64(math.Ceil(r.TTL.Seconds())))
	if err != nil {
		return nil, e.unavailable("creating session "+r.ID, err)
	}
	meta := e.keys.meta(r.ID)
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(meta), "=", 0)).
		Then(
			clientv3.OpPut(meta, string(record.EncodeHeader(r)), clientv3.WithLease(lease.ID)),
			clientv3.OpPut(e.keys.index(r.ID), "", clientv3.WithLease(lease.ID)),
			clientv3.OpDelete(e.keys.end(r.ID)),
		).Commit()
	if err != nil {
		e.revoke(lease.ID)
		return nil, e.unavailable("creating session "+r.ID, err)
	}
	if !resp.Succeeded {
		e.revoke(lease.ID)
		return nil, store.ErrSessionExists
	}
	r.Lease = int64(lease.ID)
	m.Fence = resp.Header.Revision
	return done{}, nil
}

func (e *Engine) change(m *store.Mutation) (store.Pending, error) {
	r := m.Session
	id := r.ID
	lease := clientv3.WithLease(clientv3.LeaseID(r.Lease))
	encoded := make(map[*pb.Variable][]byte, len(m.Change.Items))
	rec, err := record.EncodeChange(m.Change, encoded)
	if err != nil {
		return nil, fmt.Errorf("etcd: encoding revision %d of session %q: %w", m.Change.Revision, id, err)
	}
	ops := []clientv3.Op{
		clientv3.OpPut(e.keys.meta(id), string(record.EncodeHeader(r)), lease),
		clientv3.OpPut(e.keys.history(id, m.Change.Revision), string(rec), lease),
	}
	size := len(rec) + 256
	for _, v := range m.Put {
		enc, ok := encoded[v]
		if !ok {
			if enc, err = v.MarshalVT(); err != nil {
				return nil, fmt.Errorf("etcd: encoding variable %q of session %q: %w", v.Name, id, err)
			}
		}
		size += len(enc) + 64
		ops = append(ops, clientv3.OpPut(e.keys.variable(id, v.Id), string(enc), lease))
	}
	for _, vid := range m.Delete {
		ops = append(ops, clientv3.OpDelete(e.keys.variable(id, vid)))
	}
	if m.TrimBelow > 1 {
		// From the first revision, not TrimFrom: whatever an older window
		// left goes too.
		ops = append(ops, clientv3.OpDelete(e.keys.history(id, 0), clientv3.WithRange(e.keys.history(id, m.TrimBelow))))
	}
	if len(ops) > e.opts.MaxTxnOps {
		return nil, &store.LimitError{Limit: "etcd_max_txn_ops", Max: int64(e.opts.MaxTxnOps),
			What: fmt.Sprintf("writing %d variables at once in session %q takes %d etcd operations", len(m.Put)+len(m.Delete), id, len(ops))}
	}
	if size > e.opts.MaxRequestBytes {
		return nil, &store.LimitError{Limit: "etcd_max_request_bytes", Max: int64(e.opts.MaxRequestBytes),
			What: fmt.Sprintf("this write to session %q is a %d-byte etcd request (the variables and their history record)", id, size)}
	}
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.keys.meta(id)), "=", m.Fence)).Then(ops...).Commit()
	if err != nil {
		if isLeaseGone(err) {
			return nil, store.ErrStale // expired meanwhile: the sync that follows finds it gone
		}
		return nil, e.unavailable(fmt.Sprintf("writing revision %d of session %s", m.Change.Revision, id), err)
	}
	if !resp.Succeeded {
		return nil, store.ErrStale
	}
	m.Fence = resp.Header.Revision
	return done{}, nil
}

func (e *Engine) drop(m *store.Mutation) (store.Pending, error) {
	id := m.Drop
	ctx, cancel := e.ctx()
	defer cancel()
	tomb, err := e.c.Grant(ctx, tombTTL)
	if err != nil {
		return nil, e.unavailable("cleaning up session "+id, err)
	}
	data := e.keys.data(id)
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(e.keys.meta(id)), "=", m.Fence)).
		Then(
			clientv3.OpDelete(data, clientv3.WithPrefix()),
			clientv3.OpDelete(e.keys.index(id)),
			clientv3.OpPut(e.keys.end(id), string(store.ClosedCleanedUp), clientv3.WithLease(tomb.ID)),
		).Commit()
	if err != nil {
		e.revoke(tomb.ID)
		return nil, e.unavailable("cleaning up session "+id, err)
	}
	if !resp.Succeeded {
		e.revoke(tomb.ID)
		return nil, store.ErrStale
	}
	if m.Session != nil {
		e.revoke(clientv3.LeaseID(m.Session.Lease)) // its keys are gone; free the lease
	}
	return done{}, nil
}

// keepAlive renews a session's lease: it was used. A failure is not the
// caller's: an expired lease ends the session, which the next sync finds.
func (e *Engine) keepAlive(lease int64) {
	if lease == 0 {
		return
	}
	ctx, cancel := e.ctx()
	defer cancel()
	_, _ = e.c.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
}

func (e *Engine) revoke(id clientv3.LeaseID) {
	if id == 0 {
		return
	}
	ctx, cancel := e.ctx()
	defer cancel()
	_, _ = e.c.Revoke(ctx, id)
}

func isLeaseGone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "requested lease not found")
}

// Find reads a session whole; see store.Shared.
func (e *Engine) Find(id string) (*store.Saved, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.keys.data(id), clientv3.WithPrefix())
	if err != nil {
		return nil, e.unavailable("reading session "+id, err)
	}
	return e.parse(id, resp.Kvs)
}

type kv = mvccpb.KeyValue

// parse builds a session from its keys (sorted: history, meta, variables).
func (e *Engine) parse(id string, kvs []*kv) (*store.Saved, error) {
	sv := &store.Saved{}
	found := false
	hist, meta, vars := e.keys.data(id)+"h/", e.keys.meta(id), e.keys.data(id)+"v/"
	for _, kv := range kvs {
		k := string(kv.Key)
		switch {
		case k == meta:
			h, err := record.DecodeHeader(id, kv.Value)
			if err != nil {
				return nil, fmt.Errorf("etcd: session %q: header: %w", id, err)
			}
			h.Lease = kv.Lease
			sv.Session, sv.Fence, found = h, kv.ModRevision, true
		case strings.HasPrefix(k, hist):
			c, err := record.DecodeChange(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("etcd: session %q: history record %s: %w", id, k, err)
			}
			sv.History = append(sv.History, c)
		case strings.HasPrefix(k, vars):
			v := &pb.Variable{}
			if err := v.UnmarshalVT(kv.Value); err != nil {
				return nil, fmt.Errorf("etcd: session %q: variable %s: %w", id, k, err)
			}
			sv.Variables = append(sv.Variables, v)
		}
	}
	if !found {
		return nil, nil
	}
	// A write that trimmed the history and one that added to it can meet
	// in a read only as a contiguous window ending at the header's
	// revision; anything else left behind is older than the window.
	h := sv.History
	for len(h) > 0 && h[len(h)-1].Revision > sv.Session.Revision {
		h = h[:len(h)-1]
	}
	sv.History = h
	return sv, nil
}

// Sync tells a server what changed in a session since the revision it
// holds, in one round trip; see store.Shared.
func (e *Engine) Sync(id, incarnation string, revision, fence int64) (store.SyncResult, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	hist := e.keys.history(id, revision+1)
	resp, err := e.c.Txn(ctx).Then(
		clientv3.OpGet(e.keys.meta(id)),
		clientv3.OpGet(e.keys.end(id)),
		clientv3.OpGet(hist, clientv3.WithRange(e.keys.historyEnd(id))),
	).Commit()
	if err != nil {
		return store.SyncResult{}, e.unavailable("reading session "+id, err)
	}
	metas := resp.Responses[0].GetResponseRange().Kvs
	if len(metas) == 0 {
		res := store.SyncResult{Gone: true, Cause: store.ClosedExpired}
		if len(resp.Responses[1].GetResponseRange().Kvs) > 0 {
			res.Cause = store.ClosedCleanedUp
		}
		return res, nil
	}
	meta := metas[0]
	if meta.ModRevision == fence {
		return store.SyncResult{}, nil
	}
	h, err := record.DecodeHeader(id, meta.Value)
	if err != nil {
		return store.SyncResult{}, fmt.Errorf("etcd: session %q: header: %w", id, err)
	}
	res := store.SyncResult{Fence: meta.ModRevision}
	if h.Incarnation == incarnation {
		for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
			c, err := record.DecodeChange(kv.Value)
			if err != nil {
				return store.SyncResult{}, fmt.Errorf("etcd: session %q: history record %s: %w", id, kv.Key, err)
			}
			if c.Revision != revision+1+int64(len(res.Changes)) || c.Revision > h.Revision {
				break
			}
			res.Changes = append(res.Changes, c)
		}
		if n := len(res.Changes); n > 0 && res.Changes[n-1].Revision == h.Revision {
			return res, nil
		}
		if h.Revision == revision {
			return res, nil // the header moved without a change (its TTL); nothing to take
		}
	}
	// Another incarnation, or changes no longer kept: the whole session.
	full, err := e.Find(id)
	if err != nil {
		return store.SyncResult{}, err
	}
	if full == nil {
		return store.SyncResult{Gone: true, Cause: store.ClosedExpired}, nil
	}
	return store.SyncResult{Reload: full, Fence: full.Fence}, nil
}

// IDs lists every session's id; see store.Shared.
func (e *Engine) IDs() ([]string, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	p := e.keys.indexPrefix()
	resp, err := e.c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, e.unavailable("listing sessions", err)
	}
	ids := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p)); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// keys builds the engine's keys under its prefix.
type keys string

func (k keys) format() string { return string(k) + formatKey }
func (k keys) session(id string) string {
	return string(k) + "s/" + url.PathEscape(id) + "/"
}
func (k keys) data(id string) string { return k.session(id) + "d/" }
func (k keys) meta(id string) string { return k.data(id) + "meta" }
func (k keys) end(id string) string  { return k.session(id) + "end" }
func (k keys) variable(id, varID string) string {
	return k.data(id) + "v/" + varID
}
func (k keys) history(id string, rev int64) string {
	return k.data(id) + "h/" + fmt.Sprintf("%016x", rev)
}
func (k keys) historyEnd(id string) string { return k.data(id) + "h0" } // "h0" sorts right after every "h/..."
func (k keys) indexPrefix() string         { return string(k) + "i/" }
func (k keys) index(id string) string      { return k.indexPrefix() + url.PathEscape(id) }

// revisionOf returns the revision of a history key.
func revisionOf(key string) (int64, bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return 0, false
	}
	r, err := strconv.ParseInt(key[i+1:], 16, 64)
	return r, err == nil
}
