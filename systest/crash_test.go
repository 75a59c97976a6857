package systest

// The crash test (issue 11): the real varbridge binary on a real data
// directory with --fsync always is SIGKILLed at random moments and started
// again on the same directory and port, while Go and Python writers commit
// single sets, atomic batches and compare-and-set writes, and Go and Python
// watchers follow the session through the cut proxy (which cuts them at
// random too). At the end:
//
//   - every write whose call returned OK is in the session's history at the
//     revision and version the call returned, with its value; a stale
//     compare-and-set was refused and is nowhere; a write whose call failed
//     (the server died under it) is either wholly applied or not at all;
//   - every revision holds the members of exactly one write: no batch
//     partly applied, none split or merged;
//   - every watcher got every revision after its start exactly once, in
//     order, each batch together, with the values of the history, and no
//     RESYNC (the history window holds the whole run).
//
// Values are "WRITER:SEQ", so a loss, a duplicate or a phantom shows.
//
// Sizes: `go test` (make test) makes VARBRIDGE_CRASH_KILLS (default 5)
// kills; make chaos sets 25. VARBRIDGE_CRASH_FSYNC=batch or never runs it
// in another fsync mode: they too promise that a killed process (not a
// machine) loses no acknowledged write. The Python writer and watcher run with the
// repository's virtualenv (.venv, or $VARBRIDGE_PYTHON); without one the
// Python part is skipped unless VARBRIDGE_REQUIRE_PYTHON is set (make test
// and make chaos set it).

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
)

var crashKills = flag.Int("crash.kills", envInt("VARBRIDGE_CRASH_KILLS", 5),
	"SIGKILLs in the crash test (make chaos: 25)")

// writeRec is one write call and its outcome, from a Go or Python writer.
type writeRec struct {
	Writer   string           `json:"writer"`
	Seq      int              `json:"seq"`
	Value    string           `json:"value"`
	Op       string           `json:"op"` // set, batch, cas, stalecas
	Vars     []string         `json:"vars"`
	Expected int64            `json:"expected"`
	Outcome  string           `json:"outcome"` // ok, rejected, unknown, fatal
	Rev      int64            `json:"rev"`
	Versions map[string]int64 `json:"versions"`
	Err      string           `json:"err"`
}

// update is one update a watcher delivered. Pos is its place among the
// consecutive updates of its revision (a batch's members: 0, 1, ...).
type update struct {
	Rev  int64  `json:"rev"`
	Var  string `json:"var"`
	Val  any    `json:"val"`
	Type string `json:"type"` // change, resync, initial, deleted
	Ver  int64  `json:"ver"`
	Pos  int    `json:"-"`
}

// watchLog is what one watcher delivered, in order.
type watchLog struct {
	name    string
	mu      sync.Mutex
	got     []update
	lastRev atomic.Int64
}

func (w *watchLog) add(u update) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.got); n > 0 && w.got[n-1].Rev == u.Rev {
		u.Pos = w.got[n-1].Pos + 1
	}
	w.got = append(w.got, u)
	w.lastRev.Store(max(w.lastRev.Load(), u.Rev))
}

