// Command vbbench is varbridge's benchmark harness (issue 5): it starts the
// real `varbridge serve` binary on a free loopback port, drives it with Go
// and Python clients, runs the same latency workload on NATS JetStream KV,
// prints a table and writes results.json (medians over several runs).
//
// Run it through bench/run.sh (make bench, make bench-smoke).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

type config struct {
	smoke   bool
	runs    int
	out     string
	server  string
	python  string
	pydir   string
	only    *regexp.Regexp
	natsOn  bool
	perfDir string // perf record each server group into this directory
	pyProf  string // cProfile the Python helpers into this directory

	latN, latWarm, rate    int
	goTputVars, goTputRevs int
	liveDur                time.Duration
	pyTputN                int
	localN                 int
	fanN, fanConns         int
	fanWrites, fanBurst    int
	idleN, idleConns       int
	idleRuns               int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "nats-serve" {
		fs := flag.NewFlagSet("nats-serve", flag.ExitOnError)
		dir := fs.String("dir", "", "JetStream store directory")
		_ = fs.Parse(os.Args[2:])
		if err := natsServe(*dir); err != nil {
			fmt.Fprintln(os.Stderr, "nats-serve:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "floor-serve" {
		if err := floorServe(); err != nil {
			fmt.Fprintln(os.Stderr, "floor-serve:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	var only, cpuprofile string
	flag.BoolVar(&c.smoke, "smoke", false, "tiny sizes, one run: checks the harness works (seconds)")
	flag.IntVar(&c.runs, "runs", 5, "runs per figure; the median is reported")
	flag.StringVar(&c.out, "out", "", "write results JSON here")
	flag.StringVar(&c.server, "server", ".bin/varbridge", "varbridge binary")
	flag.StringVar(&c.python, "python", ".venv/bin/python", "python with varbridge and nats-py installed")
	flag.StringVar(&c.pydir, "pydir", "bench/py", "directory of the Python helper scripts")
	flag.StringVar(&only, "only", "", "regexp: run only the groups it matches (latency, stream, fanout, idle)")
	flag.BoolVar(&c.natsOn, "nats", true, "run the NATS comparison")
	flag.StringVar(&c.perfDir, "perf", "", "record each server group with `perf record -g` into this directory")
	flag.StringVar(&c.pyProf, "pyprofile", "", "cProfile the Python helpers into this directory")
	flag.StringVar(&cpuprofile, "cpuprofile", "", "write the harness's own (Go client side) CPU profile here")
	flag.IntVar(&c.latN, "lat-n", 5000, "latency samples per run (after warm-up)")
	flag.IntVar(&c.rate, "rate", 1000, "latency workload: writes per second")
	flag.IntVar(&c.goTputRevs, "tput-revs", 10000, "stream replay: revisions of SetVariables in history")
	flag.IntVar(&c.goTputVars, "tput-vars", 100, "stream replay: variables per SetVariables")
	flag.IntVar(&c.pyTputN, "py-tput-n", 100000, "Python stream replay: updates read per run")
	flag.IntVar(&c.localN, "local-n", 200000, "LocalState saturated stream: updates per run")
	flag.IntVar(&c.fanN, "fanout", 10000, "fan-out: watches")
	flag.IntVar(&c.fanConns, "fanout-conns", 10, "fan-out: connections the watches are spread over")
	flag.IntVar(&c.idleN, "idle", 100000, "idle: watches to open")
	flag.IntVar(&c.idleConns, "idle-conns", 50, "idle: connections the watches are spread over")
	flag.Parse()
	c.latWarm, c.fanWrites, c.fanBurst, c.liveDur, c.idleRuns = 500, 30, 50, 3*time.Second, min(c.runs, 3)
	if c.smoke {
		c.runs, c.latN, c.latWarm = 1, 100, 20
		c.goTputRevs, c.goTputVars, c.pyTputN, c.liveDur, c.localN = 50, 100, 2000, 300*time.Millisecond, 2000
		c.fanN, c.fanConns, c.fanWrites, c.fanBurst = 200, 4, 5, 5
		c.idleN, c.idleConns, c.idleRuns = 500, 4, 1
	}
	c.only = regexp.MustCompile(only)
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			fatal(err)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(&c); err != nil {
		pprof.StopCPUProfile()
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "vbbench:", err)
	os.Exit(1)
}

func run(c *config) error {
	// A cancel-only context bounds the whole run: a deadline would travel to
	// the server as grpc-timeout on every watch stream (and cost it a timer
	// per stream).
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	defer time.AfterFunc(60*time.Minute, stop).Stop()
	col := newCollector()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now()
	col.add("loadavg_1m_at_start", "load", loadavg(), map[string]any{"how": "/proc/loadavg when the run began: 2 cores; other work on the machine inflates wall-clock figures, CPU-time figures much less"})
	var failed []string
	group := func(name string, f func() error) {
		if !c.only.MatchString(name) {
			return
		}
		fmt.Fprintf(os.Stderr, "== %s\n", name)
		t0 := time.Now()
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "   %s FAILED: %v\n", name, err)
			failed = append(failed, name)
			return
		}
		fmt.Fprintf(os.Stderr, "   %s done in %s\n", name, time.Since(t0).Round(time.Millisecond))
	}
	group("local", func() error { return benchLocal(ctx, c, col) })
	group("latency", func() error { return benchLatency(ctx, c, col, self) })
	group("stream", func() error { return benchStream(ctx, c, col) })
	group("fanout", func() error { return benchFanout(ctx, c, col) })
	group("idle", func() error { return benchIdle(ctx, c, col) })

	col.add("loadavg_1m_at_end", "load", loadavg(), nil)
	rs := col.results()
	fmt.Printf("\nvarbridge benchmarks (%s; %d run(s) per figure, medians; %s total)\n\n",
		map[bool]string{true: "SMOKE sizes", false: "full sizes"}[c.smoke], c.runs, time.Since(start).Round(time.Second))
	printTable(os.Stdout, rs)
	if c.out != "" {
		if err := writeJSON(c.out, rs); err != nil {
			return err
		}
		fmt.Printf("\nwrote %s\n", c.out)
	}
	if len(failed) > 0 {
		return fmt.Errorf("groups failed: %v", failed)
	}
	if c.smoke {
		return checkSmoke(c, rs)
	}
	return nil
}

// checkSmoke fails when a figure the issue asks for has no value (except
// those skipped with a stated reason).
func checkSmoke(c *config, rs []Result) error {
	var missing []string
	for _, r := range rs {
		if r.Value == nil && r.Params["skipped"] == "not measured (failed or not selected)" {
			missing = append(missing, r.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("smoke: no value for %v", missing)
	}
	return nil
}

// startServer starts varbridge serve with extra flags, and perf record on
// it when asked.
func startServer(c *config, group string, extra ...string) (*proc, func(), error) {
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	p, err := startListener("varbridge", c.server, args...)
	if err != nil {
		return nil, nil, err
	}
	var perf *exec.Cmd
	if c.perfDir != "" {
		_ = os.MkdirAll(c.perfDir, 0o755)
		perf = exec.Command("perf", "record", "-F", "1999", "-g", "-p", fmt.Sprint(p.pid()),
			"-o", filepath.Join(c.perfDir, group+".perf.data"))
		perf.Stdout, perf.Stderr = os.Stderr, os.Stderr
		if err := perf.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "perf:", err)
			perf = nil
		}
	}
	return p, func() {
		if perf != nil {
			_ = perf.Process.Signal(syscall.SIGINT)
			_ = perf.Wait()
		}
		p.stop()
	}, nil
}

func pyScript(c *config, name string) string { return filepath.Join(c.pydir, name) }

func pyProfileArgs(c *config, name string) []string {
	if c.pyProf == "" {
		return nil
	}
	_ = os.MkdirAll(c.pyProf, 0o755)
	return []string{"--cprofile", filepath.Join(c.pyProf, name+".pstats")}
}

// benchLocal measures LocalState (in process, no network): set -> watcher
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
		pr := map[string]any{"rate_per_s": c.rate, "samples_per_run": c.latN, "client": "varbridge.LocalState Set -> Watcher callback"}
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
		rate, err := localThroughput(ctx, c.localN)
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   local stream       %10.0f updates/s\n", rate)
		col.add("local_stream_updates_per_s", "updates/s", rate, map[string]any{"how": "one goroutine Sets as fast as it can; one watch; timed until the last callback", "updates": c.localN})
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
	params := map[string]any{"rate_per_s": c.rate, "samples_per_run": c.latN, "warmup": c.latWarm}
	// The headline figures run from the server's commit, as the issue
	// defines them ("a write committed at the server -> a watcher"); the
	// _from_send_ figures add the writer's own call up to the commit.
	record := func(prefix string, ls latSamples, extra map[string]any) (p50, p99 float64) {
		warm := min(c.latWarm, len(ls.send))
		pr := map[string]any{}
		for k, v := range params {
			pr[k] = v
		}
		for k, v := range extra {
			pr[k] = v
		}
		sp50, sp99, spmax := latencyStats(ls.send[warm:])
		col.add(prefix+"_from_send_p50_us", "us", sp50, pr)
		col.add(prefix+"_from_send_p99_us", "us", sp99, pr)
		col.add(prefix+"_from_send_max_us", "us", spmax, pr)
		p50, p99, pmax := latencyStats(ls.commit[min(warm, len(ls.commit)):])
		cpr := maps.Clone(pr)
		cpr["time_from"] = "the server's commit timestamp (wall clock, same host)"
		col.add(prefix+"_p50_us", "us", p50, cpr)
		col.add(prefix+"_p99_us", "us", p99, cpr)
		col.add(prefix+"_max_us", "us", pmax, cpr)
		col.add(prefix+"_missed", "updates", float64(ls.missed), pr)
		fmt.Fprintf(os.Stderr, "   %-28s from commit p50 %7.1f us  p99 %7.1f us  max %8.1f us | from send p50 %7.1f us  p99 %7.1f us | missed %d\n",
			prefix, p50, p99, pmax, sp50, sp99, ls.missed)
		return p50, p99
	}
	for r := range c.runs {
		// Interleaved, so drift in machine load hits all four alike.
		end := srv.phase("latency-bridged")
		ls, err := bridgedLatency(ctx, srv.addr, sessionName("lat-bridged"), n, c.rate)
		end()
		if err != nil {
			return fmt.Errorf("grpc go (BridgedState) run %d: %w", r, err)
		}
		gp50, gp99 := record("grpc_set_to_go_watcher", ls, map[string]any{"client": "varbridge.BridgedState watcher; writer: another BridgedState's Set", "time_from": "writer's Set start, CLOCK_MONOTONIC"})
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
		record("floor_grpc_set_to_go_watcher", ls, map[string]any{"client": "as rawgrpc_*", "server": "bench's floor server: SetVariable hands the value over a channel to each WatchVariables handler, which sends it; no store", "time_from": "writer's SetVariable start, CLOCK_MONOTONIC"})

		var np50, np99 float64
		if nsrv != nil {
			ls, err = natsLatencyGo(ctx, nsrv.addr, fmt.Sprintf("latgo%d", r), n, c.rate)
			if err != nil {
				return fmt.Errorf("nats go run %d: %w", r, err)
			}
			np50, np99 = record("nats_set_to_go_watcher", ls, map[string]any{"client": "nats.go jetstream KV Watch", "kv": "history 1, file storage", "time_from": "writer's kv.Put start"})
			col.add("grpc_vs_nats_go_watcher_p50_ratio", "ratio", gp50/np50, map[string]any{"how": "per-run ratio of p50s, runs interleaved"})
			col.add("grpc_vs_nats_go_watcher_p99_ratio", "ratio", gp99/np99, map[string]any{"how": "per-run ratio of p99s, runs interleaved"})
		}

		sess := sessionName("lat-py")
		wcc, wc, err := dial(srv.addr)
		if err != nil {
			return err
		}
		if err := newSession(ctx, wc, sess, "x"); err != nil {
			wcc.Close()
			return err
		}
		args := append([]string{pyScript(c, "vb_watch.py"), "lat", "--addr", srv.addr, "--session", sess}, pyProfileArgs(c, fmt.Sprintf("lat_py_%d", r))...)
		end = srv.phase("latency-py")
		ls, err = pyLatency(ctx, c.python, args, n, c.rate, func(v int64) error {
			_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: "x", Value: intValue(v)})
			return err
		})
		end()
		wcc.Close()
		if err != nil {
			return fmt.Errorf("grpc py run %d: %w", r, err)
		}
		pp50, pp99 := record("grpc_set_to_py_watcher", ls, map[string]any{"client": "varbridge (python) watch_variables", "time_from": "Go writer's SetVariable start, CLOCK_MONOTONIC"})

		args = append([]string{pyScript(c, "vb_watch.py"), "lat", "--raw", "--addr", srv.addr, "--session", sess}, pyProfileArgs(c, fmt.Sprintf("lat_py_raw_%d", r))...)
		wcc, wc, err = dial(srv.addr)
		if err != nil {
			return err
		}
		end = srv.phase("latency-py-raw")
		ls, err = pyLatency(ctx, c.python, args, n, c.rate, func(v int64) error {
			_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: "x", Value: intValue(v)})
			return err
		})
		end()
		wcc.Close()
		if err != nil {
			return fmt.Errorf("grpc py raw run %d: %w", r, err)
		}
		record("rawgrpc_set_to_py_watcher", ls, map[string]any{"client": "grpc.aio generated stub, WatchVariables, no varbridge.Watch", "time_from": "Go writer's SetVariable start, CLOCK_MONOTONIC"})

		fcc, fc, err := dial(fsrv.addr)
		if err != nil {
			return err
		}
		args = append([]string{pyScript(c, "vb_watch.py"), "lat", "--raw", "--addr", fsrv.addr, "--session", sess}, pyProfileArgs(c, fmt.Sprintf("lat_py_floor_%d", r))...)
		ls, err = pyLatency(ctx, c.python, args, n, c.rate, func(v int64) error {
			_, err := fc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: "x", Value: intValue(v)})
			return err
		})
		fcc.Close()
		if err != nil {
			return fmt.Errorf("grpc py floor run %d: %w", r, err)
		}
		record("floor_grpc_set_to_py_watcher", ls, map[string]any{"client": "as rawgrpc_*_py", "server": "bench's floor server (no store)", "time_from": "Go writer's SetVariable start, CLOCK_MONOTONIC"})

		if nsrv != nil {
			bucket := fmt.Sprintf("latpy%d", r)
			nc, kv, err := natsKV(ctx, nsrv.addr, bucket, "x")
			if err != nil {
				return err
			}
			ls, err = pyLatency(ctx, c.python, []string{pyScript(c, "nats_watch.py"), "--url", nsrv.addr, "--bucket", bucket}, n, c.rate, natsWriter(ctx, kv, "x"))
			nc.Close()
			if err != nil {
				return fmt.Errorf("nats py run %d: %w", r, err)
			}
			np50, np99 = record("nats_set_to_py_watcher", ls, map[string]any{"client": "nats-py KV watch", "kv": "history 1, file storage", "time_from": "Go writer's kv.Put start"})
			col.add("grpc_vs_nats_py_watcher_p50_ratio", "ratio", pp50/np50, map[string]any{"how": "per-run ratio of p50s, runs interleaved"})
			col.add("grpc_vs_nats_py_watcher_p99_ratio", "ratio", pp99/np99, map[string]any{"how": "per-run ratio of p99s, runs interleaved"})
		}
	}
	if !c.natsOn {
		for _, n := range []string{"nats_set_to_go_watcher_p50_us", "nats_set_to_py_watcher_p50_us"} {
			col.skipped(n, "us", "-nats=false")
		}
	}
	return nil
}

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
		col.add("go_stream_updates_per_s", "updates/s", rate, withKV(base, "client", "varbridge.BridgedState WithBatchedStream(true) (WatchVariableBatches), Watcher callback"))
		end = srv.phase("stream-bridged")
		cm = startCPU(srv)
		rate, err = bridgedReplay(ctx, srv.addr, sess, first, total, false)
		end()
		if err != nil {
			return fmt.Errorf("BridgedState replay run %d: %w", r, err)
		}
		cpuFigures(col, "go_stream_bridged_unbatched", cm, total, "BridgedState, one message per update")
		fmt.Fprintf(os.Stderr, "   %-34s %10.0f updates/s\n", "go_stream (BridgedState, per-update)", rate)
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

