package systest

// The fault suite (issue 6, item 1). A loopback proxy cuts, stalls and
// blackholes the watchers' connection at random every 100-500 ms while
// writers commit single sets and SetVariables batches at full speed; every
// watcher must see every revision exactly once, in order, and every member
// of a batch exactly once. A blackholed connection must be found by
// keepalive on both ends, and a restarted server (in-memory store) must
// give its old clients a clear ErrSessionNotFound.
//
// Sizes: `go test` (and so `make test`) writes 10,000 updates with one
// blackhole; `make chaos` passes -chaos.updates=100000 -chaos.blackholes=2
// (or set VARBRIDGE_CHAOS_UPDATES, VARBRIDGE_CHAOS_BLACKHOLES).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

var (
	chaosUpdates = flag.Int("chaos.updates", envInt("VARBRIDGE_CHAOS_UPDATES", 10_000),
		"updates the fault suite writes at least (make chaos: 100000)")
	chaosBlackholes = flag.Int("chaos.blackholes", envInt("VARBRIDGE_CHAOS_BLACKHOLES", 1),
		"blackholes in the fault suite; each costs the client's keepalive time (~11 s)")
	chaosStrict = flag.Bool("chaos.strict", os.Getenv("VARBRIDGE_CHAOS_STRICT") != "",
		"slow-consumer test: assert the strict 10% writer-throughput bound (make chaos)")
)

// Keepalive for the fault suite: the server pings a silent client after 1 s
// and drops it 0.5 s later; clients ping every 10 s, the most often the
// server permits (server.ClientPingInterval; grpc-go clients cannot go lower).
const (
	chaosServerKaTime    = time.Second
	chaosServerKaTimeout = 500 * time.Millisecond
	chaosClientKaTime    = server.ClientPingInterval
	chaosClientKaTimeout = time.Second
)

// faultLog counts the faults a chaos run injected.
type faultLog struct {
	cuts, stalls, blackholes atomic.Int64
	// Per blackhole: how long until the server had dropped the session's
	// observers, and until the client had noticed and was watching again.
	mu           sync.Mutex
	serverGone   []time.Duration
	clientBack   []time.Duration
	blackholeErr []string
}

func (f *faultLog) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	round := func(ds []time.Duration) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.Round(time.Millisecond).String()
		}
		return out
	}
	return fmt.Sprintf("%d cuts, %d stalls, %d blackholes (server dropped observers after %v; clients back after %v)",
		f.cuts.Load(), f.stalls.Load(), f.blackholes.Load(), round(f.serverGone), round(f.clientBack))
}

// injector cuts, stalls and blackholes a proxy's connections every
// 100-500 ms until stopped. Blackholes are spread over the run: the next one
// comes after blackholeEvery other faults. After a blackhole it waits for
// the server to drop the observers (watchCount reaching 0) and for the
// clients to come back (watchCount reaching watches again).
type injector struct {
	proxy          *cutproxy.Proxy
	log            *faultLog
	blackholes     int
	blackholeEvery int
	watches        int
	watchCount     func() int
	rng            *rand.Rand
}

// run injects faults until stop is closed and at least minFaults faults and
// every blackhole are done; then it closes done.
func (in *injector) run(stop <-chan struct{}, minFaults int, done chan<- struct{}) {
	defer close(done)
	faults, holes := 0, 0
	stopped := false
	for {
		if !stopped {
			select {
			case <-stop:
				stopped = true
			default:
			}
		}
		if stopped && faults >= minFaults && holes >= in.blackholes {
			return
		}
		time.Sleep(time.Duration(100+in.rng.IntN(401)) * time.Millisecond)
		switch {
		case holes < in.blackholes && faults >= (holes+1)*in.blackholeEvery:
			if in.blackhole() {
				holes++
				faults++
			}
		case in.rng.IntN(2) == 0:
			if n := in.proxy.Cut(); n > 0 {
				in.log.cuts.Add(int64(n))
				faults++
			}
		default:
			// Shorter than the server's keepalive timeout, so a stall delays
			// and does not break; anything held is delivered after it.
			if n := in.proxy.Stall(time.Duration(50+in.rng.IntN(251)) * time.Millisecond); n > 0 {
				in.log.stalls.Add(int64(n))
				faults++
			}
		}
	}
}