func (w *watchLog) updates() []update {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// goWatch records a BridgedState watch's updates.
func (w *watchLog) goWatch(_ string, _, new any, m varbridge.UpdateMeta) {
	typ := "change"
	switch {
	case m.Resync:
		typ = "resync"
	case m.Initial:
		typ = "initial"
	case m.Deleted:
		typ = "deleted"
	}
	w.add(update{Rev: m.Revision, Var: m.Name, Val: new, Type: typ, Ver: m.Version})
}

// crashWriter writes its own variables (no other writer touches them, so
// it knows their versions) until stop closes: 45% single sets, 30% batches
// of 2-4, 25% compare-and-set, a quarter of those with a stale version
// that must be refused. A call that fails with anything but a version
// conflict or a bad-request error has an unknown outcome: its variables'
// versions are read again before the next compare-and-set of them.
func crashWriter(b *varbridge.BridgedState, writer string, names []string, seed uint64, stop <-chan struct{}) ([]writeRec, error) {
	rng := rand.New(rand.NewPCG(seed, 11))
	known := map[string]int64{}
	dirty := map[string]bool{}
	for _, n := range names {
		dirty[n] = true
	}
	var recs []writeRec
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return recs, nil
		default:
		}
		rec := writeRec{Writer: writer, Seq: seq, Value: fmt.Sprintf("%s:%d", writer, seq)}
		var err error
		ctx, cancel := call()
		switch roll := rng.IntN(100); {
		case roll < 45:
			n := names[rng.IntN(len(names))]
			rec.Op, rec.Vars = "set", []string{n}
			var v *varbridge.Variable
			if v, err = b.Set(ctx, n, rec.Value); err == nil {
				rec.Rev, rec.Versions = v.Revision, map[string]int64{n: v.Version}
			}
		case roll < 75:
			rec.Op = "batch"
			upd := map[string]any{}
			for _, k := range rng.Perm(len(names))[:2+rng.IntN(3)] {
				rec.Vars = append(rec.Vars, names[k])
				upd[names[k]] = rec.Value
			}
			var res map[string]*varbridge.Variable
			if res, err = b.SetMany(ctx, upd); err == nil {
				rec.Versions = map[string]int64{}
				for n, v := range res {
					rec.Rev, rec.Versions[n] = v.Revision, v.Version
				}
			}
		default:
			n := names[rng.IntN(len(names))]
			for dirty[n] {
				v, gerr := b.Get(ctx, n)
				switch {
				case gerr == nil:
					known[n], dirty[n] = v.Version, false
				case !errors.Is(gerr, varbridge.ErrUnavailable):
					cancel()
					return recs, fmt.Errorf("%s: reading %s back: %w", writer, n, gerr)
				default:
					time.Sleep(10 * time.Millisecond) // the server is restarting
				}
			}
			rec.Op, rec.Vars, rec.Expected = "cas", []string{n}, known[n]
			if known[n] > 1 && rng.IntN(4) == 0 {
				rec.Op, rec.Expected = "stalecas", known[n]-1
			}
			var v *varbridge.Variable
			if v, err = b.Set(ctx, n, rec.Value, varbridge.WithExpectedVersion(rec.Expected)); err == nil {
				rec.Rev, rec.Versions = v.Revision, map[string]int64{n: v.Version}
			}
		}
		cancel()
		switch {
		case err == nil:
			rec.Outcome = "ok"
			for n, v := range rec.Versions {
				known[n] = v
			}
		case errors.Is(err, varbridge.ErrVersionConflict):
			rec.Outcome, rec.Err = "rejected", err.Error()
		case errors.Is(err, varbridge.ErrInvalidArgument), errors.Is(err, varbridge.ErrNotFound),
			errors.Is(err, varbridge.ErrSessionNotFound), errors.Is(err, varbridge.ErrLimit),
			errors.Is(err, varbridge.ErrClosed):
			return recs, fmt.Errorf("%s: %s %v: %w", writer, rec.Op, rec.Vars, err)
		default:
			rec.Outcome, rec.Err = "unknown", err.Error()
			for _, n := range rec.Vars {
				dirty[n] = true
			}
		}
		recs = append(recs, rec)
	}
}

// venvPython is the python of the repository's virtualenv
// ($VARBRIDGE_PYTHON, else ../.venv/bin/python) when it imports varbridge;
// "" when there is none and VARBRIDGE_REQUIRE_PYTHON is unset.
func venvPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("VARBRIDGE_PYTHON")
	if py == "" {
		abs, err := filepath.Abs(filepath.Join("..", ".venv", "bin", "python"))
		if err != nil {
			t.Fatal(err)
		}
		py = abs
	}
	out, err := exec.Command(py, "-c", "import varbridge").CombinedOutput()
	if err != nil {
		if os.Getenv("VARBRIDGE_REQUIRE_PYTHON") != "" {
			t.Fatalf("VARBRIDGE_REQUIRE_PYTHON is set but %s cannot import varbridge (run make venv): %v\n%s", py, err, out)
		}
		t.Logf("no Python client (%s: %v): the Python writer and watcher are skipped; make venv, or set VARBRIDGE_PYTHON", py, err)
		return ""
	}
	return py
}

// pyProc is a crash_client.py process; each JSON line it prints after
// {"ready": true} goes to line.
type pyProc struct {
	name   string
	cmd    *exec.Cmd
	ready  chan struct{}
	done   chan struct{}
	err    error // the process's exit, once done is closed
	stderr strings.Builder
}

