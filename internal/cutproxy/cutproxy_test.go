package cutproxy

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes lines until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func TestForwardCutRefuse(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut closed %d connections, want 1", n)
	}
	if _, err := roundTrip(c, "again"); err == nil {
		t.Fatal("a cut connection still works")
	}

	p.SetRefuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := roundTrip(c2, "refused"); err == nil {
		t.Fatal("a refused connection works")
	}

	p.SetRefuse(false)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "back"); err != nil || got != "back" {
		t.Fatalf("round trip after refuse = %q, %v", got, err)
	}
	// The proxy counts bytes after writing them, so the echo can reach the
	// client a moment before the count moves.
	want := int64(len("hello\nback\n"))
	for deadline := time.Now().Add(5 * time.Second); p.Forwarded() < want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if p.Accepted() != 3 || p.Cuts() != 1 || p.Forwarded() != want {
		t.Fatalf("accepted %d cuts %d forwarded %d, want 3, 1 and 11", p.Accepted(), p.Cuts(), p.Forwarded())
	}
}

// A stall delays the bytes in flight and delivers them, in order, when it
// ends; the connection stays up.
func TestStall(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "warm"); err != nil || got != "warm" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	const stall = 300 * time.Millisecond
	if n := p.Stall(stall); n != 1 {
		t.Fatalf("Stall took %d connections, want 1", n)
	}
	t0 := time.Now()
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, m := range []string{"a", "b", "c"} {
		if _, err := c.Write([]byte(m + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"a", "b", "c"} {
		line, err := r.ReadString('\n')
		if err != nil || line != want+"\n" {
			t.Fatalf("after the stall got %q, %v; want %q", line, err, want)
		}
	}
	if d := time.Since(t0); d < stall-20*time.Millisecond {
		t.Fatalf("echo came back after %v, within a %v stall", d, stall)
	}
	if got, err := roundTrip(c, "after"); err != nil || got != "after" {
		t.Fatalf("round trip after the stall = %q, %v", got, err)
	}
	if p.Stalls() != 1 || p.Cuts() != 0 || p.Open() != 1 {
		t.Fatalf("stalls %d cuts %d open %d, want 1, 0, 1", p.Stalls(), p.Cuts(), p.Open())
	}
}

// A blackholed connection forwards nothing either way and does not close:
// the client sees neither data nor EOF, and the target does not see the
// client close. Cut leaves it alone, Close releases it, and new connections
// are forwarded as before.
func TestBlackhole(t *testing.T) {
	// A target that reports when its side of a connection ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ended := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						ended <- struct{}{}
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						ended <- struct{}{}
						return
					}
				}
			}()
		}
	}()

	p, err := New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "before"); err != nil || got != "before" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	if n := p.Blackhole(); n != 1 {
		t.Fatalf("Blackhole took %d connections, want 1", n)
	}
	if p.Open() != 0 || p.Held() != 1 || p.Cut() != 0 {
		t.Fatalf("open %d held %d after the blackhole; want 0 and 1, and nothing to cut", p.Open(), p.Held())
	}
	if _, err := c.Write([]byte("lost\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read from a blackholed connection = %q, %v; want a timeout (no data, no EOF)", buf[:n], err)
	}
	c.Close() // the client goes away; the target must not learn it
	select {
	case <-ended:
		t.Fatal("the target saw the connection end through a blackhole")
	case <-time.After(200 * time.Millisecond):
	}

	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "new"); err != nil || got != "new" {
		t.Fatalf("a new connection after the blackhole = %q, %v", got, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // both target-side connections end with Close
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not release the blackholed connection")
		}
	}
	if p.Blackholes() != 1 || p.Held() != 0 {
		t.Fatalf("blackholes %d held %d after Close, want 1 and 0", p.Blackholes(), p.Held())
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
