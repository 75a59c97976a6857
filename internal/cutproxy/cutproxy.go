// Package cutproxy is a loopback TCP proxy that a test controls: it forwards
// connections to a target and cuts them on demand, to break gRPC streams at
// arbitrary points (mid-message, mid-batch) and check what a client resumes.
package cutproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards every connection accepted on Addr to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*pair]struct{}
	refuse bool
	closed bool

	accepted  atomic.Int64
	cuts      atomic.Int64
	forwarded atomic.Int64 // bytes from the target to clients
	wg        sync.WaitGroup
}

type pair struct {
	client, server net.Conn
	once           sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		_ = p.client.Close()
		_ = p.server.Close()
	})
}

// New listens on 127.0.0.1:0 and forwards to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*pair]struct{}{}}
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

// Forwarded counts the bytes relayed from the target to clients so far. A
// test that waits for it to grow after a cut knows that a new connection is
// past its handshake and carrying data, so its next cut does not hit a
// connection attempt (which gRPC would retry only after its backoff).
func (p *Proxy) Forwarded() int64 { return p.forwarded.Load() }

// Cut closes every open connection at once, both ways, and returns how many
// it closed. New connections are accepted as before unless refused.
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

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
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
	c := &pair{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst io.Writer, src net.Conn) {
		_, _ = io.Copy(dst, src) // ends on a cut or a peer closing
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(countingWriter{client, &p.forwarded}, server)
	<-done
	c.close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