func startPy(t *testing.T, py, name string, line func([]byte) error, args ...string) *pyProc {
	t.Helper()
	p := &pyProc{name: name, ready: make(chan struct{}), done: make(chan struct{})}
	p.cmd = exec.Command(py, append([]string{filepath.Join("testdata", "crash_client.py")}, args...)...)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		isReady := false
		var lerr error
		for sc.Scan() {
			if !isReady {
				if strings.Contains(sc.Text(), `"ready"`) {
					isReady = true
					close(p.ready)
				}
				continue
			}
			if err := line(sc.Bytes()); err != nil && lerr == nil {
				lerr = fmt.Errorf("%s: line %q: %w", name, sc.Text(), err)
			}
		}
		p.err = errors.Join(p.cmd.Wait(), lerr)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitReady waits for the process's ready line.
func (p *pyProc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.ready:
	case <-p.done:
		t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready after 60 s\n%s", p.name, p.stderr.String())
	}
}

// wait waits for the process to exit by itself.
func (p *pyProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("%s: %v\n%s", p.name, p.err, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not stop within 60 s\n%s", p.name, p.stderr.String())
	}
}

// serverBin is $VARBRIDGE_BIN (make builds it from this tree just before
// the tests), or the binary built from this tree into the test's temp dir:
// linking takes most of these tests' time.
func serverBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("VARBRIDGE_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("VARBRIDGE_BIN: %v", err)
		}
		return bin
	}
	return buildServer(t)
}

// startDurable starts the binary on a data directory with --fsync always
// and the extra flags, on a fixed loopback port it keeps across restarts.
func startDurable(t *testing.T, bin, dataDir string, extra ...string) *binServer {
	t.Helper()
	s := &binServer{t: t, bin: bin, addr: freeAddr(t)}
	s.args = append([]string{"serve", "--listen", s.addr, "--log-level", "error", "--http-listen", "",
		"--data-dir", dataDir, "--fsync", "always"}, extra...)
	s.start()
	t.Cleanup(s.kill)
	return s
}

func TestCrashDurableSIGKILL(t *testing.T) {
	kills := *crashKills
	py := venvPython(t)
	bin := serverBin(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	flags := []string{"--history-limit", "10000000", "--history-bytes", "4294967296", "--history-age", "24h"}
	if mode := os.Getenv("VARBRIDGE_CRASH_FSYNC"); mode != "" {
		flags = append(flags, "--fsync", mode) // batch and never promise the same to a killed process
		t.Logf("--fsync %s", mode)
	}
	srv := startDurable(t, bin, dataDir, flags...)
	proxy := newProxy(t, srv.addr)
	const session = "crash"
	opts := []varbridge.Option{varbridge.WithSessionID(session), fastRedial}

	// Every variable is registered before the faults start; writers own
	// theirs. The fence is written once the writers are done: a watcher
	// that has it has everything before it.
	admin := dialBridged(t, srv.addr, opts...)
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
	info, err := admin.Heartbeat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r0 := info.Revision
	incarnation := info.Incarnation

	// Watchers, from revision r0+1, through the proxy.
	watchOpts := []varbridge.WatchOption{varbridge.WithStartRevision(r0 + 1), varbridge.WithMaxFailures(1_000_000),
		varbridge.WithBackoff(5*time.Millisecond, 100*time.Millisecond), varbridge.WithHeartbeat(100 * time.Millisecond)}
	wstate := dialBridged(t, proxy.Addr(), opts...)
	var allNames []string
	for _, w := range writers {
		allNames = append(allNames, owners[w]...)
	}
	allNames = append(allNames, "fence")
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
		pyW = startPyWatcher(t, py, proxy.Addr(), session, r0+1, stopDir)
		pyWr = startPyWriter(t, py, srv.addr, session, "p1", owners["p1"], stopDir, "7")
		pyW.proc.waitReady(t)
		pyWr.proc.waitReady(t)
	}

	// Go writers on a direct connection.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	goRecs := make([][]writeRec, 2)
	goErrs := make([]error, 2)
	for i, w := range writers[:2] {
		b := dialBridged(t, srv.addr, opts...)
		wg.Go(func() { goRecs[i], goErrs[i] = crashWriter(b, w, owners[w], uint64(i+1)*977, stop) })
	}

	// Cuts through the proxy all along, SIGKILLs at random moments.
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
			case <-time.After(time.Duration(100+rng.IntN(400)) * time.Millisecond):
				cuts.Add(int64(proxy.Cut()))
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	t0 := time.Now()
	restarts := 0
	for range kills {
		time.Sleep(time.Duration(50+rng.IntN(351)) * time.Millisecond)
		srv.kill()
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond) // down a moment
		srv.start()
		restarts++
	}
	time.Sleep(300 * time.Millisecond) // writes after the last restart too
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

	// The fence, then every watcher up to it.
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

	// The history from revision 1, on a fresh direct connection, and the
	// final values.
	reader := dialBridged(t, srv.addr, opts...)
	hist := readHistory(ctx, t, reader, fence)
	final, missing, err := reader.GetMany(ctx, allNames)
	if err != nil || len(missing) > 0 {
		t.Fatalf("final values: %v, missing %v", err, missing)
	}
	if info, err := reader.Heartbeat(ctx); err != nil || info.Incarnation != incarnation || info.Revision != fence {
		t.Errorf("the session after the run: %+v, %v; want incarnation %s (unchanged) at revision %d", info, err, incarnation, fence)
	}

	all := slices.Concat(goRecs[0], goRecs[1], pyRecs)
	c := checkCrash(t, r0, fence, all, hist, final)
	logs := []*watchLog{goBatches, goSession}
	if pyWatch != nil {
		logs = append(logs, pyWatch)
	}
	delivered := checkCrashWatchers(t, r0, fence, hist, logs...)
	t.Logf("%d kills, %d restarts, %d proxy cuts in %v; revisions %d..%d", kills, restarts, cuts.Load(),
		runTime.Round(time.Millisecond), r0+1, fence)
	t.Logf("writes: %s", c)
	t.Logf("resumes: %s", strings.Join(resumes, "; "))
	t.Logf("updates delivered per watcher: %s", strings.Join(delivered, ", "))
	if c.acked == 0 {
		t.Error("no write was acknowledged")
	}
}

