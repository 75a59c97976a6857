// Package cutproxy is a loopback TCP proxy that a test controls: it forwards
// connections to a target and cuts them on demand, to break gRPC streams at
// arbitrary points (mid-message, mid-batch) and check what a client resumes.
//
// Besides cutting (both ends see the connection close) it stalls connections
// (forwarding pauses, then resumes with nothing lost) and blackholes them
// (forwarding stops for good while both sockets stay open, so each end sees a
// peer that vanished without closing, as when a machine loses power or a
// network drops: only keepalive can tell).
package cutproxy

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards every connection accepted on Addr to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*pair]struct{}
	refuse bool
	closed bool

	holes map[*pair]struct{} // blackholed: held open, forwarding nothing

	accepted   atomic.Int64
	cuts       atomic.Int64
	stalls     atomic.Int64
	blackholes atomic.Int64
	forwarded  atomic.Int64 // bytes from the target to clients
	wg         sync.WaitGroup
}

// pair is one forwarded connection: the client's socket and the proxy's
// socket to the target.
type pair struct {
	client, server net.Conn
	once           sync.Once
	closed         chan struct{} // closed by close

	mu     sync.Mutex
	resume time.Time // forwarding is paused until then (Stall)
	hole   bool      // forwarding stopped for good (Blackhole)
}

func newPair(client, server net.Conn) *pair {
	return &pair{client: client, server: server, closed: make(chan struct{})}
}

func (p *pair) close() {
	p.once.Do(func() {
		close(p.closed)
		_ = p.client.Close()
		_ = p.server.Close()
	})
}

// gate blocks while forwarding is paused; false when the pair is closed or
// blackholed (then only after it is closed), and the data in hand must be
// dropped.
func (p *pair) gate() bool {
	for {
		p.mu.Lock()
		hole, until := p.hole, p.resume
		p.mu.Unlock()
		if hole {
			<-p.closed
			return false
		}
		d := time.Until(until)
		if d <= 0 {
			select {
			case <-p.closed:
				return false
			default:
				return true
			}
		}
		t := time.NewTimer(d)
		select {
		case <-p.closed:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

func (p *pair) blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hole
}

// New listens on 127.0.0.1:0 and forwards to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}, holes: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted counts the connections accepted so far (refused ones included).
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Cuts counts the connections cut by Cut.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Stalls counts the connections stalled by Stall (once per call each).
func (p *Proxy) Stalls() int64 { return p.stalls.Load() }

// Blackholes counts the connections blackholed by Blackhole.
func (p *Proxy) Blackholes() int64 { return p.blackholes.Load() }

// Forwarded counts the bytes relayed from the target to clients so far. A
// test that waits for it to grow after a cut knows that a new connection is
// past its handshake and carrying data, so its next cut does not hit a
// connection attempt (which gRPC would retry only after its backoff).
func (p *Proxy) Forwarded() int64 { return p.forwarded.Load() }

// Cut closes every open connection at once, both ways, and returns how many
// it closed. New connections are accepted as before unless refused.
// Blackholed connections are not open: Cut leaves them held.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	all := p.conns
	p.conns = map[*pair]struct{}{}
	p.mu.Unlock()
	for c := range all {
		c.close()
	}
	p.cuts.Add(int64(len(all)))
	return len(all)
}

// Stall pauses forwarding, both ways, on every open connection for d (a
// connection already stalled longer keeps its end), and returns how many it
// stalled. Bytes in flight wait in the proxy and the kernel's buffers and
// are delivered, in order, when the stall ends: nothing is lost, and the
// sockets stay open. New connections are not stalled.
func (p *Proxy) Stall(d time.Duration) int {
	until := time.Now().Add(d)
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.mu.Lock()
		if until.After(c.resume) {
			c.resume = until
		}
		c.mu.Unlock()
	}
	p.stalls.Add(int64(len(p.conns)))
	return len(p.conns)
}

// Blackhole stops forwarding, both ways and for good, on every open
// connection while keeping its sockets open, and returns how many. Neither
// end learns anything: data sent either way vanishes, and a peer that closes
// its socket is not passed on. The connections are held until Close and no
// longer count as open. New connections are forwarded as before.
func (p *Proxy) Blackhole() int {
	p.mu.Lock()
	all := p.conns
	p.conns = map[*pair]struct{}{}
	for c := range all {
		c.mu.Lock()
		c.hole = true
		c.mu.Unlock()
		p.holes[c] = struct{}{}
	}
	p.mu.Unlock()
	p.blackholes.Add(int64(len(all)))
	return len(all)
}

// Held returns the number of blackholed connections the proxy holds open.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.holes)
}

// SetRefuse makes the proxy close new connections as soon as it accepts
// them (true), like a server that is down, or forward them again (false).
func (p *Proxy) SetRefuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// Open returns the number of connections being forwarded.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, cuts every connection (blackholed ones too) and
// waits for the proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	holes := p.holes
	p.holes = map[*pair]struct{}{}
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	for c := range holes {
		c.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // the listener was closed
		}
		p.accepted.Add(1)
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	c := newPair(client, server)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	go p.pipe(c, server, client, nil, done)
	go p.pipe(c, client, server, &p.forwarded, done)
	<-done
	c.close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.holes, c)
	p.mu.Unlock()
}

// pipe copies src to dst until either fails or the pair closes, holding
// each chunk while the pair is stalled. In a blackhole it forwards nothing
// more and, when src ends, does not pass that on: it waits for the pair to
// be closed by Close.
func (p *Proxy) pipe(c *pair, dst, src net.Conn, count *atomic.Int64, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !c.gate() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if count != nil {
				count.Add(int64(n))
			}
		}
		if err != nil { // a cut, or a peer closing
			if c.blackholed() {
				<-c.closed
			}
			return
		}
	}
}

// CutAtRandom cuts the proxy's connections at random moments, up to maxGap
// apart, while more reports true and until stop is closed; run it in its own
// goroutine. After each cut it waits until a new connection has carried
// data from the target, so that the next cut breaks a stream rather than a
// connection attempt.
func (p *Proxy) CutAtRandom(stop <-chan struct{}, maxGap time.Duration, more func() bool) {
	const carried = 4096 // bytes from the target that show a stream is flowing
	for more() {
		select {
		case <-stop:
			return
		case <-time.After(rand.N(maxGap)):
		}
		if p.Cut() == 0 {
			continue
		}
		at := p.Forwarded()
		for p.Forwarded() < at+carried {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Microsecond):
			}
		}
	}
}
