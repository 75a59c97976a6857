package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The cluster group (issue 12): two varbridge servers, A and B, keeping
// their sessions in one three-member etcd cluster (--etcd-endpoints), all
// on loopback, each in a process of its own. Every run measures, in turn:
//
//   - a write through A to a watcher on B (cluster_set_to_go_watcher_*),
//     and beside it a bare etcd Put through one member to a clientv3 Watch
//     on another (etcd_cluster_set_to_go_watcher_*): the same workload and
//     method as the latency group;
//   - one write through A to 10,000 watches of one session, the watches in
//     a process of their own ("vbbench watchers"), their connections
//     split between A and B (cluster_fanout_10k_watchers_*);
//   - what a server pays per session it has watchers for: B (restarted, so
//     its memory starts clean) gets one watch on each of N sessions from a
//     process of their own; its RSS growth and the etcd watches the members
//     gained, per session.

const clusterMembers = 3

func benchCluster(ctx context.Context, c *config, col *collector, self string) error {
	members, stopEtcd, err := startEtcdCluster(self, clusterMembers)
	if err != nil {
		return err
	}
	defer stopEtcd()
	var eps []string
	for _, m := range members {
		eps = append(eps, m.addr)
	}
	startVB := func(name string) (*proc, func(), error) {
		return startServerArgs(c, "cluster-"+name, "--etcd-endpoints", strings.Join(eps, ","), "--http-listen", "", "--metrics-listen", "127.0.0.1:0")
	}
	a, stopA, err := startVB("a")
	if err != nil {
		return err
	}
	defer stopA()
	b, stopB, err := startVB("b")
	if err != nil {
		return err
	}
	defer func() { stopB() }()
	for r := range c.runs {
		if err := clusterLatencyRun(ctx, c, col, a, b, members, r); err != nil {
			return fmt.Errorf("latency run %d: %w", r, err)
		}
		if err := clusterFanoutRun(ctx, c, col, self, a, b, r); err != nil {
			return fmt.Errorf("fanout run %d: %w", r, err)
		}

		// B restarted: its memory baseline is a fresh server's, as in the
		// idle group.
		stopB()
		if b, stopB, err = startVB(fmt.Sprintf("b-restarted-%d", r)); err != nil { // its own -perf file
			return err
		}
		if err := clusterSessionsRun(ctx, c, col, self, a, b, members, r); err != nil {
			return fmt.Errorf("sessions run %d: %w", r, err)
		}
	}
	for _, p := range []string{"p50", "p99"} {
		col.ratio("cluster_vs_etcd_set_to_go_watcher_"+p+"_ratio", "cluster_set_to_go_watcher_"+p+"_us", "etcd_cluster_set_to_go_watcher_"+p+"_us",
			map[string]any{"target": "<= 1.2 (issue 12)"})
	}
	return nil
}