// crashCounts summarizes the writes of a crash run.
type crashCounts struct {
	acked, unknown, unknownApplied, rejected, batches, cas, staleRefused int
	byWriter                                                             map[string]int
	errs                                                                 map[string]int
}

func (c crashCounts) String() string {
	var ws []string
	for w, n := range c.byWriter {
		ws = append(ws, fmt.Sprintf("%s %d", w, n))
	}
	sort.Strings(ws)
	var es []string
	for e, n := range c.errs {
		es = append(es, fmt.Sprintf("%dx %q", n, e))
	}
	sort.Strings(es)
	return fmt.Sprintf("%d acknowledged (%d batches, %d compare-and-set; per writer: %s), %d unknown outcomes (%d of them applied), "+
		"%d refused (%d stale compare-and-set); unknown errors: %s",
		c.acked, c.batches, c.cas, strings.Join(ws, ", "), c.unknown, c.unknownApplied, c.rejected, c.staleRefused, strings.Join(es, "; "))
}

// checkCrash checks the history (every revision 1..fence, from a watch at
// revision 1) and the final values against the writes.
func checkCrash(t *testing.T, r0, fence int64, recs []writeRec, hist []update, final map[string]*varbridge.Variable) crashCounts {
	t.Helper()
	c := crashCounts{byWriter: map[string]int{}, errs: map[string]int{}}
	byValue := map[string]*writeRec{}
	for i := range recs {
		r := &recs[i]
		byValue[r.Value] = r
		switch r.Outcome {
		case "ok":
			c.acked++
			c.byWriter[r.Writer]++
			if r.Op == "batch" {
				c.batches++
			}
			if r.Op == "cas" {
				c.cas++
			}
			if r.Op == "stalecas" {
				t.Errorf("a stale compare-and-set was acknowledged: %+v", *r)
			}
		case "rejected":
			c.rejected++
			if r.Op == "stalecas" {
				c.staleRefused++
			} else {
				t.Errorf("a write with the right version was refused: %+v", *r)
			}
		case "unknown":
			c.unknown++
			c.errs[shortErr(r.Err)]++
		default:
			t.Errorf("writer %s failed: %+v", r.Writer, *r)
		}
	}

	byRev := map[int64][]update{}
	var prev int64
	for _, u := range hist {
		if u.Type != "change" {
			t.Errorf("history: a %s update %+v (the window should hold every revision)", u.Type, u)
			continue
		}
		if u.Rev < prev {
			t.Errorf("history: revision %d after %d", u.Rev, prev)
		}
		prev = u.Rev
		byRev[u.Rev] = append(byRev[u.Rev], u)
	}
	for rev := int64(1); rev <= fence; rev++ {
		if len(byRev[rev]) == 0 {
			t.Errorf("history: revision %d is missing (the session's revisions go to %d)", rev, fence)
		}
	}

	lastVer := map[string]int64{}
	lastVal := map[string]any{}
	applied := map[string]int64{} // value -> revision
	for rev := int64(1); rev <= fence; rev++ {
		us := byRev[rev]
		if len(us) == 0 {
			continue
		}
		var vars []string
		for _, u := range us {
			if u.Ver != lastVer[u.Var]+1 {
				t.Errorf("history: %s at version %d (revision %d) after version %d", u.Var, u.Ver, rev, lastVer[u.Var])
			}
			lastVer[u.Var], lastVal[u.Var] = u.Ver, u.Val
			vars = append(vars, u.Var)
			if us[0].Val != u.Val {
				t.Errorf("history: revision %d mixes values %v and %v: %+v", rev, us[0].Val, u.Val, us)
			}
		}
		val, _ := us[0].Val.(string)
		switch {
		case rev <= r0:
			if len(us) != 1 || val != "init" {
				t.Errorf("history: registration revision %d: %+v", rev, us)
			}
			continue
		case rev == fence:
			if len(us) != 1 || us[0].Var != "fence" || val != "fence" {
				t.Errorf("history: fence revision %d: %+v", rev, us)
			}
			continue
		}
		r := byValue[val]
		if r == nil {
			t.Errorf("history: revision %d holds %q, which no writer wrote: %+v", rev, val, us)
			continue
		}
		if at, dup := applied[val]; dup {
			t.Errorf("history: %q applied twice, at revisions %d and %d", val, at, rev)
		}
		applied[val] = rev
		slices.Sort(vars)
		want := slices.Sorted(slices.Values(r.Vars))
		if !slices.Equal(vars, want) {
			t.Errorf("history: revision %d holds %v of write %+v: a batch partly applied or merged", rev, vars, *r)
		}
		switch r.Outcome {
		case "ok":
			if r.Rev != rev {
				t.Errorf("write %+v was acknowledged at revision %d but applied at %d", *r, r.Rev, rev)
			}
			for _, u := range us {
				if r.Versions[u.Var] != u.Ver {
					t.Errorf("write %+v acknowledged %s at version %d; the history has %d", *r, u.Var, r.Versions[u.Var], u.Ver)
				}
			}
		case "unknown":
			c.unknownApplied++
		default:
			t.Errorf("history: revision %d applied a write whose call said %s: %+v", rev, r.Outcome, *r)
		}
	}
	for _, r := range recs {
		if r.Outcome == "ok" {
			if _, ok := applied[r.Value]; !ok {
				t.Errorf("an acknowledged write is lost: %+v", r)
			}
		}
	}
	for n, v := range final {
		if v.Version != lastVer[n] || v.Value != lastVal[n] {
			t.Errorf("final %s = %v at version %d; the history ends at %v, version %d", n, v.Value, v.Version, lastVal[n], lastVer[n])
		}
	}
	return c
}