func (in *injector) blackhole() bool {
	// New connections are refused until the server has dropped the
	// blackholed observers, so that a watch back early cannot hide them.
	in.proxy.SetRefuse(true)
	t0 := time.Now()
	n := in.proxy.Blackhole()
	if n == 0 {
		in.proxy.SetRefuse(false)
		return false
	}
	in.log.blackholes.Add(int64(n))
	serverLimit := chaosServerKaTime + chaosServerKaTimeout + time.Second // +1 s for a busy 2-core machine
	clientLimit := chaosClientKaTime + chaosClientKaTimeout + 5*time.Second
	var gone, back time.Duration
	var problems []string
	for in.watchCount() > 0 {
		if time.Since(t0) > 3*serverLimit {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	gone = time.Since(t0)
	if in.watchCount() > 0 {
		problems = append(problems, fmt.Sprintf("the server still had %d observers %v after a blackhole", in.watchCount(), gone))
	} else if gone > serverLimit {
		problems = append(problems, fmt.Sprintf("the server dropped the blackholed observers after %v, want within keepalive %v + %v (+1 s)",
			gone, chaosServerKaTime, chaosServerKaTimeout))
	}
	in.proxy.SetRefuse(false)
	for in.watchCount() < in.watches {
		if time.Since(t0) > 2*clientLimit {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	back = time.Since(t0)
	if in.watchCount() < in.watches {
		problems = append(problems, fmt.Sprintf("only %d of %d watches back %v after a blackhole", in.watchCount(), in.watches, back))
	} else if back > clientLimit {
		problems = append(problems, fmt.Sprintf("the clients came back %v after a blackhole, want within keepalive %v + %v (+5 s)",
			back, chaosClientKaTime, chaosClientKaTimeout))
	}
	in.log.mu.Lock()
	in.log.serverGone = append(in.log.serverGone, gone)
	in.log.clientBack = append(in.log.clientBack, back)
	in.log.blackholeErr = append(in.log.blackholeErr, problems...)
	in.log.mu.Unlock()
	return true
}

// delivered is one update as a watcher saw it.
type delivered struct {
	rev    int64
	id     string
	resync bool
}

// tally is what checkExactlyOnce found.
type tally struct {
	updates, revisions                         int
	lost, duplicated, outOfOrder, split, extra int
	resyncs                                    int
}

func (t tally) String() string {
	return fmt.Sprintf("%d updates at %d revisions: %d lost, %d duplicated, %d out of order, %d batches split, %d unexpected, %d resyncs",
		t.updates, t.revisions, t.lost, t.duplicated, t.outOfOrder, t.split, t.extra, t.resyncs)
}

func (t tally) clean() bool {
	return t.lost+t.duplicated+t.outOfOrder+t.split+t.extra+t.resyncs == 0
}

// checkExactlyOnce compares what a watcher got with what was committed
// (revision -> the variable ids written at it): every (revision, id) once,
// revisions ascending, the members of a revision consecutive.
func checkExactlyOnce(want map[int64][]string, got []delivered) tally {
	var tl tally
	tl.revisions = len(want)
	expected := map[delivered]bool{}
	for rev, ids := range want {
		for _, id := range ids {
			expected[delivered{rev: rev, id: id}] = true
		}
	}
	tl.updates = len(expected)
	seen := map[delivered]bool{}
	doneRevs := map[int64]bool{}
	var cur int64
	for _, d := range got {
		if d.resync {
			tl.resyncs++
			continue
		}
		k := delivered{rev: d.rev, id: d.id}
		switch {
		case seen[k]:
			tl.duplicated++
			continue
		case !expected[k]:
			tl.extra++
			continue
		}
		seen[k] = true
		if d.rev != cur {
			if d.rev < cur {
				tl.outOfOrder++
			}
			if doneRevs[d.rev] {
				tl.split++ // a revision's members came back after another revision
			}
			if cur != 0 {
				doneRevs[cur] = true
			}
			cur = d.rev
		}
	}
	tl.lost = len(expected) - len(seen)
	return tl
}

// commits collects what the writers committed, revision -> variable ids.
type commits struct {
	mu      sync.Mutex
	byRev   map[int64][]string
	updates int
	batches int
	last    int64
}

func (c *commits) add(rev int64, ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byRev == nil {
		c.byRev = map[int64][]string{}
	}
	if _, dup := c.byRev[rev]; dup {
		panic(fmt.Sprintf("two writes at revision %d", rev))
	}
	c.byRev[rev] = ids
	c.updates += len(ids)
	if len(ids) > 1 {
		c.batches++
	}
	c.last = max(c.last, rev)
}

func (c *commits) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.updates
}

// chaosWriter writes random single sets and SetMany batches of 2-6
// variables with unique values (never a no-op) until stop closes, pausing
// while paused() holds, and records what it committed.
func chaosWriter(ctx context.Context, p varbridge.StateProvider, names []string, ids map[string]string, seed uint64,
	counter *atomic.Int64, c *commits, stop <-chan struct{}, paused func() bool) error {
	rng := rand.New(rand.NewPCG(seed, 42))
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		if paused() {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if rng.IntN(100) < 35 {
			upd := map[string]any{}
			for _, k := range rng.Perm(len(names))[:2+rng.IntN(5)] {
				upd[names[k]] = counter.Add(1)
			}
			res, err := p.SetMany(ctx, upd)
			if err != nil {
				return fmt.Errorf("SetMany: %w", err)
			}
			var rev int64
			var got []string
			for n, v := range res {
				rev = v.Revision
				got = append(got, ids[n])
			}
			c.add(rev, got...)
		} else {
			n := names[rng.IntN(len(names))]
			v, err := p.Set(ctx, n, counter.Add(1))
			if err != nil {
				return fmt.Errorf("Set: %w", err)
			}
			c.add(v.Revision, v.ID)
		}
	}
}

// TestChaosFaultsExactlyOnce: two BridgedState watches (one over
// WatchVariableBatches naming every variable, one over WatchVariables
// watching the whole session) share a connection through a proxy that
// cuts, stalls and blackholes it every 100-500 ms, while two writers on a
// direct connection commit at full speed. Each watch must get every
// committed revision exactly once, in order, batches whole and unsplit,
// and no resync (the history holds everything). Each blackhole must be
// found by the server's keepalive (observers removed) and by the client's
// (the watches come back through a new connection).
func TestChaosFaultsExactlyOnce(t *testing.T) {
	n := *chaosUpdates
	srv := servertest.Start(t, store.Options{HistoryLimit: 3*n + 10_000, HistoryBytes: 4 << 30},
		server.WithKeepalive(chaosServerKaTime, chaosServerKaTimeout))
	proxy := newProxy(t, srv.Addr)
	watcher := dialBridged(t, proxy.Addr(), fastRedial, varbridge.WithKeepalive(chaosClientKaTime, chaosClientKaTimeout))
	writer := dialBridged(t, srv.Addr, varbridge.WithSessionID(watcher.SessionID()))
	sess := watcher.SessionID()

	const nvars = 16
	var names []string
	ids := map[string]string{}
	for i := range nvars {
		name := fmt.Sprintf("v%02d", i)
		names = append(names, name)
		ids[name] = mustRegister(t, writer, name, varbridge.TypeInteger, int64(0)).ID
	}

	type watchRun struct {
		name string
		ref  varbridge.WatchRef
		got  []delivered // appended only by the watch's goroutine until Unwatch
		fail atomic.Value
	}
	runs := []*watchRun{{name: "batches, named"}, {name: "single, session"}}
	ctx := context.Background()
	for i, r := range runs {
		idents, batched := names, true
		if i == 1 {
			idents, batched = nil, false
		}
		r.ref = mustWatch(t, watcher, ctx, idents, func(_ string, _, _ any, m varbridge.UpdateMeta) {
			r.got = append(r.got, delivered{rev: m.Revision, id: m.VariableID, resync: m.Resync})
		}, varbridge.WithBatchedStream(batched), varbridge.WithHeartbeat(50*time.Millisecond),
			varbridge.WithBackoff(5*time.Millisecond, 100*time.Millisecond), varbridge.WithMaxFailures(1000),
			varbridge.WithErrorHandler(func(err error) { r.fail.Store(err) }))
	}
	watchCount := func() int {
		info, err := srv.Store.GetSession(sess)
		if err != nil {
			return -1
		}
		return info.WatchCount
	}

	flog := &faultLog{}
	in := &injector{
		proxy: proxy, log: flog, blackholes: *chaosBlackholes, watches: len(runs), watchCount: watchCount,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
	}
	// Spread the blackholes: about one per (expected faults / (blackholes+1)).
	minFaults := max(20, n/2_000)
	in.blackholeEvery = max(5, minFaults/(in.blackholes+1))

	var (
		c       commits
		counter atomic.Int64
		wg      sync.WaitGroup
		werrs   = make(chan error, 2)
	)
	stopWrites := make(chan struct{})
	// Writers pause once 3n updates are in while the injector still has
	// faults to make, so the history (3n and more) always holds what a
	// watcher that was blackholed for ~11 s still needs.
	paused := func() bool { return c.count() >= 3*n }
	t0 := time.Now()
	for i := range 2 {
		wg.Go(func() {
			if err := chaosWriter(ctx, writer, names, ids, uint64(i+1), &counter, &c, stopWrites, paused); err != nil {
				werrs <- err
			}
		})
	}
	stopFaults := make(chan struct{})
	faultsDone := make(chan struct{})
	go in.run(stopFaults, minFaults, faultsDone)

	// Stop writing once n updates are in and the injector is done.
	deadline := time.Now().Add(5*time.Minute + time.Duration(n/100)*time.Millisecond*10)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d updates written", c.count(), n)
		}
		select {
		case err := <-werrs:
			t.Fatal(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	close(stopFaults)
	<-faultsDone
	close(stopWrites)
	wg.Wait()
	close(werrs)
	for err := range werrs {
		t.Fatal(err)
	}
	writeTime := time.Since(t0)

	// Let the watches catch up, then stop them.
	last := c.last
	catchUp := time.Now().Add(2 * time.Minute)
	for _, r := range runs {
		for watchInfo(t, watcher, r.ref).LastRevision < last {
			if time.Now().After(catchUp) {
				t.Fatalf("%s: the watch reached revision %d of %d: %+v; %s", r.name,
					watchInfo(t, watcher, r.ref).LastRevision, last, watchInfo(t, watcher, r.ref), flog)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	elapsed := time.Since(t0)
	for _, r := range runs {
		wi := watchInfo(t, watcher, r.ref)
		if err := watcher.UnwatchVariables(r.ref); err != nil {
			t.Fatal(err)
		}
		if err, _ := r.fail.Load().(error); err != nil {
			t.Errorf("%s: the watch failed: %v", r.name, err)
		}
		tl := checkExactlyOnce(c.byRev, r.got)
		t.Logf("%s: %s; %d reconnects, %d stream errors, %d duplicates skipped by the client",
			r.name, tl, wi.Reconnects, wi.Errors, wi.DuplicatesSkipped)
		if !tl.clean() {
			t.Errorf("%s: %s", r.name, tl)
		}
		if tl.updates != c.updates {
			t.Errorf("%s: checked %d updates, %d were written", r.name, tl.updates, c.updates)
		}
	}
	t.Logf("%d updates (%d batches) at %d revisions in %v (%.0f updates/s), all delivered after %v; %s",
		c.updates, c.batches, len(c.byRev), writeTime.Round(time.Millisecond), float64(c.updates)/writeTime.Seconds(),
		elapsed.Round(time.Millisecond), flog)
	for _, p := range flog.blackholeErr {
		t.Error(p)
	}
	if flog.cuts.Load() == 0 || flog.stalls.Load() == 0 || flog.blackholes.Load() < int64(*chaosBlackholes) {
		t.Errorf("not every fault happened: %s", flog)
	}
	eventually(t, "the server's observers to go", func() bool { return srv.Store.WatchCount() == 0 })
}

// restartable is a real server on a fixed loopback address that a test
// stops and starts again; each start has a fresh in-memory store.
type restartable struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	g    *grpc.Server
	st   *store.Store
	done chan struct{}
}

func startRestartable(t *testing.T) *restartable {
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	var lis net.Listener
	var err error
	for range 100 { // the old socket may linger for a moment
		if lis, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("listen on %s again: %v", r.addr, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addr = lis.Addr().String()
	r.st = store.New(store.Options{})
	r.g = server.New(r.st, server.WithLogger(quiet)).GRPCServer()
	r.done = make(chan struct{})
	go func(g *grpc.Server, done chan struct{}) {
		defer close(done)
		_ = g.Serve(lis)
	}(r.g, r.done)
}

// stop ends the server as a crash or restart would: every connection and
// stream is cut, and the store and all its sessions are gone.
func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.g == nil {
		return
	}
	r.g.Stop()
	<-r.done
	r.st.Close()
	r.g = nil
}

// TestChaosServerRestartSessionNotFound: a server restart with an in-memory
// store loses every session. A BridgedState watch on one reconnects, finds
// its session gone and ends with ErrSessionNotFound, through its error
// handler and in ListWatchers, within a bound: never a silent hang. Calls on
// the state fail the same way. The watch uses the default backoff.
func TestChaosServerRestartSessionNotFound(t *testing.T) {
	srv := startRestartable(t)
	b := dialBridged(t, srv.addr)
	mustRegister(t, b, "x", varbridge.TypeInteger, int64(1))
	errs := make(chan error, 2)
	rec := newRecorder()
	ref := mustWatch(t, b, context.Background(), []string{"x"}, rec.watch,
		varbridge.WithErrorHandler(func(err error) { errs <- err }))
	ch, err := varbridge.Watch(context.Background(), b, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Set(context.Background(), "x", int64(2)); err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.New != int64(2) {
		t.Fatalf("before the restart: %+v", u)
	}

	srv.stop()
	time.Sleep(1500 * time.Millisecond) // down for a moment: the watches retry
	srv.start()
	t0 := time.Now()
	const limit = 30 * time.Second
	select {
	case err := <-errs:
		if !errors.Is(err, varbridge.ErrSessionNotFound) {
			t.Fatalf("the watch ended with %v, want ErrSessionNotFound", err)
		}
		t.Logf("the watch ended %v after the restart: %v", time.Since(t0).Round(time.Millisecond), err)
	case <-time.After(limit):
		t.Fatalf("no error %v after the server restarted: %+v", limit, watchInfo(t, b, ref))
	}
	wi := watchInfo(t, b, ref)
	if wi.Alive || !errors.Is(wi.LastError, varbridge.ErrSessionNotFound) || !strings.Contains(wi.Reason, "not found") {
		t.Fatalf("ListWatchers after the restart: alive %v, reason %q, last error %v", wi.Alive, wi.Reason, wi.LastError)
	}
	// The channel form ends with the same error as its last value.
	var last varbridge.Update
	timeout := time.After(limit)
	for done := false; !done; {
		select {
		case u, ok := <-ch:
			if !ok {
				done = true
				break
			}
			last = u
		case <-timeout:
			t.Fatal("the Watch channel did not end after the restart")
		}
	}
	if !errors.Is(last.Err, varbridge.ErrSessionNotFound) {
		t.Fatalf("the Watch channel ended with %+v, want ErrSessionNotFound", last)
	}
	if _, err := b.Get(context.Background(), "x"); !errors.Is(err, varbridge.ErrSessionNotFound) {
		t.Fatalf("Get after the restart: %v, want ErrSessionNotFound", err)
	}
	if err := b.UnwatchVariables(ref); err != nil {
		t.Fatal(err)
	}
}
