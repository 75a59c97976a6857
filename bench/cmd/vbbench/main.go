// Command vbbench is varbridge's benchmark harness (issue 5): it starts the
// real `varbridge serve` binary on a free loopback port, drives it with Go
// and Python clients, runs the same latency workload on NATS JetStream KV,
// prints a table and writes results.json (medians over several runs).
//
// Run it through bench/run.sh (make bench, make bench-smoke).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
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
	fanProcConns           int // issue 15's layout: the watchers process's connections
	fanWrites, fanBurst    int
	idleN, idleConns       int
	idleRuns               int

	// cluster group (issue 12): connections of its fan-out watchers, and
	// the sessions watched for the cost per watched session.
	clusterConns, clusterSessions int

	// durable group (issue 11): write throughput per run, and the data
	// dir restart_recovery_s recovers (sessions x variables, and writes
	// per session on top of the registrations).
	tputDur                         time.Duration
	recSessions, recVars, recWrites int
	recRuns                         int
	recoveryOn                      bool

	// memoryFlag: the server binary has --memory (every binary since the
	// durable engine), which the in-memory groups pass explicitly; an
	// older binary (the A/B base) keeps everything in memory anyway.
	memoryFlag bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "nats-serve" {
		fs := flag.NewFlagSet("nats-serve", flag.ExitOnError)
		dir := fs.String("dir", "", "JetStream store directory")
		syncAlways := fs.Bool("sync-always", false, "configure jetstream { sync_interval: always } (through a config file)")
		_ = fs.Parse(os.Args[2:])
		if err := natsServe(*dir, *syncAlways); err != nil {
			fmt.Fprintln(os.Stderr, "nats-serve:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "etcd-serve" {
		fs := flag.NewFlagSet("etcd-serve", flag.ExitOnError)
		dir := fs.String("dir", "", "etcd data directory")
		var m etcdMember
		fs.StringVar(&m.name, "name", "", "member name (default vbbench)")
		fs.StringVar(&m.client, "client-url", "", "client URL, http://127.0.0.1:PORT (default: a free port)")
		fs.StringVar(&m.peer, "peer-url", "", "peer URL (default: a free port)")
		fs.StringVar(&m.metrics, "metrics-url", "", "serve /metrics on this URL too (--listen-metrics-urls)")
		fs.StringVar(&m.cluster, "initial-cluster", "", "every member's name=peer-url, comma-separated (default: this member alone)")
		_ = fs.Parse(os.Args[2:])
		if err := etcdServe(*dir, m); err != nil {
			fmt.Fprintln(os.Stderr, "etcd-serve:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "watchers" {
		if err := watchersCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "watchers:", err)
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
	flag.StringVar(&only, "only", "", "regexp: run only the groups it matches (local, latency, durable, writes, http, stream, fanout, idle, cluster)")
	flag.BoolVar(&c.natsOn, "nats", true, "run the NATS comparison")
	flag.BoolVar(&c.recoveryOn, "recovery", true, "durable group: build the 1M-revision data dir and time restarts (restart_recovery_s)")
	flag.StringVar(&c.perfDir, "perf", "", "record each server group with `perf record -g` into this directory")
	flag.StringVar(&c.pyProf, "pyprofile", "", "cProfile the Python helpers into this directory")
	flag.StringVar(&cpuprofile, "cpuprofile", "", "write the harness's own (Go client side) CPU profile here")
	flag.IntVar(&c.latN, "lat-n", 5000, "latency samples per run (after warm-up)")
	flag.IntVar(&c.rate, "rate", 1000, "latency workload: writes per second")
	flag.IntVar(&c.goTputRevs, "tput-revs", 10000, "stream replay: revisions of SetVariables in history")
	flag.IntVar(&c.goTputVars, "tput-vars", 100, "stream replay: variables per SetVariables")
	flag.IntVar(&c.pyTputN, "py-tput-n", 100000, "Python stream replay: updates read per run")
	flag.IntVar(&c.localN, "local-n", 200000, "local.State saturated stream: updates per run")
	flag.IntVar(&c.fanN, "fanout", 10000, "fan-out: watches")
	flag.IntVar(&c.fanConns, "fanout-conns", 10, "fan-out: connections the watches are spread over, in the harness's process")
	flag.IntVar(&c.fanProcConns, "fanout-proc-conns", 100, "fan-out: connections the watches are spread over, in a process of their own (issue 15's layout)")
	flag.IntVar(&c.idleN, "idle", 100000, "idle: watches to open")
	flag.IntVar(&c.idleConns, "idle-conns", 50, "idle: connections the watches are spread over")
	flag.Parse()
	c.latWarm, c.fanWrites, c.fanBurst, c.liveDur, c.idleRuns = 500, 30, 50, 3*time.Second, min(c.runs, 3)
	c.tputDur, c.recSessions, c.recVars, c.recWrites, c.recRuns = 3*time.Second, 100, 1000, 10_000, 3
	c.clusterConns, c.clusterSessions = 100, 1000
	if c.smoke {
		c.tputDur, c.recSessions, c.recVars, c.recWrites, c.recRuns = 300*time.Millisecond, 4, 50, 200, 1
		c.runs, c.latN, c.latWarm = 1, 100, 20
		c.goTputRevs, c.goTputVars, c.pyTputN, c.liveDur, c.localN = 50, 100, 2000, 300*time.Millisecond, 2000
		c.fanN, c.fanConns, c.fanProcConns, c.fanWrites, c.fanBurst = 200, 4, 4, 5, 5
		c.idleN, c.idleConns, c.idleRuns = 500, 4, 1
		c.clusterConns, c.clusterSessions = 4, 20
	}
	c.only = regexp.MustCompile(only)
	c.memoryFlag = strings.Contains(cmdOut(c.server, "serve", "--help"), "--memory")
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
	stamp := newStamp(c, start)
	stamp.Load1m[0] = loadavg()
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
	group("durable", func() error { return benchDurable(ctx, c, col, self) })
	group("http", func() error { return benchHTTP(ctx, c, col) })
	group("writes", func() error { return benchWrites(ctx, c, col) })
	group("stream", func() error { return benchStream(ctx, c, col) })
	group("fanout", func() error { return benchFanout(ctx, c, col, self) })
	group("idle", func() error { return benchIdle(ctx, c, col) })
	group("cluster", func() error { return benchCluster(ctx, c, col, self) })

	col.add("loadavg_1m_at_end", "load", loadavg(), nil)
	rs := col.results()
	fmt.Printf("\nvarbridge benchmarks (%s; %d run(s) per figure, medians; %s total)\n\n",
		map[bool]string{true: "SMOKE sizes", false: "full sizes"}[c.smoke], c.runs, time.Since(start).Round(time.Second))
	printTable(os.Stdout, rs)
	stamp.Load1m[1] = loadavg()
	if c.out != "" {
		if err := writeJSON(c.out, File{Stamp: stamp, Results: rs}); err != nil {
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

// startServer starts varbridge serve in memory (--memory) with extra
// flags, and perf record on it when asked.
func startServer(c *config, group string, extra ...string) (*proc, func(), error) {
	if c.memoryFlag {
		extra = append([]string{"--memory"}, extra...)
	}
	return startServerArgs(c, group, extra...)
}

// startDurable starts varbridge serve keeping its data in dir (which the
// caller made and removes), with extra flags (--fsync).
func startDurable(c *config, group, dir string, extra ...string) (*proc, func(), error) {
	return startServerArgs(c, group, append([]string{"--data-dir", dir}, extra...)...)
}

func startServerArgs(c *config, group string, extra ...string) (*proc, func(), error) {
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
