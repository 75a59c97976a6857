package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/varbridge/varbridge"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// benchLocal measures local.State (in process, no network): set -> watcher
// callback at the latency workload's rate, and a saturated single watch.
func benchLocal(ctx context.Context, c *config, col *collector) error {
	n := c.latN + c.latWarm
	for r := range c.runs {
		ls, err := localLatency(ctx, n, c.rate)
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		send := ls.send[min(c.latWarm, len(ls.send)):]
		p50, p99, pmax := latencyStats(send)
		pr := map[string]any{"rate_per_s": c.rate, "samples_per_run": c.latN, "client": "varbridge local.State Set -> Watcher callback"}
		col.add("local_set_to_watcher_p50_us", "us", p50, pr)
		col.add("local_set_to_watcher_p99_us", "us", p99, pr)
		fmt.Fprintf(os.Stderr, "   %-28s p50 %7.1f us  p99 %7.1f us  max %8.1f us  missed %d\n", "local_set_to_watcher", p50, p99, pmax, ls.missed)
		pp, err := localPingPong(ctx, c.latN)
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		q50, q99, _ := latencyStats(pp)
		col.add("local_set_to_watcher_pingpong_p50_us", "us", q50, map[string]any{"how": "Set, wait for the callback, Set again (no idle gap: no OS thread wake-up)", "samples_per_run": c.latN})
		col.add("local_set_to_watcher_pingpong_p99_us", "us", q99, nil)
		fmt.Fprintf(os.Stderr, "   %-28s p50 %7.1f us  p99 %7.1f us\n", "local ping-pong", q50, q99)
		rate, resyncs, err := localThroughput(ctx, c.localN)
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   local stream       %10.0f updates/s  resyncs %d\n", rate, resyncs)
		col.add("local_stream_updates_per_s", "updates/s", rate, map[string]any{"how": "one goroutine Sets as fast as it can; one watch; timed until the last callback; counts the callbacks delivered (a RESYNC, when the writer outran the watch past the history window, delivers the current value instead of the values it skipped: see local_stream_resyncs)", "updates": c.localN})
		col.add("local_stream_resyncs", "resyncs", float64(resyncs), map[string]any{"how": "RESYNC updates the local_stream watch received in the run (0: every value was delivered)", "updates": c.localN})
	}
	return nil
}

