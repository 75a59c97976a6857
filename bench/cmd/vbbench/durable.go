package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varbridge/varbridge"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// durableServerDesc says how the durable figures' server runs.
const durableServerDesc = "varbridge serve --fsync always --data-dir (a fresh temp dir on this machine's disk)"

const etcdDesc = "etcd v3.7 embedded (go.etcd.io/etcd/server/v3), its own process, single member, data in a temp dir, default fsync (WAL fsynced before the ack), loopback"

// benchDurable is issue 11's figures: varbridge with every write fsynced
// before its ack, beside etcd and NATS KV with sync_interval: always, in
// the same run on the same machine; write throughput against etcd; and the
// time a restart takes to recover 1M revisions and 100k variables.
func benchDurable(ctx context.Context, c *config, col *collector, self string) error {
	vdir, err := os.MkdirTemp("", "vbbench-durable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(vdir)
	srv, stopSrv, err := startDurable(c, "durable", vdir, "--fsync", "always")
	if err != nil {
		return err
	}
	defer stopSrv()
	// The same server in memory, for the write throughput: what the disk
	// costs a write, beside what etcd's costs.
	msrv, stopMem, err := startServer(c, "durable-memory")
	if err != nil {
		return err
	}
	defer stopMem()
	esrv, stopEtcd, err := startEtcdTemp(self)
	if err != nil {
		return err
	}
	defer stopEtcd()
	var nsrv *proc
	if c.natsOn {
		ndir, err := os.MkdirTemp("", "vbbench-nats-sync-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(ndir)
		if nsrv, err = startNATSSyncAlways(self, ndir); err != nil {
			return err
		}
		defer nsrv.stop()
	}
	n := c.latN + c.latWarm
	params := map[string]any{
		"rate_per_s": c.rate, "samples_per_run": c.latN, "warmup": c.latWarm,
		"time_from":          "the writer's call start, CLOCK_MONOTONIC (the disk is part of the write)",
		"missed_count_as_us": float64(latTimeout.Microseconds()),
	}
	record := func(prefix string, ls latSamples, extra map[string]any) {
		pr := maps.Clone(params)
		maps.Copy(pr, extra)
		p50, p99, pmax := latencyStats(withMissed(ls.send, c.latWarm, c.latN))
		col.add(prefix+"_p50_us", "us", p50, pr)
		col.add(prefix+"_p99_us", "us", p99, pr)
		col.add(prefix+"_max_us", "us", pmax, pr)
		col.add(prefix+"_missed", "updates", float64(ls.missed), pr)
		fmt.Fprintf(os.Stderr, "   %-38s from send p50 %7.1f us  p99 %7.1f us  max %8.1f us | missed %d\n", prefix, p50, p99, pmax, ls.missed)
	}
	tput := func(name string, writers int, rate, cpuUs float64, extra map[string]any) {
		pr := map[string]any{
			"writers": writers, "seconds_per_run": c.tputDur.Seconds(),
			"how": "each writer loops: write its own key, wait for the ack; acknowledged writes per second over the run (after a warm-up of a fifth of it)",
		}
		maps.Copy(pr, extra)
		col.add(name, "writes/s", rate, pr)
		cpuName := strings.Replace(name, "_writes_per_s_", "_server_cpu_us_per_write_", 1)
		col.add(cpuName, "us", cpuUs, map[string]any{"how": "the server process's CPU time (/proc) over the measured window / acknowledged writes: what the machine's load hardly moves", "writers": writers})
		fmt.Fprintf(os.Stderr, "   %-38s %10.0f writes/s  server CPU %6.1f us/write\n", name, rate, cpuUs)
	}
	for r := range c.runs {
		// Interleaved run by run, so drift in machine load hits each alike.
		ls, err := bridgedLatency(ctx, srv.addr, srv.addr, sessionName("dur-lat"), n, c.rate)
		if err != nil {
			return fmt.Errorf("durable latency run %d: %w", r, err)
		}
		record("durable_set_to_go_watcher", ls, map[string]any{"client": "varbridge.BridgedState watcher; writer: another BridgedState's Set", "server": durableServerDesc})
		ls, err = etcdLatencyGo(ctx, esrv.addr, esrv.addr, fmt.Sprintf("lat-%d", r), n, c.rate)
		if err != nil {
			return fmt.Errorf("etcd latency run %d: %w", r, err)
		}
		record("etcd_set_to_go_watcher", ls, map[string]any{"client": "clientv3 Watch; writer: clientv3 Put on another client", "server": etcdDesc})
		if nsrv != nil {
			ls, err = natsLatencyGo(ctx, nsrv.addr, fmt.Sprintf("latsync%d", r), natsFileSync, n, c.rate)
			if err != nil {
				return fmt.Errorf("nats (sync always) run %d: %w", r, err)
			}
			record("nats_file_sync_set_to_go_watcher", ls, map[string]any{"client": "nats.go jetstream KV Watch; writer: kv.Put on another connection", "kv": natsFileSync.desc})
		}
		for _, w := range []int{1, 64} {
			rate, cpu, err := varbridgeWriteRate(ctx, srv, sessionName("dur-tput"), w, c.tputDur)
			if err != nil {
				return fmt.Errorf("durable writes (%d writers) run %d: %w", w, r, err)
			}
			tput(fmt.Sprintf("durable_writes_per_s_%d", w), w, rate, cpu, map[string]any{
				"client": "one varbridge.BridgedState (one session, one connection); each writer Sets its own variable", "server": durableServerDesc,
			})
			rate, cpu, err = varbridgeWriteRate(ctx, msrv, sessionName("mem-tput"), w, c.tputDur)
			if err != nil {
				return fmt.Errorf("memory writes (%d writers) run %d: %w", w, r, err)
			}
			tput(fmt.Sprintf("memory_writes_per_s_%d", w), w, rate, cpu, map[string]any{
				"client": "as durable_writes_per_s_*", "server": "varbridge serve --memory (beside the durable figures: what the disk costs)",
			})
			rate, cpu, err = etcdWriteRate(ctx, esrv, fmt.Sprintf("tput-%d-%d", r, w), w, c.tputDur)
			if err != nil {
				return fmt.Errorf("etcd writes (%d writers) run %d: %w", w, r, err)
			}
			tput(fmt.Sprintf("etcd_writes_per_s_%d", w), w, rate, cpu, map[string]any{
				"client": "one clientv3 client (one connection); each writer Puts its own key", "server": etcdDesc,
			})
		}
	}
	for _, p := range []string{"p50", "p99"} {
		col.ratio("durable_vs_etcd_set_to_go_watcher_"+p+"_ratio", "durable_set_to_go_watcher_"+p+"_us", "etcd_set_to_go_watcher_"+p+"_us",
			map[string]any{"time_from": "the writer's call start"})
		if nsrv != nil {
			col.ratio("durable_vs_nats_file_sync_set_to_go_watcher_"+p+"_ratio", "durable_set_to_go_watcher_"+p+"_us", "nats_file_sync_set_to_go_watcher_"+p+"_us",
				map[string]any{"time_from": "the writer's call start"})
		}
	}
	for _, w := range []int{1, 64} {
		col.ratio(fmt.Sprintf("durable_vs_etcd_writes_per_s_%d_ratio", w), fmt.Sprintf("durable_writes_per_s_%d", w), fmt.Sprintf("etcd_writes_per_s_%d", w), nil)
		col.ratio(fmt.Sprintf("durable_vs_etcd_server_cpu_us_per_write_%d_ratio", w), fmt.Sprintf("durable_server_cpu_us_per_write_%d", w), fmt.Sprintf("etcd_server_cpu_us_per_write_%d", w), nil)
	}
	if !c.natsOn {
		col.skipped("nats_file_sync_set_to_go_watcher_p50_us", "us", "-nats=false")
		col.skipped("nats_file_sync_set_to_go_watcher_p99_us", "us", "-nats=false")
	}
	stopSrv()
	stopMem()
	esrv.stop()
	if !c.recoveryOn {
		col.skipped("restart_recovery_s", "s", "-recovery=false")
		return nil
	}
	return benchRecovery(ctx, c, col)
}

// writeRate runs writers goroutines, each calling write(i) in a loop, for
// dur after a warm-up of dur/5, and returns the acknowledged writes per
// second during dur and the server's (srv's) CPU time per write then.
func writeRate(ctx context.Context, srv *proc, writers int, dur time.Duration, write func(ctx context.Context, w int, v int64) error) (float64, float64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := int64(1); wctx.Err() == nil; v++ {
				if err := write(wctx, w, v); err != nil {
					if wctx.Err() == nil {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				done.Add(1)
			}
		}()
	}
	time.Sleep(dur / 5)
	d0, t0, c0 := done.Load(), time.Now(), cpuSeconds(srv.pid())
	time.Sleep(dur)
	d1, el, c1 := done.Load(), time.Since(t0), cpuSeconds(srv.pid())
	cancel()
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, *e
	}
	if d1 == d0 {
		return 0, 0, errors.New("no write acknowledged in the measured window")
	}
	return float64(d1-d0) / el.Seconds(), (c1 - c0) * 1e6 / float64(d1-d0), nil
}

// varbridgeWriteRate: writers goroutines share one BridgedState (one
// session, one connection), each Setting its own integer variable.
func varbridgeWriteRate(ctx context.Context, srv *proc, session string, writers int, dur time.Duration) (float64, float64, error) {
	b, err := varbridge.NewBridgedState(ctx, srv.addr, varbridge.WithSessionID(session), varbridge.WithLogger(quietLog))
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	names := make([]string, writers)
	for i := range names {
		names[i] = fmt.Sprintf("w%02d", i)
		if _, err := b.Register(ctx, names[i], varbridge.TypeInteger, int64(0)); err != nil {
			return 0, 0, err
		}
	}
	rate, cpu, err := writeRate(ctx, srv, writers, dur, func(ctx context.Context, w int, v int64) error {
		_, err := b.Set(ctx, names[w], v)
		return err
	})
	_ = b.CleanupSession(context.WithoutCancel(ctx))
	return rate, cpu, err
}

// etcdWriteRate: writers goroutines share one clientv3 client, each
// Putting its own key.
func etcdWriteRate(ctx context.Context, srv *proc, prefix string, writers int, dur time.Duration) (float64, float64, error) {
	cli, err := etcdClient(srv.addr)
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	return writeRate(ctx, srv, writers, dur, func(ctx context.Context, w int, v int64) error {
		_, err := cli.Put(ctx, prefix+"/"+strconv.Itoa(w), strconv.FormatInt(v, 10))
		return err
	})
}

// recoveredLine matches serve's "data recovered" log line (text handler).
var recoveredLine = regexp.MustCompile(`msg="data recovered".*`)

// benchRecovery fills a data dir through the real server (--fsync never,
// many concurrent writers: building it is not what is measured) with
// recSessions sessions of recVars variables each and recWrites writes per
// session on top of the registrations, with a history window of recWrites
// per session (so the dir holds recSessions*recWrites history records:
// 1M at full size), stops the server, then times `varbridge serve` on that
// dir from exec to its "listening on" line, recRuns times.
func benchRecovery(ctx context.Context, c *config, col *collector) error {
	dir, err := os.MkdirTemp("", "vbbench-recovery-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hist := []string{"--history-limit", fmt.Sprint(c.recWrites), "--history-age", "24h", "--history-bytes", fmt.Sprint(int64(1) << 30)}
	srv, stopSrv, err := startDurable(c, "recovery-fill", dir, append([]string{"--fsync", "never"}, hist...)...)
	if err != nil {
		return err
	}
	t0 := time.Now()
	err = fillRecoveryDir(ctx, srv.addr, c.recSessions, c.recVars, c.recWrites)
	stopSrv()
	if err != nil {
		return fmt.Errorf("filling the data dir: %w", err)
	}
	du := dirBytes(dir)
	fmt.Fprintf(os.Stderr, "   filled %d sessions x %d variables, %d writes each, in %s (%d MiB on disk)\n",
		c.recSessions, c.recVars, c.recVars+c.recWrites, time.Since(t0).Round(time.Millisecond), du>>20)
	for r := range c.recRuns {
		t := time.Now()
		p, err := startListener("varbridge", c.server, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-level", "info", "--data-dir", dir, "--fsync", "always"}, hist...)...)
		if err != nil {
			return fmt.Errorf("restart %d: %w", r, err)
		}
		el := time.Since(t)
		cpu := cpuSeconds(p.pid())
		p.stop()
		logged := recoveredLine.FindString(p.stderr.String())
		fmt.Fprintf(os.Stderr, "   restart %d: listening after %.3f s, %.2f s of CPU (%s)\n", r, el.Seconds(), cpu, logged)
		col.add("restart_recovery_cpu_s", "s", cpu, map[string]any{"how": "the restarted server's user+system CPU time (/proc) when it printed its \"listening on\" line: what a shared machine's load does not inflate"})
		col.add("restart_recovery_s", "s", el.Seconds(), map[string]any{
			"how":                 "varbridge serve --data-dir DIR: from exec to its \"listening on\" line (process start, Pebble open and WAL replay, loading every session into memory); the server before it was stopped with SIGTERM",
			"sessions":            c.recSessions,
			"variables":           c.recSessions * c.recVars,
			"history_records":     c.recSessions * c.recWrites,
			"revisions_written":   c.recSessions * (c.recVars + c.recWrites),
			"built_with":          "the real server with --fsync never, 64 concurrent writers on 8 connections (unary RegisterVariable, then SetVariable of one variable per revision)",
			"data_dir_bytes":      du,
			"server_log_recovery": logged,
		})
	}
	return nil
}

// fillRecoveryDir creates sessions sessions (24 h TTL) of vars integer
// variables each and writes writes SetVariables per session, over 64
// concurrent callers on 8 connections.
func fillRecoveryDir(ctx context.Context, addr string, sessions, vars, writes int) error {
	const conns, workers = 8, 64
	var clients []pb.BridgeServiceClient
	for range conns {
		cc, cl, err := dial(addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		clients = append(clients, cl)
	}
	ids := make([]string, sessions)
	for i := range ids {
		ids[i] = fmt.Sprintf("rec-%04d", i)
		if _, err := clients[0].InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: ids[i], Ttl: durationpb.New(24 * time.Hour)}); err != nil {
			return err
		}
	}
	// Work items: first every registration, then every write.
	var next atomic.Int64
	total := int64(sessions * (vars + writes))
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%conns]
			for {
				k := next.Add(1) - 1
				if k >= total || ctx.Err() != nil {
					return
				}
				var err error
				if k < int64(sessions*vars) {
					s, v := int(k)%sessions, int(k)/sessions
					_, err = cl.RegisterVariable(ctx, &pb.RegisterVariableRequest{
						SessionId: ids[s], Name: fmt.Sprintf("v%04d", v), Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intValue(0),
					})
				} else {
					k -= int64(sessions * vars)
					s, i := int(k)%sessions, int(k)/sessions
					_, err = cl.SetVariable(ctx, &pb.SetVariableRequest{
						SessionId: ids[s], VariableIdentifier: fmt.Sprintf("v%04d", i%vars), Value: intValue(int64(i)),
					})
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