// checkCrashWatcher checks that a watcher delivered every revision after
// r0 up to the fence exactly once, in order, each batch together and in
// one piece, with the history's values, and no RESYNC.
func checkCrashWatcher(t *testing.T, l *watchLog, r0, fence int64, hist []update) (count, resyncs int) {
	t.Helper()
	want := map[int64][]string{}
	val := map[delivered]any{}
	for _, u := range hist {
		if u.Rev > r0 && u.Rev <= fence {
			want[u.Rev] = append(want[u.Rev], u.Var)
			val[delivered{rev: u.Rev, id: u.Var}] = u.Val
		}
	}
	var got []delivered
	for _, u := range l.updates() {
		if u.Rev > fence {
			continue
		}
		got = append(got, delivered{rev: u.Rev, id: u.Var, resync: u.Type == "resync"})
		if u.Type == "resync" {
			resyncs++
			continue
		}
		count++
		if u.Type != "change" {
			t.Errorf("%s: a %s update %+v", l.name, u.Type, u)
		}
		if w, ok := val[delivered{rev: u.Rev, id: u.Var}]; ok && w != u.Val {
			t.Errorf("%s: %s at revision %d = %v, the history has %v", l.name, u.Var, u.Rev, u.Val, w)
		}
		if n := len(want[u.Rev]); u.Pos >= n {
			t.Errorf("%s: update %+v is member %d of a revision of %d", l.name, u, u.Pos+1, n)
		}
	}
	if tl := checkExactlyOnce(want, got); !tl.clean() {
		t.Errorf("%s: %s", l.name, tl)
	}
	return count, resyncs
}

// shortErr cuts an error message to its first clause, to count kinds.
func shortErr(s string) string {
	if i := strings.IndexAny(s, ":("); i > 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