func benchLatency(ctx context.Context, c *config, col *collector, self string) error {
	srv, stopSrv, err := startServer(c, "latency")
	if err != nil {
		return err
	}
	defer stopSrv()
	var nsrv *proc
	if c.natsOn {
		dir, err := os.MkdirTemp("", "vbbench-nats-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if nsrv, err = startNATS(self, dir); err != nil {
			return err
		}
		defer nsrv.stop()
	}
	fsrv, err := startFloor(self)
	if err != nil {
		return err
	}
	defer fsrv.stop()
	n := c.latN + c.latWarm
	params := map[string]any{
		"rate_per_s": c.rate, "samples_per_run": c.latN, "warmup": c.latWarm,
		"missed_count_as_us": float64(latTimeout.Microseconds()),
		"missed":             fmt.Sprintf("a value the watcher never saw (NATS KV with history 1 drops a value superseded before delivery) counts in the percentiles as the run's timeout, %s (how long the harness waits for the watcher after the last write); *_missed counts them", latTimeout),
	}
	// Two figures per client: _from_send_ (the headline, issue 15: from the
	// writer's call start, what a user feels) and, beside it, the figure
	// from the server's commit (issue 5's definition: "a write committed at
	// the server -> a watcher"), which leaves out the writer's own call.
	record := func(prefix string, ls latSamples, extra map[string]any) {
		pr := maps.Clone(params)
		maps.Copy(pr, extra)
		sp50, sp99, spmax := latencyStats(withMissed(ls.send, c.latWarm, c.latN))
		col.add(prefix+"_from_send_p50_us", "us", sp50, pr)
		col.add(prefix+"_from_send_p99_us", "us", sp99, pr)
		col.add(prefix+"_from_send_max_us", "us", spmax, pr)
		p50, p99, pmax := latencyStats(withMissed(ls.commit, c.latWarm, c.latN))
		cpr := maps.Clone(pr)
		cpr["time_from"] = "the server's commit timestamp (wall clock, same host)"
		col.add(prefix+"_p50_us", "us", p50, cpr)
		col.add(prefix+"_p99_us", "us", p99, cpr)
		col.add(prefix+"_max_us", "us", pmax, cpr)
		col.add(prefix+"_missed", "updates", float64(ls.missed), pr)
		fmt.Fprintf(os.Stderr, "   %-34s from send p50 %7.1f us  p99 %7.1f us | from commit p50 %7.1f us  p99 %7.1f us  max %8.1f us | missed %d\n",
			prefix, sp50, sp99, p50, p99, pmax, ls.missed)
	}
	// NATS, the same workload on JetStream KV, on both storages: memory
	// (nats_mem_*) and file (nats_file_*, and under the older names
	// nats_set_to_* as well: the same samples).
	natsRecord := func(client string, st natsStorage, ls latSamples, extra map[string]any) {
		pr := maps.Clone(extra)
		pr["kv"] = st.desc
		record("nats_"+st.name+"_set_to_"+client+"_watcher", ls, pr)
		if st == natsFile {
			record("nats_set_to_"+client+"_watcher", ls, withKV(pr, "same_samples_as", "nats_file_set_to_"+client+"_watcher_* (these names are kept for continuity: file storage, as before)"))
		}
	}
	for r := range c.runs {
		// Interleaved, so drift in machine load hits every client alike.
		end := srv.phase("latency-bridged")
		ls, err := bridgedLatency(ctx, srv.addr, srv.addr, sessionName("lat-bridged"), n, c.rate)
		end()
		if err != nil {
			return fmt.Errorf("grpc go (BridgedState) run %d: %w", r, err)
		}
		record("grpc_set_to_go_watcher", ls, map[string]any{"client": "varbridge.BridgedState watcher; writer: another BridgedState's Set", "server": "varbridge serve (in-memory store)", "time_from": "writer's Set start, CLOCK_MONOTONIC"})
		end = srv.phase("latency-raw")
		ls, err = grpcLatencyRaw(ctx, srv.addr, sessionName("lat-go"), n, c.rate)
		end()
		if err != nil {
			return fmt.Errorf("grpc go (raw) run %d: %w", r, err)
		}
		record("rawgrpc_set_to_go_watcher", ls, map[string]any{"client": "generated grpc-go WatchVariables stream; writer: generated SetVariable", "time_from": "writer's SetVariable start, CLOCK_MONOTONIC"})
		ls, err = grpcLatencyRaw(ctx, fsrv.addr, sessionName("lat-floor"), n, c.rate)
		if err != nil {
			return fmt.Errorf("grpc floor run %d: %w", r, err)
		}
		record("floor_grpc_set_to_go_watcher", ls, map[string]any{"client": "as rawgrpc_*", "server": floorServerDesc, "time_from": "writer's SetVariable start, CLOCK_MONOTONIC"})

		if nsrv != nil {
			for _, st := range []natsStorage{natsMem, natsFile} {
				ls, err = natsLatencyGo(ctx, nsrv.addr, fmt.Sprintf("latgo%s%d", st.name, r), st, n, c.rate)
				if err != nil {
					return fmt.Errorf("nats go (%s) run %d: %w", st.name, r, err)
				}
				natsRecord("go", st, ls, map[string]any{"client": "nats.go jetstream KV Watch", "time_from": "writer's kv.Put start, CLOCK_MONOTONIC"})
			}
		}

		sess := sessionName("lat-py")
		scc, sc, err := dial(srv.addr)
		if err != nil {
			return err
		}
		err = newSession(ctx, sc, sess, "x")
		scc.Close()
		if err != nil {
			return err
		}
		end = srv.phase("latency-py")
		ls, err = pyBridgedLatency(ctx, c, srv.addr, sess, n, fmt.Sprintf("lat_py_%d", r))
		end()
		if err != nil {
			return fmt.Errorf("grpc py run %d: %w", r, err)
		}
		record("grpc_set_to_py_watcher", ls, map[string]any{"client": "varbridge (python) watch_variables; writer: a Go BridgedState's Set", "server": "varbridge serve (in-memory store)", "time_from": "Go writer's Set start, CLOCK_MONOTONIC"})

		end = srv.phase("latency-py-raw")
		ls, err = pyGRPCLatency(ctx, c, srv.addr, sess, n, fmt.Sprintf("lat_py_raw_%d", r), "--raw")
		end()
		if err != nil {
			return fmt.Errorf("grpc py raw run %d: %w", r, err)
		}
		record("rawgrpc_set_to_py_watcher", ls, map[string]any{"client": "grpc.aio generated stub, WatchVariables, no varbridge.Watch", "time_from": "Go writer's SetVariable start, CLOCK_MONOTONIC"})

		ls, err = pyGRPCLatency(ctx, c, fsrv.addr, sess, n, fmt.Sprintf("lat_py_floor_%d", r), "--raw")
		if err != nil {
			return fmt.Errorf("grpc py floor run %d: %w", r, err)
		}
		record("floor_grpc_set_to_py_watcher", ls, map[string]any{"client": "as rawgrpc_*_py", "server": floorServerDesc, "time_from": "Go writer's SetVariable start, CLOCK_MONOTONIC"})

		if nsrv != nil {
			for _, st := range []natsStorage{natsMem, natsFile} {
				bucket := fmt.Sprintf("latpy%s%d", st.name, r)
				nc, kv, err := natsKV(ctx, nsrv.addr, bucket, "x", st)
				if err != nil {
					return err
				}
				ls, err = pyLatency(ctx, c.python, []string{pyScript(c, "nats_watch.py"), "--url", nsrv.addr, "--bucket", bucket}, n, c.rate, natsWriter(ctx, kv, "x"))
				nc.Close()
				if err != nil {
					return fmt.Errorf("nats py (%s) run %d: %w", st.name, r, err)
				}
				natsRecord("py", st, ls, map[string]any{"client": "nats-py KV watch", "time_from": "Go writer's kv.Put start, CLOCK_MONOTONIC"})
			}
		}
	}
	if !c.natsOn {
		for _, n := range []string{"nats_set_to_go_watcher_p50_us", "nats_set_to_py_watcher_p50_us", "nats_mem_set_to_go_watcher_from_send_p50_us", "nats_mem_set_to_py_watcher_from_send_p50_us"} {
			col.skipped(n, "us", "-nats=false")
		}
		return nil
	}
	// Ratios to NATS, from the medians over runs.
	for _, cl := range []string{"go", "py"} {
		grpc := "grpc_set_to_" + cl + "_watcher"
		for _, p := range []string{"p50", "p99"} {
			col.ratio("grpc_vs_nats_"+cl+"_watcher_"+p+"_ratio", grpc+"_"+p+"_us", "nats_set_to_"+cl+"_watcher_"+p+"_us",
				map[string]any{"time_from": "the server's commit (issue 5's figures)", "nats": natsFile.desc})
		}
		for _, st := range []natsStorage{natsMem, natsFile} {
			for _, p := range []string{"p50", "p99"} {
				col.ratio("grpc_vs_nats_"+st.name+"_"+cl+"_watcher_from_send_"+p+"_ratio", grpc+"_from_send_"+p+"_us", "nats_"+st.name+"_set_to_"+cl+"_watcher_from_send_"+p+"_us",
					map[string]any{"time_from": "the writer's call start (the headline)", "nats": st.desc})
			}
		}
	}
	return nil
}

