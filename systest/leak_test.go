package systest

// Leaks (issue 6, item 2): watch/unwatch churn and clients that die without
// a word leave goroutines (exactly), observers and heap (within a
// tolerance) where they were.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

var (
	leakLocalCycles = flag.Int("leak.local", envInt("VARBRIDGE_LEAK_LOCAL_CYCLES", 100_000),
		"local.State watch/unwatch cycles")
	leakBridgedCycles = flag.Int("leak.bridged", envInt("VARBRIDGE_LEAK_BRIDGED_CYCLES", 100_000),
		"BridgedState watch/unwatch cycles")
)

// heapSlack is how far the live heap may end above its baseline: runtime
// and library bookkeeping (sync.Pool contents, grpc buffer pools, map
// buckets that do not shrink) move it by a fraction of a MiB without
// anything leaking. Leaking 32 bytes per cycle would exceed it in 100,000
// cycles.
const heapSlack = 3 << 20

// baseline is the process's goroutines and live heap at a quiet moment.
type baseline struct {
	goroutines int
	heap       uint64
}

func takeBaseline() baseline { return baseline{goroutines: stableGoroutines(), heap: heapInUse()} }

// check waits (bounded) for the goroutines to come back to the baseline
// (no tolerance: one more fails) and the heap to within heapSlack of it,
// and reports both.
func (b baseline) check(t *testing.T, what string) {
	t.Helper()
	g := settleGoroutines(b.goroutines, 15*time.Second)
	if g == b.goroutines { // settled at most at the baseline; it must not be below either
		g = stableGoroutines()
	}
	h := heapInUse()
	t.Logf("%s: goroutines %d -> %d, live heap %s -> %s", what, b.goroutines, g, mib(b.heap), mib(h))
	if g > b.goroutines {
		t.Errorf("%s: %d goroutines, baseline %d\n%s", what, g, b.goroutines, goroutineDump())
	}
	if h > b.heap+heapSlack {
		t.Errorf("%s: live heap %s, baseline %s (+%s allowed)", what, mib(h), mib(b.heap), mib(heapSlack))
	}
}

// TestLeakWatchUnwatchCycles runs many watch/unwatch cycles, four at a
// time, on a local.State and on a BridgedState, while a writer changes the
// watched variable every millisecond (so watches end with deliveries in
// flight); every 50th watch takes initial values and waits for its first
// update before it goes. Afterwards the store has no observer, the provider
// lists no watch, and goroutines and heap are back at their baseline.
func TestLeakWatchUnwatchCycles(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		// A local.State has its own store with the default history
		// (store.DefaultHistoryLimit records), not the 64 the server below
		// keeps: churn fills it before the baseline, so that the history
		// reaching its limit during the run is not taken for a leak.
		l := newLocal(t, varbridge.WithSessionID("leak-local"))
		churn(t, l, func() int { return localObservers(t, l) }, nil, *leakLocalCycles, store.DefaultHistoryLimit)
	})
	t.Run("bridged", func(t *testing.T) {
		m := metrics.New()
		srv := servertest.Start(t, store.Options{HistoryLimit: 64}, server.WithMetrics(m))
		b := dialBridged(t, srv.Addr)
		churn(t, b, srv.Store.WatchCount, m, *leakBridgedCycles, 0)
	})
}

// churn runs cycles watch/unwatch cycles on p; observers counts the
// observers in the store behind p. Before the baseline it writes prefill
// distinct values, to fill the history window.
func churn(t *testing.T, p varbridge.StateProvider, observers func() int, m *metrics.Metrics, cycles, prefill int) {
	ctx := context.Background()
	mustRegister(t, p, "x", varbridge.TypeInteger, int64(0))
	for i := range prefill {
		if _, err := p.Set(ctx, "x", -int64(i)-1); err != nil {
			t.Fatal(err)
		}
	}
	var delivered atomic.Int64
	fn := func(string, any, any, varbridge.UpdateMeta) { delivered.Add(1) }
	cycle := func(i int) error {
		var got chan struct{}
		w := fn
		opts := []varbridge.WatchOption{varbridge.WithHeartbeat(time.Hour)}
		if i%50 == 0 {
			got = make(chan struct{})
			var once sync.Once
			w = func(string, any, any, varbridge.UpdateMeta) { once.Do(func() { close(got) }) }
			opts = append(opts, varbridge.WithInitialValues(true))
		}
		ref, err := p.WatchVariables(ctx, []string{"x"}, w, opts...)
		if err != nil {
			return fmt.Errorf("cycle %d: watch: %w", i, err)
		}
		if got != nil {
			select {
			case <-got:
			case <-time.After(waitTimeout):
				return fmt.Errorf("cycle %d: no initial value", i)
			}
		}
		if err := p.UnwatchVariables(ref); err != nil {
			return fmt.Errorf("cycle %d: unwatch: %w", i, err)
		}
		return nil
	}
	for i := range 200 { // warm up pools, connections and caches
		if err := cycle(i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the warm-up observers to go", func() bool { return observers() == 0 })
	base := takeBaseline()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the writer
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if _, err := p.Set(ctx, "x", i); err != nil {
				t.Error(err)
				return
			}
		}
	})
	const workers = 4
	var next atomic.Int64
	errs := make(chan error, workers)
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > cycles {
					return
				}
				if err := cycle(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var peak int
	for done := false; !done; {
		select {
		case err := <-errs:
			t.Error(err)
			done = true
		case <-time.After(100 * time.Millisecond):
			peak = max(peak, observers())
			done = next.Load() > int64(cycles)
		}
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(t0)
	if t.Failed() {
		return
	}
	eventually(t, "every observer to go", func() bool { return observers() == 0 })
	if n := len(p.ListWatchers()); n != 0 {
		t.Errorf("%d watches still listed", n)
	}
	if m != nil {
		eventually(t, "varbridge_watches_open to read 0", func() bool { return gatherValue(t, m, metrics.WatchesOpen) == 0 })
		t.Logf("metrics: %v watches opened, %v open", gatherValue(t, m, metrics.WatchesOpened), gatherValue(t, m, metrics.WatchesOpen))
	}
	t.Logf("%d watch/unwatch cycles in %v (%.0f/s), %d updates delivered to them, at most %d observers at once",
		cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), delivered.Load(), peak)
	base.check(t, fmt.Sprintf("after %d cycles", cycles))
}

