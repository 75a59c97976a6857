package systest

// The cluster chaos test (issue 12): two varbridge servers (the real
// binary) over a real three-member etcd cluster. Go and Python writers
// write through both servers (each client is given both addresses); Go and
// Python watchers follow the session through cut proxies in front of both
// servers. Meanwhile, in turn:
//
//   - a varbridge server is SIGKILLed and started again: its clients move
//     to the other one and resume there;
//   - the etcd leader is SIGKILLed and started again: writes pause while
//     the cluster elects another, then go on;
//   - server B is cut off from etcd (the proxies between it and every
//     member refuse and cut): its watches end with UNAVAILABLE and move to
//     A, and a read through B of a variable written through A meanwhile
//     fails rather than return the stale value.
//
// At the end the checks of the crash test hold: every acknowledged write is
// in the history at the revision and version it was acknowledged with, no
// write is partly applied or applied twice, and every watcher got every
// revision exactly once, in order, each batch together, without RESYNC.
//
// Sizes: VARBRIDGE_CLUSTER_FAULTS faults (default 4, one of each kind and a
// second server kill; make chaos sets 16).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/etcdtest"
)

var clusterFaults = flag.Int("cluster.faults", envInt("VARBRIDGE_CLUSTER_FAULTS", 4),
	"faults in the cluster chaos test (make chaos: 16)")

