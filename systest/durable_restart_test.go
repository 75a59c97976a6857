package systest

// Restarts of the durable binary (issue 11) with watchers in every state,
// and session expiry across a restart. Each case SIGKILLs a
// `varbridge serve --data-dir DIR --fsync always` and starts it again on the
// same directory and port:
//
//   - idle: a watcher with nothing pending resumes in the same incarnation
//     and gets the next change, no RESYNC;
//   - mid-batch: a watcher holding the first of a 2,000-variable batch when
//     the server dies gets the whole batch exactly once;
//   - behind the window: a watcher kept away while more changes than the
//     history window holds are written gets a RESYNC, flagged, then the
//     changes after it;
//
// and (TestDurableExpiryAcrossRestart) expiry keeps counting: an idle
// session whose TTL runs out while the server is down is gone after the
// restart; a watched one stays, even when it has been watched, without a
// write, for longer than its TTL when the server dies; so does one kept
// alive by heartbeats alone.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varbridge/varbridge"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// resumingWatch are the options of a watch that outlasts a server's
// restart: it retries every few milliseconds and never gives up.
var resumingWatch = []varbridge.WatchOption{varbridge.WithMaxFailures(1_000_000),
	varbridge.WithBackoff(5*time.Millisecond, 100*time.Millisecond)}

func TestDurableRestartWatchers(t *testing.T) {
	bin := serverBin(t)
	t.Run("idle", func(t *testing.T) { testRestartIdle(t, bin) })
	t.Run("mid-batch", func(t *testing.T) { testRestartMidBatch(t, bin) })
	t.Run("behind the window", func(t *testing.T) { testRestartBehindWindow(t, bin) })
}

// Expiry across a restart: an idle session's deadline keeps counting while
// the server is down; a watched session's does not count while it is
// watched, and counts from the restart, giving its watchers a TTL to
// return (store.Expiry).
func TestDurableExpiryAcrossRestart(t *testing.T) {
	bin := serverBin(t)
	t.Run("idle expires, watched stays", func(t *testing.T) { testRestartExpiry(t, bin) })
	t.Run("watched past its TTL", func(t *testing.T) { testRestartWatchedPastTTL(t, bin) })
	t.Run("kept alive by heartbeats", func(t *testing.T) { testRestartHeartbeats(t, bin) })
}

// killAndRestart SIGKILLs the server, waits until the watch has seen the
// break (so the restart is certainly one it resumes across), and starts the
// server again on the same data directory.
func killAndRestart(t *testing.T, srv *binServer, p varbridge.StateProvider, ref varbridge.WatchRef) {
	t.Helper()
	before := watchInfo(t, p, ref).Errors
	srv.kill()
	eventually(t, "the watch to see the server gone", func() bool { return watchInfo(t, p, ref).Errors > before })
	srv.start()
}

func testRestartIdle(t *testing.T, bin string) {
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"))
	proxy := newProxy(t, srv.addr)
	writer := dialBridged(t, srv.addr, fastRedial)
	watcher := dialBridged(t, proxy.Addr(), fastRedial, varbridge.WithSessionID(writer.SessionID()))
	ctx := context.Background()
	mustRegister(t, writer, "x", varbridge.TypeInteger, int64(0))
	rec := newRecorder()
	ref := mustWatch(t, watcher, ctx, []string{"x"}, rec.watch, resumingWatch...)
	v, err := writer.Set(ctx, "x", int64(1))
	if err != nil {
		t.Fatal(err)
	}
	u := rec.next(t)
	inc := u.Meta.Incarnation
	if u.New != int64(1) || u.Meta.Revision != v.Revision || inc == "" {
		t.Fatalf("before the restart: %+v", u)
	}
	eventually(t, "the watch to cover the write", func() bool { return watchInfo(t, watcher, ref).LastRevision == v.Revision })

	killAndRestart(t, srv, watcher, ref)
	for i := int64(2); i <= 3; i++ {
		if _, err := writer.Set(ctx, "x", i); err != nil {
			t.Fatal(err)
		}
		u := rec.next(t)
		if u.Meta.Resync || u.New != i || u.Old != i-1 || u.Meta.Revision != v.Revision+i-1 || u.Meta.Incarnation != inc {
			t.Fatalf("update %d after the restart: %+v, want x %d -> %d at revision %d in incarnation %s", i-1, u, i-1, i, v.Revision+i-1, inc)
		}
	}
	wi := watchInfo(t, watcher, ref)
	if !wi.Alive || wi.Reconnects == 0 || wi.Incarnation != inc {
		t.Fatalf("the watch after the restart: %+v", wi)
	}
	t.Logf("idle watch resumed after %d reconnects, %d stream errors", wi.Reconnects, wi.Errors)
}