// clusterLatencyRun is one run of the latency pair, interleaved (so drift
// in machine load hits both alike): a BridgedState of A writing to a
// BridgedState of B, then a clientv3 Put through one member to a Watch
// through another; with the etcd calls and the CPU time each write cost.
func clusterLatencyRun(ctx context.Context, c *config, col *collector, a, b *proc, members []*proc, r int) error {
	n := c.latN + c.latWarm
	latParams := map[string]any{
		"rate_per_s": c.rate, "samples_per_run": c.latN, "warmup": c.latWarm,
		"missed_count_as_us": float64(latTimeout.Microseconds()),
		"time_from":          "writer's call start, CLOCK_MONOTONIC",
		"etcd":               fmt.Sprintf("%d-member etcd 3.7 cluster on loopback, each member its own process, default fsync", len(members)),
	}
	record := func(prefix, client string, ls latSamples, el time.Duration) {
		pr := withKV(latParams, "client", client)
		p50, p99, pmax := latencyStats(withMissed(ls.send, c.latWarm, c.latN))
		col.add(prefix+"_p50_us", "us", p50, pr)
		col.add(prefix+"_p99_us", "us", p99, pr)
		col.add(prefix+"_max_us", "us", pmax, pr)
		col.add(prefix+"_missed", "updates", float64(ls.missed), pr)
		rate := float64(n+1) / el.Seconds()
		name := strings.TrimSuffix(prefix, "_set_to_go_watcher") + "_latency_writes_per_s"
		col.add(name, "writes/s", rate, map[string]any{"how": fmt.Sprintf("the writes of the run / its wall time (session set-up included): the writer is paced at %d/s but each write waits for the one before", c.rate)})
		fmt.Fprintf(os.Stderr, "   %-34s p50 %7.1f us  p99 %7.1f us  max %8.1f us  missed %d  (%.0f writes/s achieved)\n", prefix, p50, p99, pmax, ls.missed, rate)
	}
	perWrite := func(s0, s1 float64) float64 { return (s1 - s0) * 1e6 / float64(n+1) }

	end := a.phase("cluster-latency")
	rpcs0, err := etcdRPCs(members)
	if err != nil {
		return err
	}
	cpuA, cpuB, cpuE := cpuSeconds(a.pid()), cpuSeconds(b.pid()), membersCPU(members)
	t0 := time.Now()
	ls, err := bridgedLatency(ctx, a.addr, b.addr, sessionName("cl-lat"), n, c.rate)
	el := time.Since(t0)
	end()
	if err != nil {
		return err
	}
	cpr := map[string]any{"how": "process CPU time (/proc) over the cluster_set_to_go_watcher run / its writes"}
	col.add("cluster_server_a_cpu_us_per_set", "us", perWrite(cpuA, cpuSeconds(a.pid())), withKV(cpr, "what", "server A (takes the writes)"))
	col.add("cluster_server_b_cpu_us_per_set", "us", perWrite(cpuB, cpuSeconds(b.pid())), withKV(cpr, "what", "server B (follows the session in etcd, serves the watcher)"))
	col.add("cluster_etcd_cpu_us_per_set", "us", perWrite(cpuE, membersCPU(members)), withKV(cpr, "what", "the three etcd members together"))
	rpcs1, err := etcdRPCs(members)
	if err != nil {
		return err
	}
	for _, m := range []string{"Txn", "Range"} {
		col.add("cluster_etcd_"+strings.ToLower(m)+"s_per_set", "requests", (rpcs1[m]-rpcs0[m])/float64(n+1), map[string]any{
			"how": "etcd's grpc_server_handled_total{grpc_method=\"" + m + "\"} summed over the members, over the cluster_set_to_go_watcher run (its session's creation and registration included) / its writes"})
	}
	record("cluster_set_to_go_watcher", "writer: a BridgedState of server A only; watcher: a BridgedState of server B only; A and B share the etcd cluster", ls, el)

	// The pair of members turns with the run: a watch on the leader sees a
	// commit before one on a follower does, and varbridge's servers spread
	// their etcd calls over every member.
	wm, rm := r%len(members), (r+1)%len(members)
	cpuE = membersCPU(members)
	t0 = time.Now()
	ls, err = etcdLatencyGo(ctx, members[wm].addr, members[rm].addr, fmt.Sprintf("cluster-lat-%d", r), n, c.rate)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	record("etcd_cluster_set_to_go_watcher", "writer: clientv3 Put through member r mod 3 (run r); watcher: clientv3 Watch through member r+1 mod 3", ls, time.Since(t0))
	col.add("etcd_cluster_cpu_us_per_put", "us", perWrite(cpuE, membersCPU(members)), map[string]any{"how": "the three etcd members' CPU time (/proc) over the etcd_cluster_set_to_go_watcher run / its Puts"})
	fmt.Fprintf(os.Stderr, "   (etcd writer member %d, watcher member %d, leader member %d; etcd Txn calls per varbridge Set %.2f)\n",
		wm, rm, etcdLeader(members), (rpcs1["Txn"]-rpcs0["Txn"])/float64(n+1))
	return nil
}