// clusterServer starts the binary on the etcd endpoints, with a short etcd
// timeout so that a server cut off from etcd notices within seconds.
func clusterServer(t *testing.T, bin string, endpoints []string) *binServer {
	t.Helper()
	s := &binServer{t: t, bin: bin, addr: freeAddr(t)}
	s.args = []string{"serve", "--listen", s.addr, "--log-level", "error", "--http-listen", "",
		"--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-prefix", "/chaos/", "--etcd-timeout", "1s",
		"--history-limit", "10000000", "--history-bytes", "4294967296", "--history-age", "24h"}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func TestClusterChaos(t *testing.T) {
	faults := *clusterFaults
	py := venvPython(t)
	bin := serverBin(t)
	etcd := etcdtest.Start(t, 3)

	// B reaches every etcd member through a proxy, so that it can be cut off.
	var viaProxies []string
	var etcdProxies []*cutproxy.Proxy
	for _, ep := range etcd.Endpoints() {
		p := newProxy(t, ep)
		etcdProxies = append(etcdProxies, p)
		viaProxies = append(viaProxies, p.Addr())
	}
	srvA := clusterServer(t, bin, etcd.Endpoints())
	srvB := clusterServer(t, bin, viaProxies)
	servers := []*binServer{srvA, srvB}
	both := srvA.addr + "," + srvB.addr
	pA, pB := newProxy(t, srvA.addr), newProxy(t, srvB.addr)
	watchAddrs := pA.Addr() + "," + pB.Addr()

	const session = "cluster"
	opts := []varbridge.Option{varbridge.WithSessionID(session), fastRedial}
	admin := dialBridged(t, both, opts...)
	owners := map[string][]string{}
	writers := []string{"g1", "g2"}
	if py != "" {
		writers = append(writers, "p1")
	}
	for _, w := range writers {
		for i := range 6 {
			n := fmt.Sprintf("%s_%d", w, i)
			owners[w] = append(owners[w], n)
			mustRegister(t, admin, n, varbridge.TypeString, "init")
		}
	}
	mustRegister(t, admin, "fence", varbridge.TypeString, "init")
	mustRegister(t, admin, "probe", varbridge.TypeString, "init")
	info, err := admin.Heartbeat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r0, incarnation := info.Revision, info.Incarnation

	watchOpts := []varbridge.WatchOption{varbridge.WithStartRevision(r0 + 1), varbridge.WithMaxFailures(1_000_000),
		varbridge.WithBackoff(5*time.Millisecond, 100*time.Millisecond), varbridge.WithHeartbeat(100 * time.Millisecond)}
	wstate := dialBridged(t, watchAddrs, opts...)
	var allNames []string
	for _, w := range writers {
		allNames = append(allNames, owners[w]...)
	}
	allNames = append(allNames, "fence", "probe")
	goBatches := &watchLog{name: "go batches, named"}
	goSession := &watchLog{name: "go single, session"}
	refBatches := mustWatch(t, wstate, context.Background(), allNames, goBatches.goWatch,
		append(watchOpts, varbridge.WithBatchedStream(true))...)
	refSession := mustWatch(t, wstate, context.Background(), nil, goSession.goWatch,
		append(watchOpts, varbridge.WithBatchedStream(false))...)

	stopDir := t.TempDir()
	var pyW *pyWatcher
	var pyWr *pyWriter
	if py != "" {
		pyW = startPyWatcher(t, py, watchAddrs, session, r0+1, stopDir)
		pyWr = startPyWriter(t, py, srvB.addr+","+srvA.addr, session, "p1", owners["p1"], stopDir, "7")
		pyW.proc.waitReady(t)
		pyWr.proc.waitReady(t)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	goRecs := make([][]writeRec, 2)
	goErrs := make([]error, 2)
	for i, w := range writers[:2] {
		b := dialBridged(t, []string{both, srvB.addr + "," + srvA.addr}[i], opts...)
		wg.Go(func() { goRecs[i], goErrs[i] = crashWriter(b, w, owners[w], uint64(i+1)*1009, stop) })
	}

	// Cuts between the watchers and the servers all along.
	stopCuts := make(chan struct{})
	cutsDone := make(chan struct{})
	var cuts atomic.Int64
	go func() {
		defer close(cutsDone)
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
		for {
			select {
			case <-stopCuts:
				return
			case <-time.After(time.Duration(200+rng.IntN(600)) * time.Millisecond):
				cuts.Add(int64([]*cutproxy.Proxy{pA, pB}[rng.IntN(2)].Cut()))
			}
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	t0 := time.Now()
	var done []string
	staleRefused := 0
	var probes []writeRec
	probeSeq := 0
	for i := range faults {
		time.Sleep(time.Duration(300+rng.IntN(500)) * time.Millisecond)
		switch i % 4 {
		case 0, 3: // a varbridge server dies
			s := servers[(i/4+i)%2]
			s.kill()
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			s.start()
			done = append(done, "kill server "+map[*binServer]string{srvA: "A", srvB: "B"}[s])
		case 1: // the etcd leader dies
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			leader, err := etcd.Leader(ctx)
			cancel()
			if err != nil {
				t.Fatalf("finding the etcd leader: %v", err)
			}
			etcd.Kill(leader)
			time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
			etcd.Restart(leader)
			done = append(done, fmt.Sprintf("kill etcd leader %d", leader))
		case 2: // B loses etcd
			for _, p := range etcdProxies {
				p.SetRefuse(true)
				p.Cut()
			}
			recs, refused := checkStaleRead(t, srvA.addr, srvB.addr, &probeSeq)
			probes = append(probes, recs...)
			if refused {
				staleRefused++
			}
			for _, p := range etcdProxies {
				p.SetRefuse(false)
			}
			done = append(done, "cut B off etcd")
		}
	}
	time.Sleep(500 * time.Millisecond) // writes after the last fault too
	close(stop)
	wg.Wait()
	close(stopCuts)
	<-cutsDone
	for _, err := range goErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var pyRecs []writeRec
	var pyWatch *watchLog
	if pyWr != nil {
		pyRecs, pyWatch = pyWr.finish(t), pyW.log
	}
	runTime := time.Since(t0)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fv, err := admin.Set(ctx, "fence", "fence")
	if err != nil {
		t.Fatal(err)
	}
	fence := fv.Revision
	awaitFence(t, fence, goBatches, goSession, pyWatch)
	resumes := goResumed(t, wstate, incarnation, goWatch{goBatches, refBatches}, goWatch{goSession, refSession})
	if pyW != nil {
		resumes = append(resumes, pyW.resumed(t))
	}

	// The history from revision 1 through B, the final values through A.
	reader := dialBridged(t, srvB.addr, opts...)
	hist := readHistory(ctx, t, reader, fence)
	final, missing, err := dialBridged(t, srvA.addr, opts...).GetMany(ctx, allNames)
	if err != nil || len(missing) > 0 {
		t.Fatalf("final values: %v, missing %v", err, missing)
	}

	all := slices.Concat(goRecs[0], goRecs[1], pyRecs, probes)
	c := checkCrash(t, r0, fence, all, hist, final)
	logs := []*watchLog{goBatches, goSession}
	if pyWatch != nil {
		logs = append(logs, pyWatch)
	}
	delivered := checkCrashWatchers(t, r0, fence, hist, logs...)
	t.Logf("faults in %v: %s; %d watcher connection cuts; revisions %d..%d", runTime.Round(time.Millisecond),
		strings.Join(done, ", "), cuts.Load(), r0+1, fence)
	t.Logf("writes: %s", c)
	t.Logf("resumes: %s", strings.Join(resumes, "; "))
	t.Logf("updates delivered per watcher: %s", strings.Join(delivered, ", "))
	t.Logf("reads through B while it was cut off from etcd: %d refused, none served a stale value", staleRefused)
	if c.acked == 0 {
		t.Error("no write was acknowledged")
	}
}

// checkStaleRead writes probe through A while B is cut off from etcd, then
// reads it through B: B must refuse (UNAVAILABLE) rather than answer with
// the value it held before. It returns the probe's writes (a try with an
// unknown outcome is followed by one with a new value), for the history
// checks, and whether B refused; a read that returns the new value (B
// reached etcd after all) is fine, any other value fails.
func checkStaleRead(t *testing.T, a, b string, seq *int) ([]writeRec, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []writeRec
	wa := dialBridged(t, a, varbridge.WithSessionID("cluster"), fastRedial)
	var rec writeRec
	for {
		*seq++
		rec = writeRec{Writer: "probe", Seq: *seq, Value: fmt.Sprintf("probe:%d", *seq), Op: "set", Vars: []string{"probe"}, Outcome: "ok"}
		v, err := wa.Set(ctx, "probe", rec.Value)
		if err == nil {
			rec.Rev, rec.Versions = v.Revision, map[string]int64{"probe": v.Version}
			recs = append(recs, rec)
			break
		}
		if !errors.Is(err, varbridge.ErrUnavailable) || ctx.Err() != nil {
			t.Fatalf("writing the probe through A: %v", err)
		}
		rec.Outcome, rec.Err = "unknown", err.Error() // a new value for the next try: this one may be applied
		recs = append(recs, rec)
		time.Sleep(20 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(ctx, 4*time.Second)
	defer rcancel()
	rb, err := varbridge.NewBridgedState(rctx, b, varbridge.WithSessionID("cluster"), varbridge.WithLogger(quiet))
	if err != nil {
		return recs, true // B would not even join the session
	}
	defer rb.Close()
	got, err := rb.Get(rctx, "probe")
	switch {
	case err != nil:
		if !errors.Is(err, varbridge.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("read through B cut off from etcd: %v, want UNAVAILABLE", err)
		}
		return recs, true
	case got.Value != rec.Value:
		t.Errorf("B, cut off from etcd, served probe = %v as current; it is %s", got.Value, rec.Value)
	}
	return recs, false
}