func testRestartMidBatch(t *testing.T, bin string) {
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"))
	writer := dialBridged(t, srv.addr, fastRedial)
	watcher := dialBridged(t, srv.addr, fastRedial, varbridge.WithSessionID(writer.SessionID()))
	ctx := context.Background()
	// 1,000 variables of 2 KiB each: a batch of about 2 MiB, far more than
	// gRPC's flow-control windows hold for a watcher that stops reading.
	const n = 1000
	names := make([]string, n)
	initial := map[string]any{}
	for i := range names {
		names[i] = fmt.Sprintf("m%04d", i)
		initial[names[i]] = ""
	}
	for i := 0; i < n; i += 500 {
		for _, name := range names[i : i+500] {
			mustRegister(t, writer, name, varbridge.TypeString, "")
		}
	}
	mustRegister(t, writer, "after", varbridge.TypeInteger, int64(0))

	var (
		batchRev = make(chan int64, 1)
		first    = make(chan struct{})
		release  = make(chan struct{})
		log      = &watchLog{name: "mid-batch"}
	)
	blocked := false
	ref := mustWatch(t, watcher, ctx, nil, func(id string, old, new any, m varbridge.UpdateMeta) {
		log.goWatch(id, old, new, m)
		if !blocked && strings.HasPrefix(m.Name, "m") {
			blocked = true
			close(first)
			<-release // hold the stream here until the server has died
		}
	}, append(resumingWatch, varbridge.WithBatchedStream(false))...)
	go func() {
		upd := map[string]any{}
		for _, name := range names {
			upd[name] = strings.Repeat(name[1:], 512)
		}
		res, err := writer.SetMany(ctx, upd)
		if err != nil {
			t.Errorf("the batch: %v", err)
			close(batchRev)
			return
		}
		batchRev <- res[names[0]].Revision
	}()
	rev, ok := <-batchRev
	if !ok {
		t.FailNow()
	}
	<-first
	srv.kill() // the watcher holds the batch's first member
	srv.start()
	close(release)
	after, err := writer.Set(ctx, "after", int64(1))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for log.lastRev.Load() < after.Revision {
		if time.Now().After(deadline) {
			t.Fatalf("the watch reached revision %d of %d: %+v", log.lastRev.Load(), after.Revision, watchInfo(t, watcher, ref))
		}
		time.Sleep(5 * time.Millisecond)
	}
	want := map[int64][]string{rev: names, after.Revision: {"after"}}
	var got []delivered
	for _, u := range log.updates() {
		got = append(got, delivered{rev: u.Rev, id: u.Var, resync: u.Type != "change"})
		if u.Rev == rev && u.Val != strings.Repeat(u.Var[1:], 512) {
			t.Errorf("%s = %.20v... at revision %d", u.Var, u.Val, u.Rev)
		}
	}
	tl := checkExactlyOnce(want, got)
	wi := watchInfo(t, watcher, ref)
	t.Logf("batch of %d at revision %d: %s; %d reconnects, %d duplicates skipped (members the new stream sent again)",
		n, rev, tl, wi.Reconnects, wi.DuplicatesSkipped)
	if !tl.clean() {
		t.Fatal(tl)
	}
	if wi.Reconnects == 0 {
		t.Fatalf("the watch never reconnected: %+v", wi)
	}
}

