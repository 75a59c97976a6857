package systest

// The soak (issue 6, item 2): thousands of watches and continuous writes
// for minutes, memory printed over time and required to stay flat. Not part
// of `go test` or `make test`; `make soak` runs it (-soak=3m).
//
// Its local.State watches sit on the very store the in-process server
// serves, so that one set of writes feeds both kinds of watch; no exported
// API builds such a local.State, so the test takes package local's
// unexported constructor through internal/testhooks.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/testhooks"
	"github.com/varbridge/varbridge/local"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// localOnStore is a local.State on st, which its Close leaves open: package
// local's unexported constructor, through its test hook.
func localOnStore(st *store.Store, opts ...varbridge.Option) (*local.State, error) {
	return testhooks.LocalOnStore.(func(*store.Store, ...varbridge.Option) (*local.State, error))(st, opts...)
}

var soakFor = flag.Duration("soak", envDuration("VARBRIDGE_SOAK", 0),
	"run TestSoak for this long (make soak: 3m); 0 skips it")

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// rssBytes is the process's resident set size (Linux), or 0.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

type soakSample struct {
	at                 time.Duration
	heap, inuse, rss   uint64
	goroutines, watchs int
	delivered, writes  int64
}

// TestSoak: one in-process server; 4 sessions of 32 variables; 2,000
// varbridge.BridgedState watches (500 per session: most name 1-3 variables, 10 watch
// the whole session; half the sessions' clients go through a proxy that
// cuts every connection every 15 s, so 1,000 watches reconnect at once)
// and 400 local.State watches on the same store; writers commit 250 single
// sets and batches per second per session; 50 varbridge.BridgedState watches are
// unwatched and watched again every second. Every tenth of the run it
// prints the live heap, heap in use, RSS, goroutines, observers and rates.
// After a warm-up of a quarter of the run, the live heap of the last third
// of the samples must stay within 15% + 4 MiB of the first third, and the
// goroutine count within 2%; when everything stops, goroutines are back at
// the baseline exactly and no observer is left.
func TestSoak(t *testing.T) {
	d := *soakFor
	if d <= 0 {
		t.Skip("the soak runs with make soak (-soak=3m or VARBRIDGE_SOAK=3m)")
	}
	const (
		sessions        = 4
		vars            = 32
		bridgedPerSess  = 500
		wholePerSess    = 10
		localPerSess    = 100
		writesPerSecond = 250 // per session
		churnPerSecond  = 50
	)
	m := metrics.New()
	const hist = 10_000
	srv := servertest.Start(t, store.Options{HistoryLimit: hist}, server.WithMetrics(m))
	proxy := newProxy(t, srv.Addr)
	ctx := context.Background()
	baseGoroutines := stableGoroutines() // the server and proxy, no client yet

	var delivered, writes, resyncs, counter atomic.Int64
	watcher := func(_ string, _, _ any, meta varbridge.UpdateMeta) {
		delivered.Add(1)
		if meta.Resync {
			resyncs.Add(1)
		}
	}
	type spec struct {
		p      *varbridge.BridgedState
		idents []string
		ref    varbridge.WatchRef
	}
	var (
		specsMu sync.Mutex
		specs   []*spec
		states  []*varbridge.BridgedState // the watchers' states
		writers []*varbridge.BridgedState // direct, never cut
		locals  []*local.State
		names   [][]string
	)
	for s := range sessions {
		addr := srv.Addr
		if s%2 == 1 {
			addr = proxy.Addr()
		}
		w := dialBridged(t, srv.Addr, varbridge.WithSessionID(fmt.Sprintf("soak-%d", s)))
		writers = append(writers, w)
		var ns []string
		for v := range vars {
			n := fmt.Sprintf("v%02d", v)
			ns = append(ns, n)
			mustRegister(t, w, n, varbridge.TypeInteger, int64(0))
		}
		names = append(names, ns)
		// Fill the history window now with writes like the writers' (a
		// quarter of them batches), so that its growth is not mistaken for a
		// leak.
		for i := range hist {
			n := 1
			if i%4 == 0 {
				n = 2 + rand.IntN(4)
			}
			var ws []store.Write
			for _, k := range rand.Perm(vars)[:n] {
				ws = append(ws, store.Write{Identifier: ns[k], Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: -counter.Add(1)}}})
			}
			if _, err := srv.Store.Set(w.SessionID(), ws, nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		b := dialBridged(t, addr, varbridge.WithSessionID(w.SessionID()))
		states = append(states, b)
		for i := range bridgedPerSess {
			sp := &spec{p: b}
			if i >= wholePerSess {
				for _, k := range rand.Perm(vars)[:1+rand.IntN(3)] {
					sp.idents = append(sp.idents, ns[k])
				}
			}
			sp.ref = mustWatch(t, b, ctx, sp.idents, watcher, varbridge.WithMaxFailures(1000))
			specs = append(specs, sp)
		}
		l, err := localOnStore(srv.Store, varbridge.WithSessionID(b.SessionID()), varbridge.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		locals = append(locals, l)
		for range localPerSess {
			mustWatch(t, l, ctx, []string{ns[rand.IntN(vars)]}, watcher)
		}
	}
	watches := sessions * (bridgedPerSess + localPerSess)
	eventually(t, "every watch registered", func() bool { return srv.Store.WatchCount() == watches })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	tick := func(every time.Duration, f func()) {
		wg.Go(func() {
			tk := time.NewTicker(every)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					f()
				}
			}
		})
	}
	for s := range sessions {
		b, ns := writers[s], names[s]
		tick(time.Second/writesPerSecond, func() {
			var err error
			if rand.IntN(4) == 0 {
				upd := map[string]any{}
				for _, k := range rand.Perm(vars)[:2+rand.IntN(4)] {
					upd[ns[k]] = counter.Add(1)
				}
				_, err = b.SetMany(ctx, upd)
			} else {
				_, err = b.Set(ctx, ns[rand.IntN(vars)], counter.Add(1))
			}
			if err != nil {
				t.Errorf("write: %v", err)
				return
			}
			writes.Add(1)
		})
	}
	var churned, churnRetries, cutEvents atomic.Int64
	tick(time.Second/churnPerSecond, func() { // watch/unwatch churn
		specsMu.Lock()
		sp := specs[rand.IntN(len(specs))]
		specsMu.Unlock()
		if !sp.ref.IsZero() {
			if err := sp.p.UnwatchVariables(sp.ref); err != nil {
				t.Errorf("unwatch: %v", err)
				return
			}
			sp.ref = varbridge.WatchRef{}
		}
		ref, err := sp.p.WatchVariables(ctx, sp.idents, watcher, varbridge.WithMaxFailures(1000))
		if errors.Is(err, varbridge.ErrUnavailable) { // a cut hit the new watch's first calls: try again later
			churnRetries.Add(1)
			return
		}
		if err != nil {
			t.Errorf("watch: %v", err)
			return
		}
		sp.ref = ref
		churned.Add(1)
	})
	tick(15*time.Second, func() { proxy.Cut(); cutEvents.Add(1) })

	interval := max(d/10, 5*time.Second)
	var samples []soakSample
	t0 := time.Now()
	var lastDelivered, lastWrites int64
	t.Logf("%8s %10s %10s %10s %10s %9s %12s %10s", "elapsed", "live heap", "heap inuse", "rss", "goroutines", "observers", "deliveries/s", "writes/s")
	for time.Since(t0) < d {
		time.Sleep(min(interval, d-time.Since(t0)))
		var ms runtime.MemStats
		heap := heapInUse()
		runtime.ReadMemStats(&ms)
		s := soakSample{
			at: time.Since(t0), heap: heap, inuse: ms.HeapInuse, rss: rssBytes(),
			goroutines: runtime.NumGoroutine(), watchs: srv.Store.WatchCount(),
			delivered: delivered.Load(), writes: writes.Load(),
		}
		secs := interval.Seconds()
		if len(samples) > 0 {
			secs = (s.at - samples[len(samples)-1].at).Seconds()
		}
		t.Logf("%8s %10s %10s %10s %10d %9d %12.0f %10.0f", s.at.Round(time.Second), mib(s.heap), mib(s.inuse), mib(s.rss),
			s.goroutines, s.watchs, float64(s.delivered-lastDelivered)/secs, float64(s.writes-lastWrites)/secs)
		lastDelivered, lastWrites = s.delivered, s.writes
		samples = append(samples, s)
		if t.Failed() {
			break
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d writes, %d deliveries, %d resync updates; %d watches replaced (%d retried after a cut); %d cuts of %d connections; %v watches opened on the server",
		writes.Load(), delivered.Load(), resyncs.Load(), churned.Load(), churnRetries.Load(), cutEvents.Load(), proxy.Cuts(),
		gatherValue(t, m, metrics.WatchesOpened))

	// Flat: compare the first and last thirds of the samples after warm-up.
	var steady []soakSample
	for _, s := range samples {
		if s.at >= d/4 {
			steady = append(steady, s)
		}
	}
	if len(steady) >= 3 {
		third := len(steady) / 3
		avg := func(ss []soakSample, f func(soakSample) float64) float64 {
			var sum float64
			for _, s := range ss {
				sum += f(s)
			}
			return sum / float64(len(ss))
		}
		first, last := steady[:third], steady[len(steady)-third:]
		h0, h1 := avg(first, func(s soakSample) float64 { return float64(s.heap) }), avg(last, func(s soakSample) float64 { return float64(s.heap) })
		g0, g1 := avg(first, func(s soakSample) float64 { return float64(s.goroutines) }), avg(last, func(s soakSample) float64 { return float64(s.goroutines) })
		t.Logf("steady state: live heap %s -> %s, goroutines %.0f -> %.0f", mib(uint64(h0)), mib(uint64(h1)), g0, g1)
		if h1 > h0*1.15+4<<20 {
			t.Errorf("the live heap grew from %s to %s over the run", mib(uint64(h0)), mib(uint64(h1)))
		}
		if g1 > g0*1.02 {
			t.Errorf("goroutines grew from %.0f to %.0f over the run", g0, g1)
		}
	} else {
		t.Logf("too short for a steady-state comparison (%d samples after warm-up)", len(steady))
	}

	for _, l := range locals {
		_ = l.Close()
	}
	for _, b := range append(states, writers...) {
		_ = b.Close()
	}
	_ = proxy.Close()
	eventually(t, "every observer to go", func() bool { return srv.Store.WatchCount() == 0 })
	g := settleGoroutines(baseGoroutines, 15*time.Second)
	if g == baseGoroutines {
		g = stableGoroutines()
	}
	t.Logf("every client closed: goroutines %d (%d with the server alone), live heap %s (the sessions and their history stay)",
		g, baseGoroutines, mib(heapInUse()))
	if g > baseGoroutines {
		t.Errorf("%d goroutines after every client closed, %d before any started\n%s", g, baseGoroutines, goroutineDump())
	}
}
