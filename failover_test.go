package varbridge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// An address list that is not host:port,... is refused before anything is
// dialed, with ErrInvalidArgument (the list's parsing: internal/target).
func TestBadServerList(t *testing.T) {
	for _, bad := range []string{"h1:1,", "h1:1,,h2:2", "h1:1,h2", "ipv4:"} {
		ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
		_, err := NewBridgedState(ctx, bad)
		cancel()
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "server address list") {
			t.Errorf("NewBridgedState(%q): %v, want ErrInvalidArgument naming the list", bad, err)
		}
	}
}

// With two live servers in the list, calls are spread over both: sessions
// created through one shared connection pool land on each in turn
// (round_robin). The servers share nothing here (memory stores), so each
// session lives where it was created.
func TestListSpreadsCalls(t *testing.T) {
	s1 := servertest.Start(t, store.Options{})
	s2 := servertest.Start(t, store.Options{})
	list := s1.Addr + "," + s2.Addr
	// Until both connections are up, calls go to the one that is.
	Eventually(t, "a session on each server", func() bool {
		DialBridged(t, list)
		return s1.Store.SessionCount() > 0 && s2.Store.SessionCount() > 0
	})
	n1, n2 := s1.Store.SessionCount(), s2.Store.SessionCount()
	const n = 20
	for range n {
		DialBridged(t, list)
	}
	d1, d2 := s1.Store.SessionCount()-n1, s2.Store.SessionCount()-n2
	if d1+d2 != n || d1 < n/4 || d2 < n/4 {
		t.Fatalf("%d sessions created: %d on the first server, %d on the second; want them spread", n, d1, d2)
	}
	t.Logf("%d sessions: %d and %d", n, d1, d2)
}

// A DNS name with several records balances too: "localhost" may resolve to
// 127.0.0.1 and ::1, and the server listens on the first only.
func TestDNSTarget(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	_, port, _ := strings.Cut(srv.Addr, ":")
	b := DialBridged(t, "dns:///localhost:"+port)
	if !b.rb.pool.balanced {
		t.Fatal("a dns:/// target is not balanced")
	}
	MustRegister(t, b, "x", TypeInteger, int64(0))
	if _, err := b.Set(context.Background(), "x", int64(1)); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Get(context.Background(), "x"); err != nil || v.Value != int64(1) {
		t.Fatalf("x through dns:///localhost: %+v, %v", v, err)
	}
}

// A watch on a list of two servers whose server goes away fails over to
// the other, which is up, at once (no backoff, not counted towards giving
// up) and resumes from its revision: nothing lost, nothing repeated, no
// RESYNC. The two "servers" are two proxies in front of one server, so
// that the session is on both; killing a proxy (refusing new connections,
// cutting the open ones) is its server dying. Which of the two carries the
// watch's stream is round_robin's choice: both are killed in turn.
func TestWatchFailsOverToLiveServer(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	pa, pb := newProxy(t, srv.Addr), newProxy(t, srv.Addr)
	writer := DialBridged(t, srv.Addr)
	// A single failure would give up: the failovers must not count.
	watcher := DialBridged(t, pa.Addr()+","+pb.Addr(), WithSessionID(writer.SessionID()))
	ctx := context.Background()
	MustRegister(t, writer, "x", TypeInteger, int64(0))
	rec := NewRecorder()
	ref := MustWatch(t, watcher, ctx, []string{"x"}, rec.Watch, WithMaxFailures(2))
	n := int64(0)
	write := func(via *BridgedState) {
		t.Helper()
		n++
		v, err := via.Set(ctx, "x", n)
		if err != nil {
			t.Fatalf("write %d: %v", n, err)
		}
		u := rec.Next(t)
		if u.New != n || u.Old != n-1 || u.Meta.Revision != v.Revision || u.Meta.Resync {
			t.Fatalf("write %d at revision %d: the watch got %+v", n, v.Revision, u)
		}
	}
	for _, kill := range []*cutproxy.Proxy{pa, pb} {
		// A failover needs the other server up: its connection ready, not
		// merely accepted (after the previous round's kill the watcher
		// redials it on gRPC's backoff, and a busy machine may take a while
		// between the accept and the handshake). round_robin sends calls
		// only to ready connections, one after the other: two calls that
		// reach both proxies show both ready.
		Eventually(t, "a call through each proxy", func() bool {
			fa, fb := pa.Forwarded(), pb.Forwarded()
			for range 2 {
				if _, err := watcher.Get(ctx, "x"); err != nil {
					t.Fatalf("get: %v", err)
				}
			}
			return pa.Forwarded() > fa && pb.Forwarded() > fb
		})
		write(writer)
		before := WatchInfoOf(t, watcher, ref)
		kill.SetRefuse(true)
		kill.Cut()
		killed := time.Now()
		write(writer)
		if WatchInfoOf(t, watcher, ref).Failovers > before.Failovers {
			t.Logf("the watch failed over: %v from the kill to its first update", time.Since(killed))
		}
		for range 3 {
			write(writer)
		}
		// The watcher's own writes go on through the server left.
		write(watcher)
		kill.SetRefuse(false)
	}
	wi := WatchInfoOf(t, watcher, ref)
	if !wi.Alive || wi.Failovers == 0 || wi.DuplicatesSkipped != 0 {
		t.Fatalf("the watch after the kills: %+v", wi)
	}
	if u, ok := rec.Poll(); ok {
		t.Fatalf("an update nobody wrote: %+v", u)
	}
	t.Logf("%d writes, %d failovers, %d reconnects", n, wi.Failovers, wi.Reconnects)
}