func testRestartBehindWindow(t *testing.T, bin string) {
	const window = 10
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"), "--history-limit", fmt.Sprint(window))
	proxy := newProxy(t, srv.addr)
	writer := dialBridged(t, srv.addr, fastRedial)
	watcher := dialBridged(t, proxy.Addr(), fastRedial, varbridge.WithSessionID(writer.SessionID()))
	ctx := context.Background()
	mustRegister(t, writer, "x", varbridge.TypeInteger, int64(0))
	rec := newRecorder()
	ref := mustWatch(t, watcher, ctx, []string{"x"}, rec.watch, resumingWatch...)
	if _, err := writer.Set(ctx, "x", int64(1)); err != nil {
		t.Fatal(err)
	}
	u := rec.next(t)
	inc, seen := u.Meta.Incarnation, u.Meta.Revision

	// The watcher is kept away (the proxy refuses it) while the server
	// restarts and 3 windows of changes are written.
	proxy.SetRefuse(true)
	proxy.Cut()
	killAndRestart(t, srv, watcher, ref)
	var last *varbridge.Variable
	for i := int64(2); i <= 1+3*window; i++ {
		v, err := writer.Set(ctx, "x", i)
		if err != nil {
			t.Fatal(err)
		}
		last = v
	}
	proxy.SetRefuse(false)

	u = rec.next(t)
	if !u.Meta.Resync || u.New != last.Value || u.Meta.Revision != last.Revision || u.Meta.Incarnation != inc {
		t.Fatalf("first update after the restart, resuming at revision %d behind a window of %d ending at %d: %+v, want a RESYNC of x=%v at revision %d",
			seen+1, window, last.Revision, u, last.Value, last.Revision)
	}
	next, err := writer.Set(ctx, "x", int64(100))
	if err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.Meta.Resync || u.New != int64(100) || u.Old != last.Value || u.Meta.Revision != next.Revision {
		t.Fatalf("after the RESYNC: %+v", u)
	}
	eventually(t, "the watch to cover the last write", func() bool { return watchInfo(t, watcher, ref).LastRevision == next.Revision })
	wi := watchInfo(t, watcher, ref)
	if !wi.Alive || wi.Incarnation != inc {
		t.Fatalf("the watch after the RESYNC: %+v", wi)
	}
	t.Logf("behind the window: resumed at %d, history %d..%d after the restart: one RESYNC at %d, then %d; %d reconnects",
		seen+1, last.Revision-window+1, last.Revision, last.Revision, next.Revision, wi.Reconnects)
}