// clusterFanoutRun: one session with 10,000 watches from a watchers
// process, over connections half to A and half to B; c.fanWrites spaced
// writes through A (the first two warm up).
func clusterFanoutRun(ctx context.Context, c *config, col *collector, self string, a, b *proc, r int) error {
	res, err := varbridgeFanout(ctx, self, a.addr, sessionName("cl-fan"), []string{"-mode", "fanout", "-addrs", a.addr + "," + b.addr,
		"-n", fmt.Sprint(c.fanN), "-conns", fmt.Sprint(c.clusterConns), "-writes", fmt.Sprint(c.fanWrites)}, c.fanWrites)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "   cluster fanout run %d: opened %d watches in %d ms; write->all p50 %.2f ms p99 %.2f ms max %.2f ms\n",
		r, c.fanN, res.OpenedMs, res.P50/1e3, res.P99/1e3, res.Max/1e3)
	pr := map[string]any{
		"watches": c.fanN, "connections": c.clusterConns,
		"layout": "one Watch stream per connection (mux), connections alternately to server A and server B; the watchers in a process of their own (vbbench watchers); writer: SetVariable through A",
		"how":    fmt.Sprintf("%d spaced writes (2 warm-up dropped), every delivery, send start -> receipt", c.fanWrites),
	}
	col.add("cluster_fanout_10k_watchers_p99_ms", "ms", res.P99/1e3, pr)
	col.add("cluster_fanout_10k_watchers_p50_ms", "ms", res.P50/1e3, pr)
	col.add("cluster_fanout_10k_watchers_max_ms", "ms", res.Max/1e3, pr)
	col.add("cluster_fanout_10k_watchers_last_ms", "ms", res.LastP50/1e3, withKV(pr, "how", "median over the spaced writes of the time to the write's last delivery"))
	return nil
}

// clusterSessionsRun: c.clusterSessions sessions made through A; a
// watchers process opens one watch on each, all on B; B's RSS and the
// members' etcd_debugging_mvcc_watcher_total before and after.
func clusterSessionsRun(ctx context.Context, c *config, col *collector, self string, a, b *proc, members []*proc, r int) error {
	prefix := sessionName("cl-sess")
	wcc, wc, err := dial(a.addr)
	if err != nil {
		return err
	}
	defer wcc.Close()
	n := c.clusterSessions
	forEach := func(f func(i int) error) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for k := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n+1 && errs[k] == nil; i = int(next.Add(1)) - 1 {
					errs[k] = f(i)
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	// Sessions 0..n-1 are measured; session n warms B up.
	name := func(i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
	err = forEach(func(i int) error { return newSession(ctx, wc, name(i), "x") })
	defer func() {
		_ = forEach(func(i int) error {
			_, err := wc.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: name(i)})
			return err
		})
	}()
	if err != nil {
		return err
	}
	if err := clusterWarm(ctx, b.addr, name(n)); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	rss0, err := rssBytes(b.pid())
	if err != nil {
		return err
	}
	w0, err := etcdWatchers(members)
	if err != nil {
		return err
	}
	gauges := []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"}
	g0, err := promGauges(b.metrics, gauges...)
	if err != nil {
		return err
	}
	w, err := startPython(ctx, self, "watchers", "-mode", "sessions", "-addrs", b.addr, "-session", prefix,
		"-n", fmt.Sprint(n), "-conns", fmt.Sprint(min(c.clusterConns, n)))
	if err != nil {
		return err
	}
	defer w.kill()
	line, err := w.waitLine(2 * time.Minute)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "ready") {
		return fmt.Errorf("watchers: %q", line)
	}
	time.Sleep(2 * time.Second) // let the server settle
	rss1, err := rssBytes(b.pid())
	if err != nil {
		return err
	}
	w1, err := etcdWatchers(members)
	if err != nil {
		return err
	}
	g1, err := promGauges(b.metrics, gauges...)
	if err != nil {
		return err
	}
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := w.waitLine(30 * time.Second); err == nil {
		return errors.New("watchers: unexpected output after ready")
	}
	perBytes := float64(rss1-rss0) / float64(n)
	perWatch := (w1 - w0) / float64(n)
	fmt.Fprintf(os.Stderr, "   cluster sessions run %d: %d sessions watched on B; B RSS %d -> %d MiB: %.0f bytes/session (heap %.0f, goroutines %.1f); etcd watchers %.0f -> %.0f: %.2f per session\n",
		r, n, rss0>>20, rss1>>20, perBytes, (g1["go_memstats_heap_inuse_bytes"]-g0["go_memstats_heap_inuse_bytes"])/float64(n), (g1["go_goroutines"]-g0["go_goroutines"])/float64(n), w0, w1, perWatch)
	pr := map[string]any{"sessions": n, "watches_per_session": 1, "connections": min(c.clusterConns, n),
		"client": "one Watch stream per connection (mux), every watch on server B, from a process of their own (vbbench watchers); the sessions made through server A"}
	col.add("cluster_server_bytes_per_watched_session", "bytes", perBytes, withKV(pr, "how", "server B's VmRSS delta / sessions, 2 s after the last watch opened; B restarted before, warmed with one watched session"))
	gpr := withKV(pr, "how", "server B's /metrics delta / sessions")
	col.add("cluster_server_heap_bytes_per_watched_session", "bytes", (g1["go_memstats_heap_inuse_bytes"]-g0["go_memstats_heap_inuse_bytes"])/float64(n), gpr)
	col.add("cluster_server_stack_bytes_per_watched_session", "bytes", (g1["go_memstats_stack_inuse_bytes"]-g0["go_memstats_stack_inuse_bytes"])/float64(n), gpr)
	col.add("cluster_server_goroutines_per_watched_session", "goroutines", (g1["go_goroutines"]-g0["go_goroutines"])/float64(n), gpr)
	col.add("cluster_etcd_watches_per_watched_session", "watches", perWatch, withKV(pr, "how", "etcd_debugging_mvcc_watcher_total summed over the members' /metrics (--listen-metrics-urls), after - before, / sessions"))
	return nil
}