// Environment of the helper process that TestLeakKilledClients starts and
// kills: this test binary, running TestLeakHelperProcess.
const (
	helperAddrEnv    = "VARBRIDGE_LEAK_HELPER_ADDR"
	helperSessionEnv = "VARBRIDGE_LEAK_HELPER_SESSION"
	helperWatchesEnv = "VARBRIDGE_LEAK_HELPER_WATCHES"
)

// TestLeakHelperProcess is not a test: it is the client process that
// TestLeakKilledClients starts and kills with SIGKILL. It opens watches on
// a session, says "ready", and waits to be killed.
func TestLeakHelperProcess(t *testing.T) {
	addr := os.Getenv(helperAddrEnv)
	if addr == "" {
		t.Skip("the client process of TestLeakKilledClients")
	}
	n, _ := strconv.Atoi(os.Getenv(helperWatchesEnv))
	ctx := context.Background()
	b, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID(os.Getenv(helperSessionEnv)), varbridge.WithLogger(quiet))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	for i := range n {
		idents := []string{"x"}
		if i%2 == 1 {
			idents = nil // the whole session
		}
		// Heartbeats every 20 ms keep the server sending to every stream.
		if _, err := b.WatchVariables(ctx, idents, func(string, any, any, varbridge.UpdateMeta) {},
			varbridge.WithHeartbeat(20*time.Millisecond), varbridge.WithBatchedStream(i%3 == 0)); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
	}
	fmt.Println("ready")
	time.Sleep(2 * time.Minute) // killed long before; never outlive a lost parent
	os.Exit(3)
}