// withMissed returns the samples after the warm-up (the first warm
// received), padded to n with latTimeout for each value the watcher never
// saw, so a skipped value counts as the run's timeout.
func withMissed(samples []int64, warm, n int) []int64 {
	s := slices.Clone(samples[min(warm, len(samples)):])
	for len(s) < n {
		s = append(s, latTimeout.Nanoseconds())
	}
	return s
}

// pyBridgedLatency runs bench/py/vb_watch.py lat against the server at
// addr while a Go BridgedState (the client's normal Set path, on its write
// stream) sets x in sess: what a user of both clients feels.
func pyBridgedLatency(ctx context.Context, c *config, addr, sess string, n int, profile string) (latSamples, error) {
	b, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID(sess), varbridge.WithLogger(quietLog))
	if err != nil {
		return latSamples{}, err
	}
	defer b.Close()
	args := append([]string{pyScript(c, "vb_watch.py"), "lat", "--addr", addr, "--session", sess}, pyProfileArgs(c, profile)...)
	return pyLatency(ctx, c.python, args, n, c.rate, func(v int64) error {
		_, err := b.Set(ctx, "x", v)
		return err
	})
}

// pyGRPCLatency runs bench/py/vb_watch.py lat (with extra flags, such as
// --raw) against the gRPC server at addr, while a Go writer on its own
// connection sets x in sess.
func pyGRPCLatency(ctx context.Context, c *config, addr, sess string, n int, profile string, extra ...string) (latSamples, error) {
	wcc, wc, err := dial(addr)
	if err != nil {
		return latSamples{}, err
	}
	defer wcc.Close()
	args := append(append([]string{pyScript(c, "vb_watch.py"), "lat"}, extra...), "--addr", addr, "--session", sess)
	return pyLatency(ctx, c.python, append(args, pyProfileArgs(c, profile)...), n, c.rate, func(v int64) error {
		_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: "x", Value: intValue(v)})
		return err
	})
}
