package varbridge

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/varbridge/varbridge/internal/codec"
)

// connPool is the set of client connections to one target. Unary calls use
// the first; watches lease a stream slot on the first connection with room,
// and a new connection is dialed when all are at the streams-per-connection
// limit. Pools are shared by every BridgedState with the same target and
// credentials, reference-counted, and closed with their last user.
type connPool struct {
	key      string // "" for a private pool
	target   string // the gRPC target dialed (targets.go)
	balanced bool   // the target may name several servers
	dialOpts []grpc.DialOption
	limit    int

	mu     sync.Mutex
	refs   int
	conns  []*pooledConn
	closed bool

	writes writeStreams // on the first connection (writes.go)
}

type pooledConn struct {
	cc      *grpc.ClientConn
	streams int // guarded by connPool.mu

	// The shared watch streams (watchmux.go), one per token.
	mu        sync.Mutex
	muxes     map[bearer]*muxConn
	nextWatch int64 // the last watch id used on the connection
	noMux     bool  // the server lacks Watch
}

var pools = struct {
	sync.Mutex
	m map[string]*connPool
}{m: map[string]*connPool{}}

// acquirePool returns the shared pool for o's target and credentials, or a
// private one when o has extra dial options.
func acquirePool(target string, o *options) (*connPool, error) {
	dt, err := parseTarget(target)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	credKey := "insecure"
	if o.tlsConfig != nil {
		creds = credentials.NewTLS(o.tlsConfig)
		credKey = fmt.Sprintf("tls:%p", o.tlsConfig)
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Unary calls wait for the connection within their deadline instead
		// of failing at once while it is (re)connecting, say just after a
		// server restart; watch streams opt out (see streamConsumer.open).
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Client), grpc.WaitForReady(true)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time: o.keepTime, Timeout: o.keepTimeout, PermitWithoutStream: true,
		}),
		// Redial a lost server on the watches' schedule: from 1 s up to
		// 30 s (gRPC's default goes up to 120 s).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: DefaultBackoffBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: DefaultBackoffCap},
			MinConnectTimeout: 20 * time.Second,
		}),
	}, dt.opts...) // the service config and resolver (targets.go)
	dialOpts = append(dialOpts, o.dialOpts...)
	key := fmt.Sprintf("%s|%s|%s|%s", target, credKey, o.keepTime, o.keepTimeout)
	if len(o.dialOpts) > 0 {
		key = "" // options we cannot compare: not shared
	}
	newPool := func() (*connPool, error) {
		p := &connPool{key: key, target: dt.grpcTarget, balanced: dt.balanced, dialOpts: dialOpts, limit: o.streamsPerConn, refs: 1}
		if _, err := p.dial(); err != nil {
			return nil, err
		}
		return p, nil
	}
	if key == "" {
		return newPool()
	}
	pools.Lock()
	defer pools.Unlock()
	if p := pools.m[key]; p != nil {
		p.mu.Lock()
		p.refs++
		p.mu.Unlock()
		return p, nil
	}
	p, err := newPool()
	if err != nil {
		return nil, err
	}
	pools.m[key] = p
	return p, nil
}

// retryMethodConfig makes gRPC itself retry the idempotent reads when they fail
// UNAVAILABLE (a connection lost mid-call), with the schedule the Python
// client uses too: up to 5 attempts, backoff from 0.1 s doubling to 1 s.
// Writes are not retried: one that reached the server before the
// connection broke would apply twice.
const retryMethodConfig = `[{
    "name": [
      {"service": "varbridge.v1.BridgeService", "method": "GetSession"},
      {"service": "varbridge.v1.BridgeService", "method": "GetVariable"},
      {"service": "varbridge.v1.BridgeService", "method": "GetVariables"},
      {"service": "varbridge.v1.BridgeService", "method": "ListVariables"},
      {"service": "varbridge.v1.BridgeService", "method": "ListSessions"},
      {"service": "varbridge.v1.BridgeService", "method": "Heartbeat"}
    ],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]`

// dial adds a connection; p.mu is held or p is not yet shared.
func (p *connPool) dial() (*pooledConn, error) {
	cc, err := grpc.NewClient(p.target, p.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %v", ErrInvalidArgument, p.target, err)
	}
	pc := &pooledConn{cc: cc}
	p.conns = append(p.conns, pc)
	return pc, nil
}

// unary returns the connection for unary calls.
func (p *connPool) unary() *grpc.ClientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[0].cc
}

// lease reserves a stream slot for a watch's lifetime.
func (p *connPool) lease() (*pooledConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	for _, pc := range p.conns {
		if pc.streams < p.limit {
			pc.streams++
			return pc, nil
		}
	}
	pc, err := p.dial()
	if err != nil {
		return nil, err
	}
	pc.streams++
	return pc, nil
}

// release returns a stream slot. An extra connection left without streams
// is closed; the first one stays for unary calls.
func (p *connPool) release(pc *pooledConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.streams--
	if pc.streams > 0 || p.closed || len(p.conns) == 0 || p.conns[0] == pc {
		return
	}
	for i, c := range p.conns {
		if c == pc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			_ = pc.cc.Close()
			return
		}
	}
}

// connCount returns the number of open connections (for tests and stats).
func (p *connPool) connCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// releasePool drops one reference; the last closes every connection.
func releasePool(p *connPool) {
	if p.key != "" {
		pools.Lock()
		defer pools.Unlock()
	}
	p.mu.Lock()
	p.refs--
	last := p.refs == 0
	var conns []*pooledConn
	if last {
		p.closed = true
		conns, p.conns = p.conns, nil
		if p.key != "" {
			delete(pools.m, p.key)
		}
	}
	p.mu.Unlock()
	if last {
		p.writes.close()
	}
	for _, pc := range conns {
		_ = pc.cc.Close()
	}
}