// clusterWarm opens and closes one watch of session on addr.
func clusterWarm(ctx context.Context, addr, session string) error {
	cc, c, err := dial(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = openMuxStreams(sctx, []pb.BridgeServiceClient{c}, session, 1, nil, nil)
	return err
}

// membersCPU is the etcd members' CPU time together, in seconds.
func membersCPU(members []*proc) float64 {
	var s float64
	for _, m := range members {
		s += cpuSeconds(m.pid())
	}
	return s
}

// etcdLeader is the index of the member whose etcd_server_is_leader is 1,
// or -1.
func etcdLeader(members []*proc) int {
	for i, m := range members {
		if g, err := promGauges(m.metrics, "etcd_server_is_leader"); err == nil && g["etcd_server_is_leader"] == 1 {
			return i
		}
	}
	return -1
}

// etcdRPCs sums grpc_server_handled_total (etcd's gRPC calls handled, by
// method) over the members.
func etcdRPCs(members []*proc) (map[string]float64, error) {
	out := map[string]float64{}
	for _, m := range members {
		resp, err := http.Get(m.metrics)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			rest, ok := strings.CutPrefix(line, "grpc_server_handled_total{")
			if !ok {
				continue
			}
			_, after, ok := strings.Cut(rest, `grpc_method="`)
			if !ok {
				continue
			}
			method, _, _ := strings.Cut(after, `"`)
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				out[method] += v
			}
		}
	}
	return out, nil
}

// etcdWatchers sums etcd_debugging_mvcc_watcher_total (the watchers a
// member serves) over the members.
func etcdWatchers(members []*proc) (float64, error) {
	const name = "etcd_debugging_mvcc_watcher_total"
	var sum float64
	for _, m := range members {
		g, err := promGauges(m.metrics, name)
		if err != nil {
			return 0, err
		}
		v, ok := g[name]
		if !ok {
			return 0, fmt.Errorf("%s: no %s", m.metrics, name)
		}
		sum += v
	}
	return sum, nil
}