func testRestartExpiry(t *testing.T, bin string) {
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"))
	const ttl = 3 * time.Second
	ctx := context.Background()

	// Session "idle" is made with a raw client: BridgedState calls would
	// count as use. GetSession does not.
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := pb.NewBridgeServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, waitTimeout)
	}
	t0 := time.Now()
	c, cancel := call()
	_, err = api.InitializeSession(c, &pb.InitializeSessionRequest{SessionId: "idle", Ttl: durationpb.New(ttl)})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	watched := dialBridged(t, srv.addr, fastRedial, varbridge.WithSessionID("watched"), varbridge.WithSessionTTL(ttl))
	mustRegister(t, watched, "y", varbridge.TypeInteger, int64(0))
	rec := newRecorder()
	ref := mustWatch(t, watched, ctx, []string{"y"}, rec.watch, resumingWatch...)
	exists := func(id string) error {
		c, cancel := call()
		defer cancel()
		_, err := api.GetSession(c, &pb.GetSessionRequest{SessionId: id}, grpc.WaitForReady(true))
		return err
	}

	// Idle for 2 s, down for 2 s: the idle session's 3 s run out while the
	// server is down.
	time.Sleep(time.Until(t0.Add(2 * time.Second)))
	for _, id := range []string{"idle", "watched"} {
		if err := exists(id); err != nil {
			t.Fatalf("session %s before the restart: %v", id, err)
		}
	}
	before := watchInfo(t, watched, ref).Errors
	srv.kill()
	eventually(t, "the watch to see the server gone", func() bool { return watchInfo(t, watched, ref).Errors > before })
	time.Sleep(time.Until(t0.Add(4 * time.Second)))
	srv.start()
	restarted := time.Now()

	eventually(t, "session idle to expire", func() bool {
		err := exists("idle")
		return status.Code(err) == codes.NotFound
	})
	// The watched session outlives its TTL after the restart: its watch
	// came back, and a watched session does not expire.
	time.Sleep(time.Until(restarted.Add(ttl + time.Second)))
	if err := exists("watched"); err != nil {
		t.Fatalf("the watched session %v after the restart (its TTL is %v): %v; its watch: %+v",
			time.Since(restarted).Round(time.Millisecond), ttl, err, watchInfo(t, watched, ref))
	}
	v, err := watched.Set(ctx, "y", int64(1))
	if err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.Meta.Resync || u.New != int64(1) || u.Meta.Revision != v.Revision {
		t.Fatalf("the watch of the watched session after the restart: %+v", u)
	}
}

// A session watched, without a write, for longer than its TTL when the
// server is SIGKILLed: after the restart its deadline counts from the
// restart (it was watched), so it is there and its watch resumes.
func testRestartWatchedPastTTL(t *testing.T, bin string) {
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"))
	const ttl = 2 * time.Second
	ctx := context.Background()
	b := dialBridged(t, srv.addr, fastRedial, varbridge.WithSessionTTL(ttl))
	mustRegister(t, b, "y", varbridge.TypeInteger, int64(0))
	rec := newRecorder()
	ref := mustWatch(t, b, ctx, []string{"y"}, rec.watch, resumingWatch...)
	time.Sleep(ttl + 500*time.Millisecond)
	if wi := watchInfo(t, b, ref); !wi.Alive {
		t.Fatalf("the watch %v after the session's last write (TTL %v), before the restart: %+v", ttl+500*time.Millisecond, ttl, wi)
	}
	killAndRestart(t, srv, b, ref)
	eventually(t, "the watch to resume", func() bool {
		wi := watchInfo(t, b, ref)
		return wi.Reconnects > 0 || !wi.Alive
	})
	if wi := watchInfo(t, b, ref); !wi.Alive {
		t.Fatalf("the session is gone after the restart: %+v", wi)
	}
	v, err := b.Set(ctx, "y", int64(1))
	if err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.Meta.Resync || u.New != int64(1) || u.Meta.Revision != v.Revision {
		t.Fatalf("after the restart: %+v", u)
	}
}

// A session kept alive by heartbeats alone (no write) for longer than its
// TTL when the server is SIGKILLed and restarted at once: its deadline
// is the last heartbeat's (give or take the slack the store allows,
// a tenth of the TTL), not its last write's, so it is still there.
func testRestartHeartbeats(t *testing.T, bin string) {
	srv := startDurable(t, bin, filepath.Join(t.TempDir(), "data"))
	const ttl = 3 * time.Second
	ctx := context.Background()
	b := dialBridged(t, srv.addr, fastRedial, varbridge.WithSessionTTL(ttl))
	mustRegister(t, b, "y", varbridge.TypeInteger, int64(0))
	for range 5 {
		time.Sleep(ttl / 3)
		if _, err := b.Heartbeat(ctx); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	// 5 s after the last write, 0 s after the last heartbeat.
	srv.kill()
	srv.start()
	if _, err := b.Get(ctx, "y"); err != nil {
		t.Fatalf("a session kept alive by heartbeats (TTL %v), right after a restart: %v", ttl, err)
	}
}