func benchFanout(ctx context.Context, c *config, col *collector) error {
	srv, stopSrv, err := startServer(c, "fanout")
	if err != nil {
		return err
	}
	defer stopSrv()
	for r := range c.runs {
		f, err := openFanout(ctx, srv.addr, sessionName("fan"), c.fanN, c.fanConns, c.fanWrites+c.fanBurst)
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
			srvNs, cliNs := cm.per(c.fanBurst * c.fanN)
			col.add("fanout_server_cpu_ns_per_delivery", "ns", srvNs, map[string]any{"how": "server CPU time (/proc) during the burst / deliveries"})
			col.add("fanout_client_cpu_ns_per_delivery", "ns", cliNs, map[string]any{"how": "harness CPU time (10k Go receivers) during the burst / deliveries"})
			dps := float64(c.fanBurst*c.fanN) / el.Seconds()
			pr := map[string]any{"watches": c.fanN, "connections": c.fanConns, "client": "generated grpc-go streams with the Go client's codec and compact updates, one process"}
			fmt.Fprintf(os.Stderr, "   run %d: opened %d watches in %s; write->all p50 %.2f ms p99 %.2f ms max %.2f ms; burst %0.f deliveries/s\n",
				r, c.fanN, f.opened.Round(time.Millisecond), p50/1e3, p99/1e3, pmax/1e3, dps)
			col.add("fanout_10k_watchers_p99_ms", "ms", p99/1e3, withKV(pr, "how", fmt.Sprintf("%d spaced writes (2 warm-up dropped), p99 over every delivery, send start -> receipt", c.fanWrites)))
			col.add("fanout_10k_watchers_p50_ms", "ms", p50/1e3, pr)
			col.add("fanout_10k_watchers_max_ms", "ms", pmax/1e3, pr)
			col.add("fanout_deliveries_per_s", "deliveries/s", dps, withKV(pr, "how", fmt.Sprintf("%d back-to-back writes, until every watch has all", c.fanBurst)))
			if e := f.errs.Load(); e > 0 {
				return fmt.Errorf("%d watch streams failed", e)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
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

func loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	_, _ = fmt.Sscan(string(b), &v)
	return v
}

func withKV(m map[string]any, k string, v any) map[string]any {
	o := map[string]any{k: v}
	for kk, vv := range m {
		o[kk] = vv
	}
	return o
}

func benchIdle(ctx context.Context, c *config, col *collector) error {
	for r := range c.idleRuns {
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
			opened, el, release, err := idleWatches(ctx, srv.addr, sessionName("idle"), c.idleN, c.idleConns, 128)
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
				col.add("idle_watch_server_heap_bytes", "bytes", (g1["go_memstats_heap_inuse_bytes"]-g0["go_memstats_heap_inuse_bytes"])/float64(opened), pr)
				col.add("idle_watch_server_stack_bytes", "bytes", (g1["go_memstats_stack_inuse_bytes"]-g0["go_memstats_stack_inuse_bytes"])/float64(opened), pr)
				col.add("idle_watch_server_goroutines", "goroutines", (g1["go_goroutines"]-g0["go_goroutines"])/float64(opened), pr)
			}
			rate := float64(opened) / el.Seconds()
			fmt.Fprintf(os.Stderr, "   run %d: %d watches open in %s (%.0f/s); server RSS %d -> %d MiB: %.0f bytes/watch\n",
				r, opened, el.Round(time.Millisecond), rate, rss0>>20, rss1>>20, per)
			pr := map[string]any{"watches": opened, "connections": c.idleConns, "parallel_openers": 128, "heartbeat": "server default"}
			col.add("idle_watch_server_bytes", "bytes", per, withKV(pr, "how", "server VmRSS delta / watches, 2 s after the last opened"))
			col.add("watches_opened_per_s", "watches/s", rate, withKV(pr, "how", "each open waits for the response header the server sends once the watch is registered"))
			col.add("idle_server_rss_bytes", "bytes", float64(rss1), pr)
			return nil
		}()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return fmt.Errorf("run %d: %w", r, err)
		}
	}
	return nil
}