// startHelpers starts n client processes with watches each and waits until
// they are ready.
func startHelpers(t *testing.T, n, watches int, addr, session string) []*exec.Cmd {
	t.Helper()
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeakHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperAddrEnv+"="+addr, helperSessionEnv+"="+session,
			helperWatchesEnv+"="+strconv.Itoa(watches))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		ready := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if l := sc.Text(); l == "ready" || strings.HasPrefix(l, "error:") {
					ready <- l
				}
			}
			close(ready)
		}()
		select {
		case l := <-ready:
			if l != "ready" {
				t.Fatalf("client process: %q", l)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("a client process did not get ready")
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}

func killAll(t *testing.T, cmds []*exec.Cmd) {
	t.Helper()
	for _, c := range cmds {
		if err := c.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
}

// TestLeakKilledClients: client processes with many watches each are
// killed with SIGKILL while a writer keeps the session busy. "killed": the
// kernel closes their sockets, and the server drops their observers at
// once. "vanished": they sit behind a proxy that blackholes their
// connections before they are killed, so the server hears nothing and only
// its keepalive (1 s + 0.5 s here) finds them. Either way the server's
// observers go, and the goroutines (exactly) and heap of this process,
// which hosts the server, return to their baseline.
func TestLeakKilledClients(t *testing.T) {
	const (
		kaTime, kaTimeout = time.Second, 500 * time.Millisecond
		procs, watches    = 3, 40
	)
	m := metrics.New()
	srv := servertest.Start(t, store.Options{HistoryLimit: 256}, server.WithKeepalive(kaTime, kaTimeout), server.WithMetrics(m))
	writer := dialBridged(t, srv.Addr, varbridge.WithSessionID("killed"))
	mustRegister(t, writer, "x", varbridge.TypeInteger, int64(0))
	mustRegister(t, writer, "y", varbridge.TypeInteger, int64(0))
	stop := make(chan struct{})
	writing := make(chan struct{})
	go func() { // keeps the killed clients' streams busy
		defer close(writing)
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if _, err := writer.SetMany(context.Background(), map[string]any{"x": i, "y": -i}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-writing }()
	base := takeBaseline()

	for _, vanish := range []bool{false, true} {
		name := map[bool]string{false: "killed", true: "vanished"}[vanish]
		addr := srv.Addr
		var proxy interface {
			Blackhole() int
			Close() error
			Addr() string
		}
		if vanish {
			p := newProxy(t, srv.Addr)
			proxy, addr = p, p.Addr()
		}
		cmds := startHelpers(t, procs, watches, addr, "killed")
		eventually(t, "every helper watch to be registered", func() bool { return srv.Store.WatchCount() == procs*watches })
		open := gatherValue(t, m, metrics.WatchesOpen)
		t0 := time.Now()
		if vanish {
			proxy.Blackhole()
		}
		killAll(t, cmds)
		limit := 2 * time.Second // the kernel closes a killed process's sockets at once
		if vanish {
			limit = kaTime + kaTimeout + time.Second // +1 s for a busy 2-core machine
		}
		for srv.Store.WatchCount() > 0 && time.Since(t0) < 5*limit {
			time.Sleep(2 * time.Millisecond)
		}
		gone := time.Since(t0)
		t.Logf("%s: %d processes with %d watches each (varbridge_watches_open %v) SIGKILLed; observers gone after %v",
			name, procs, watches, open, gone.Round(time.Millisecond))
		if n := srv.Store.WatchCount(); n != 0 {
			t.Fatalf("%s: %d observers left %v after the clients died", name, n, gone)
		}
		if gone > limit {
			t.Errorf("%s: observers gone after %v, want within %v", name, gone, limit)
		}
		if vanish {
			_ = proxy.Close() // the proxy's held sockets and goroutines
		}
		eventually(t, "varbridge_watches_open to read 0", func() bool { return gatherValue(t, m, metrics.WatchesOpen) == 0 })
		base.check(t, name)
	}
}

// Issue 10 item 3: closing the provider closes the channel of Watch and
// ends the Updates loop, and nothing of either outlives it, although their
// context never ends. One channel's reader has stopped reading, so its
// watcher is blocked on a full channel when Close comes. goleak catches the
// goroutine that used to wait on the context forever.
func TestLeakWatchFormsEndWithProvider(t *testing.T) {
	for _, kind := range []string{"local", "bridged"} {
		t.Run(kind, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Run("close", func(t *testing.T) {
				var e env
				if kind == "local" {
					e = newLocalEnv(t)
				} else {
					e, _ = newBridgedEnv(t, store.Options{})
				}
				watchFormsEndOnClose(t, e)
			})
			goleak.VerifyNone(t, ignore)
		})
	}
}

func watchFormsEndOnClose(t *testing.T, e env) {
	ctx := context.Background() // never ends: only Close may end the watches
	mustRegister(t, e.p, "x", varbridge.TypeInteger, int64(0))
	read, err := varbridge.Watch(ctx, e.p, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	stalled, err := varbridge.Watch(ctx, e.p, []string{"x"}) // never read until Close
	if err != nil {
		t.Fatal(err)
	}
	iterated := make(chan int64, 1)
	var seen atomic.Int64
	go func() {
		for _, err := range varbridge.Updates(ctx, e.p, []string{"x"}) {
			if err != nil {
				t.Errorf("Updates yielded %v", err)
			}
			seen.Add(1)
		}
		iterated <- seen.Load()
	}()
	eventually(t, "three watches", func() bool { return len(e.p.ListWatchers()) == 3 })
	const writes = 100 // more than the channel holds
	for i := int64(1); i <= writes; i++ {
		e.set(t, "x", i, nil)
	}
	for i := int64(1); i <= writes; i++ {
		if u := <-read; u.New != i {
			t.Fatalf("read %+v, want %d", u, i)
		}
	}
	eventually(t, "the stalled channel to fill", func() bool { return len(stalled) == cap(stalled) })
	eventually(t, "the Updates loop to see every write", func() bool { return seen.Load() == writes })

	if err := e.p.Close(); err != nil {
		t.Fatal(err)
	}
	drained := func(name string, ch <-chan varbridge.Update) int {
		n := 0
		timeout := time.After(waitTimeout)
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					return n
				}
				if u.Err != nil {
					t.Errorf("%s channel ended with %v; Close is not an error", name, u.Err)
				}
				n++
			case <-timeout:
				t.Errorf("the %s channel is still open %v after Close", name, waitTimeout)
				return n
			}
		}
	}
	if n := drained("read", read); n != 0 {
		t.Errorf("the read channel had %d more updates", n)
	}
	if n := drained("stalled", stalled); n < cap(stalled) {
		t.Errorf("the stalled channel gave %d updates, want at least the %d it held", n, cap(stalled))
	}
	select {
	case n := <-iterated:
		if n != writes {
			t.Errorf("the Updates loop saw %d updates, want %d", n, writes)
		}
	case <-time.After(waitTimeout):
		t.Errorf("the Updates loop did not end %v after Close", waitTimeout)
	}
}
