package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func benchStream(ctx context.Context, c *config, col *collector) error {
	srv, stopSrv, err := startServer(c, "stream", "--history-limit", fmt.Sprint(c.goTputRevs+10), "--history-bytes", fmt.Sprint(int64(8)<<30), "--history-age", "1h")
	if err != nil {
		return err
	}
	defer stopSrv()
	cc, cl, err := dial(srv.addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	sess := sessionName("tput")
	t0 := time.Now()
	first, err := fillHistory(ctx, cl, sess, c.goTputVars, c.goTputRevs)
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	total := c.goTputVars * c.goTputRevs
	fmt.Fprintf(os.Stderr, "   filled %d updates (%d revisions) in %s\n", total, c.goTputRevs, time.Since(t0).Round(time.Millisecond))
	rss, _ := rssBytes(srv.pid())
	for r := range c.runs {
		base := map[string]any{
			"how":     "one watch replays history from start_revision (every update ready at the server); timed first to last update",
			"updates": total, "variables_per_revision": c.goTputVars, "server_rss_bytes_with_history": rss,
		}
		end := srv.phase("stream-bridged-batched")
		cm := startCPU(srv)
		rate, err := bridgedReplay(ctx, srv.addr, sess, first, total, true)
		end()
		if err != nil {
			return fmt.Errorf("BridgedState batched replay run %d: %w", r, err)
		}
		cpuFigures(col, "go_stream", cm, total, "BridgedState, batched stream")
		fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s\n", "go_stream (BridgedState, batched)", rate)
		col.add("go_stream_updates_per_s", "updates/s", rate, withKV(withKV(base, "client", "varbridge.BridgedState WithBatchedStream(true) (WatchVariableBatches), Watcher callback"),
			"stream", "batched: not the default WatchVariables stream (that is go_stream_default_updates_per_s, beside it)"))
		col.declare("go_stream_default_updates_per_s", "updates/s", nil) // listed beside the batched figure
		end = srv.phase("stream-bridged")
		cm = startCPU(srv)
		rate, err = bridgedReplay(ctx, srv.addr, sess, first, total, false)
		end()
		if err != nil {
			return fmt.Errorf("BridgedState replay run %d: %w", r, err)
		}
		cpuFigures(col, "go_stream_bridged_unbatched", cm, total, "BridgedState, one message per update")
		fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s\n", "go_stream (BridgedState, per-update)", rate)
		// The default stream, under a name that says so beside the batched
		// headline (the same samples as go_stream_bridged_unbatched_*).
		col.add("go_stream_default_updates_per_s", "updates/s", rate, withKV(withKV(base, "client", "varbridge.BridgedState WatchVariables without options: the default WatchVariables stream, one message per update"),
			"same_samples_as", "go_stream_bridged_unbatched_updates_per_s"))
		col.add("go_stream_bridged_unbatched_updates_per_s", "updates/s", rate, withKV(base, "client", "varbridge.BridgedState default (WatchVariables, one message per update)"))
		end = srv.phase("stream-raw")
		cm = startCPU(srv)
		rate, err = goStreamReplay(ctx, srv.addr, sess, first, total)
		end()
		cpuFigures(col, "go_stream_raw", cm, total, "generated WatchVariables stream")
		if err != nil {
			return fmt.Errorf("go raw replay run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s\n", "go_stream (raw WatchVariables)", rate)
		col.add("go_stream_raw_updates_per_s", "updates/s", rate, withKV(base, "client", "generated grpc-go WatchVariables stream"))
		end = srv.phase("stream-raw-batched")
		cm = startCPU(srv)
		rate, per, err := goStreamReplayBatches(ctx, srv.addr, sess, first, total)
		end()
		cpuFigures(col, "go_stream_raw_batched", cm, total, "generated WatchVariableBatches stream")
		if err != nil {
			return fmt.Errorf("go raw batched replay run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s (%.0f updates/message)\n", "go_stream (raw WatchVariableBatches)", rate, per)
		col.add("go_stream_raw_batched_updates_per_s", "updates/s", rate, withKV(withKV(base, "client", "generated grpc-go WatchVariableBatches stream"), "updates_per_message", round3(per)))
		for _, mode := range []string{"lib", "raw", "rawbatched"} {
			args := []string{pyScript(c, "vb_watch.py"), "tput", "--addr", srv.addr, "--session", sess, "--start-revision", fmt.Sprint(first), "--count", fmt.Sprint(c.pyTputN)}
			name, client := "py_stream_updates_per_s", "varbridge (python) watch_variables, its default stream"
			switch mode {
			case "raw":
				name, client = "py_stream_raw_grpc_updates_per_s", "grpc.aio generated stub, WatchVariables, no varbridge.Watch"
				args = append(args, "--raw")
			case "rawbatched":
				name, client = "py_stream_raw_batched_updates_per_s", "grpc.aio generated stub, WatchVariableBatches, no varbridge.Watch"
				args = append(args, "--raw", "--batched")
			}
			args = append(args, pyProfileArgs(c, fmt.Sprintf("%s_%d", name, r))...)
			end := srv.phase("stream-py-" + mode)
			cm := startCPU(srv)
			rate, pyCPU, err := pyThroughput(ctx, c.python, args)
			end()
			if err != nil {
				return fmt.Errorf("%s run %d: %w", name, r, err)
			}
			srvNs, _ := cm.per(c.pyTputN)
			base := strings.TrimSuffix(name, "_updates_per_s")
			col.add(base+"_server_cpu_ns_per_update", "ns", srvNs, map[string]any{"how": "server CPU time (/proc) during the replay / updates"})
			col.add(base+"_client_cpu_ns_per_update", "ns", pyCPU*1e9/float64(c.pyTputN), map[string]any{"how": "Python process CPU time (time.process_time) during the replay / updates"})
			fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s\n", name, rate)
			col.add(name, "updates/s", rate, map[string]any{"how": "history replay, as go_stream_updates_per_s", "updates": c.pyTputN, "client": client})
		}
		rr, wr, err := goStreamLive(ctx, srv.addr, sessionName("live"), c.goTputVars, c.liveDur)
		if err != nil {
			return fmt.Errorf("go live run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   go live            %10.0f updates/s (writers %0.f/s)\n", rr, wr)
		col.add("go_stream_live_updates_per_s", "updates/s", rr, map[string]any{
			"how": "2 writers loop SetVariables of 100 variables while one watch reads; writers share the 2 cores", "writers_updates_per_s": round3(wr),
		})
	}
	return nil
}

// watchLayout is how a group's client puts its watches on the wire: a
// stream each (the figures as named), or the connection's shared Watch
// stream (issue 15; the same figures prefixed mux_). Each run measures both,
// one after the other, with the watches in the harness's process.
// fanLat prefixes the fanout group's in-process latency figures: the mux
// layout's mux_fanout_10k_watchers_* come from the layout instead
// (fanoutProcRun), so its in-process ones are mux_inproc_*.
type watchLayout struct {
	prefix, fanLat, client string
	fanout                 func(ctx context.Context, addr, session string, n, conns, maxWrites int) (*fanout, error)
	idle                   func(ctx context.Context, addr, session string, n, conns, parallel int) (int, time.Duration, func(), error)
}

var watchLayouts = []watchLayout{
	{"", "", "generated grpc-go WatchVariables streams, one per watch, with the Go client's codec and compact updates, one process", openFanout, idleWatches},
	{"mux_", "mux_inproc_", "generated grpc-go client, one Watch stream per connection carrying its watches, with the Go client's codec and compact updates, one process", openMuxFanout, muxIdleWatches},
}

// benchFanout: every run, one write reaching c.fanN watches of one
// variable, measured three ways: in the harness's process over
// c.fanConns connections, on both watch layouts (with a burst for
// deliveries/s and CPU); then issue 15's layout, the watches in a process
// of their own over c.fanProcConns connections, on varbridge's Watch
// streams and, beside it, on etcd's watch.
func benchFanout(ctx context.Context, c *config, col *collector, self string) error {
	srv, stopSrv, err := startServer(c, "fanout")
	if err != nil {
		return err
	}
	defer stopSrv()
	// etcd's watch with the same layout, in the same run (issue 15).
	esrv, stopEtcd, err := startEtcdTemp(self)
	if err != nil {
		return err
	}
	defer stopEtcd()
	for r := range c.runs {
		for _, l := range watchLayouts {
			if err := fanoutRun(ctx, c, col, srv, r, l); err != nil {
				return err
			}
		}
		if err := fanoutProcRun(ctx, c, col, self, srv, esrv, r); err != nil {
			return err
		}
	}
	col.ratio("mux_vs_etcd_fanout_10k_watchers_p99_ratio", "mux_fanout_10k_watchers_p99_ms", "etcd_fanout_10k_watchers_p99_ms",
		map[string]any{"target": "<= 0.5 (issue 15)", "layout": fmt.Sprintf("both with issue 15's layout: %d watches over %d connections in a process of their own (vbbench watchers), the writer in the harness", c.fanN, c.fanProcConns)})
	return nil
}

// fanoutProcRun is one run of issue 15's fan-out layout: c.fanN watches
// over c.fanProcConns client connections to the one server, opened by a
// watchers process (not the writer's), c.fanWrites spaced writes from the
// harness; varbridge's Watch streams (mux_fanout_10k_watchers_*) and
// etcd's watch (etcd_fanout_10k_watchers_*), in an order that alternates
// with the run so that drift in the machine's load hits both alike.
func fanoutProcRun(ctx context.Context, c *config, col *collector, self string, srv, esrv *proc, r int) error {
	how := fmt.Sprintf("%d spaced writes, 20 ms apart, each after the last reached every watch (2 warm-up dropped); every delivery, writer's send start -> receipt, CLOCK_MONOTONIC across the processes", c.fanWrites)
	record := func(prefix, layout string, res fanoutResult) {
		fmt.Fprintf(os.Stderr, "   %sproc run %d: opened %d watches in %d ms; write->all p50 %.2f ms p99 %.2f ms max %.2f ms; last (median) %.2f ms\n",
			prefix, r, c.fanN, res.OpenedMs, res.P50/1e3, res.P99/1e3, res.Max/1e3, res.LastP50/1e3)
		pr := map[string]any{"watches": c.fanN, "connections": c.fanProcConns, "process": "watches in a process of their own (vbbench watchers), writer in the harness", "layout": layout, "how": how}
		col.add(prefix+"fanout_10k_watchers_p99_ms", "ms", res.P99/1e3, pr)
		col.add(prefix+"fanout_10k_watchers_p50_ms", "ms", res.P50/1e3, pr)
		col.add(prefix+"fanout_10k_watchers_max_ms", "ms", res.Max/1e3, pr)
		col.add(prefix+"fanout_10k_watchers_last_ms", "ms", res.LastP50/1e3, withKV(pr, "how", "median over the spaced writes of the time to the write's last delivery"))
	}
	args := func(mode, addr string) []string {
		return []string{"-mode", mode, "-addrs", addr,
			"-n", fmt.Sprint(c.fanN), "-conns", fmt.Sprint(c.fanProcConns), "-writes", fmt.Sprint(c.fanWrites)}
	}
	vb := func() error {
		end := srv.phase("fanout-proc")
		res, err := varbridgeFanout(ctx, self, srv.addr, sessionName("fan-proc"), args("fanout", srv.addr), c.fanWrites)
		end()
		if err != nil {
			return fmt.Errorf("mux proc run %d: %w", r, err)
		}
		record("mux_", "generated grpc-go client with the Go client's codec and compact updates, one Watch stream per connection carrying its watches; writer: SetVariable on a connection of its own", res)
		return nil
	}
	etcd := func() error {
		key := fmt.Sprintf("fan-%d-%d", r, time.Now().UnixNano())
		ec, err := etcdClient(esrv.addr)
		if err != nil {
			return err
		}
		defer ec.Close()
		res, err := remoteFanout(ctx, self, append(args("etcd-fanout", esrv.addr), "-session", key), c.fanWrites, func() error {
			_, err := ec.Put(ctx, key, strconv.FormatInt(mono(), 10))
			return err
		})
		if err != nil {
			return fmt.Errorf("etcd proc run %d: %w", r, err)
		}
		record("etcd_", "clientv3 Watch of one key, one clientv3 client per connection (its watchers share one gRPC stream); writer: clientv3 Put on a client of its own; etcd 3.7 in its own process", res)
		return nil
	}
	order := []func() error{vb, etcd}
	if r%2 == 1 {
		order = []func() error{etcd, vb}
	}
	for _, f := range order {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// fanoutRun is one run of the fanout group on the watches l makes, in the
// harness's process.
func fanoutRun(ctx context.Context, c *config, col *collector, srv *proc, r int, l watchLayout) error {
	prefix, client := l.prefix, l.client
	{
		f, err := l.fanout(ctx, srv.addr, sessionName("fan"), c.fanN, c.fanConns, c.fanWrites+c.fanBurst)
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		err = func() error {
			defer f.close()
			var all []int64
			end := srv.phase("fanout-spaced")
			for w := range c.fanWrites {
				if err := f.write(ctx); err != nil {
					return err
				}
				if err := f.wait(w, 30*time.Second); err != nil {
					return err
				}
				if w >= 2 { // the first two warm up
					all = append(all, f.lat[w]...)
				}
				time.Sleep(20 * time.Millisecond)
			}
			end()
			p50, p99, pmax := latencyStats(all)
			end = srv.phase("fanout-burst")
			cm := startCPU(srv)
			t0 := time.Now()
			for range c.fanBurst {
				if err := f.write(ctx); err != nil {
					return err
				}
			}
			if err := f.wait(c.fanWrites+c.fanBurst-1, 60*time.Second); err != nil {
				return err
			}
			el := time.Since(t0)
			end()
			pr := map[string]any{"watches": c.fanN, "connections": c.fanConns, "client": client, "process": "watches and writer both in the harness process"}
			srvNs, cliNs := cm.per(c.fanBurst * c.fanN)
			col.add(prefix+"fanout_server_cpu_ns_per_delivery", "ns", srvNs, withKV(pr, "how", "server CPU time (/proc) during the burst / deliveries"))
			col.add(prefix+"fanout_client_cpu_ns_per_delivery", "ns", cliNs, withKV(pr, "how", "harness CPU time (10k Go receivers and the writer) during the burst / deliveries"))
			dps := float64(c.fanBurst*c.fanN) / el.Seconds()
			fmt.Fprintf(os.Stderr, "   %srun %d: opened %d watches in %s; write->all p50 %.2f ms p99 %.2f ms max %.2f ms; burst %0.f deliveries/s\n",
				l.fanLat, r, c.fanN, f.opened.Round(time.Millisecond), p50/1e3, p99/1e3, pmax/1e3, dps)
			col.add(l.fanLat+"fanout_10k_watchers_p99_ms", "ms", p99/1e3, withKV(pr, "how", fmt.Sprintf("%d spaced writes (2 warm-up dropped), p99 over every delivery, send start -> receipt", c.fanWrites)))
			col.add(l.fanLat+"fanout_10k_watchers_p50_ms", "ms", p50/1e3, pr)
			col.add(l.fanLat+"fanout_10k_watchers_max_ms", "ms", pmax/1e3, pr)
			col.add(prefix+"fanout_deliveries_per_s", "deliveries/s", dps, withKV(pr, "how", fmt.Sprintf("%d back-to-back writes, until every watch has all", c.fanBurst)))
			if e := f.errs.Load(); e > 0 {
				return fmt.Errorf("%d watch streams failed", e)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("%srun %d: %w", prefix, r, err)
		}
	}
	return nil
}

// cpuFigures records the server's and the Go client's CPU time per update
// of a stream phase.
func cpuFigures(col *collector, prefix string, cm cpuMeter, updates int, what string) {
	srvNs, cliNs := cm.per(updates)
	col.add(prefix+"_server_cpu_ns_per_update", "ns", srvNs, map[string]any{"how": "server CPU time (/proc) during the replay / updates", "client": what})
	col.add(prefix+"_client_cpu_ns_per_update", "ns", cliNs, map[string]any{"how": "harness (Go client) CPU time during the replay / updates", "client": what})
}

func benchIdle(ctx context.Context, c *config, col *collector) error {
	for r := range c.idleRuns {
		for _, l := range watchLayouts {
			if err := idleRun(ctx, c, col, r, l); err != nil {
				return err
			}
		}
	}
	return nil
}

// idleRun is one run of the idle group on the watches l makes, on a server
// of its own.
func idleRun(ctx context.Context, c *config, col *collector, r int, l watchLayout) error {
	prefix, client, open := l.prefix, l.client, l.idle
	{
		err := func() error {
			srv, stopSrv, err := startServer(c, "idle", "--max-watches", fmt.Sprint(2*c.idleN), "--metrics-listen", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer stopSrv()
			// Warm the server (one session, one watch) before the baseline.
			_, _, rel, err := idleWatches(ctx, srv.addr, sessionName("warm"), 1, 1, 1)
			if err != nil {
				return err
			}
			rel()
			time.Sleep(500 * time.Millisecond)
			rss0, err := rssBytes(srv.pid())
			if err != nil {
				return err
			}
			gauges := []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"}
			var g0 map[string]float64
			if srv.metrics != "" {
				if g0, err = promGauges(srv.metrics, gauges...); err != nil {
					return err
				}
			}
			opened, el, release, err := open(ctx, srv.addr, sessionName("idle"), c.idleN, c.idleConns, 128)
			if release != nil {
				defer release()
			}
			if err != nil {
				return fmt.Errorf("opened %d of %d watches: %w", opened, c.idleN, err)
			}
			time.Sleep(2 * time.Second) // let the server settle
			rss1, err := rssBytes(srv.pid())
			if err != nil {
				return err
			}
			per := float64(rss1-rss0) / float64(opened)
			if g0 != nil {
				g1, err := promGauges(srv.metrics, gauges...)
				if err != nil {
					return err
				}
				pr := map[string]any{"how": "server /metrics delta / watches"}
				col.add(prefix+"idle_watch_server_heap_bytes", "bytes", (g1["go_memstats_heap_inuse_bytes"]-g0["go_memstats_heap_inuse_bytes"])/float64(opened), pr)
				col.add(prefix+"idle_watch_server_stack_bytes", "bytes", (g1["go_memstats_stack_inuse_bytes"]-g0["go_memstats_stack_inuse_bytes"])/float64(opened), pr)
				col.add(prefix+"idle_watch_server_goroutines", "goroutines", (g1["go_goroutines"]-g0["go_goroutines"])/float64(opened), pr)
			}
			rate := float64(opened) / el.Seconds()
			fmt.Fprintf(os.Stderr, "   %srun %d: %d watches open in %s (%.0f/s); server RSS %d -> %d MiB: %.0f bytes/watch\n",
				prefix, r, opened, el.Round(time.Millisecond), rate, rss0>>20, rss1>>20, per)
			pr := map[string]any{"watches": opened, "connections": c.idleConns, "client": client, "parallel_openers": 128, "heartbeat": "server default"}
			col.add(prefix+"idle_watch_server_bytes", "bytes", per, withKV(pr, "how", "server VmRSS delta / watches, 2 s after the last opened"))
			col.add(prefix+"watches_opened_per_s", "watches/s", rate, withKV(pr, "how", "each open waits for the response header the server sends once the watch is registered"))
			col.add(prefix+"idle_server_rss_bytes", "bytes", float64(rss1), pr)
			return nil
		}()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return fmt.Errorf("%srun %d: %w", prefix, r, err)
		}
	}
	return nil
}
