package systest

// Clients given several server addresses fail over (issue 12 item 3). Until
// servers share sessions through etcd, the way to have a session live on at
// another address is a durable server: `varbridge serve --data-dir D` on the
// list's first address is SIGKILLed while a writer writes without pause, and
// a server on the same data directory starts on the list's second address.
// The clients, all given both addresses, carry on there: a Go watcher and a
// Python watcher (crash_client.py) get every later change exactly once, in
// order, in the same incarnation (no RESYNC), and the writer goes on. A
// write in flight at the kill fails with ErrUnavailable and is never sent
// again behind the writer's back: the watchers' values only ever increase.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
)

// durableAt is a durable server (fsync always) on addr and dataDir, not
// started yet.
func durableAt(t *testing.T, bin, addr, dataDir string) *binServer {
	s := &binServer{t: t, bin: bin, addr: addr, args: []string{"serve", "--listen", addr, "--log-level", "error",
		"--http-listen", "", "--data-dir", dataDir, "--fsync", "always"}}
	t.Cleanup(s.kill)
	return s
}

// failoverWrite is one write of the test's writer: x = val, acknowledged at
// rev, or with an unknown outcome (ErrUnavailable).
type failoverWrite struct {
	val     int64
	rev     int64
	unknown bool
}

func TestClientsFailOverToAnotherAddress(t *testing.T) {
	bin := serverBin(t)
	py := venvPython(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	a1, a2 := freeAddr(t), freeAddr(t)
	s1, s2 := durableAt(t, bin, a1, dataDir), durableAt(t, bin, a2, dataDir)
	s1.start()
	list := a1 + "," + a2

	writer := dialBridged(t, list, fastRedial)
	watcher := dialBridged(t, list, fastRedial, varbridge.WithSessionID(writer.SessionID()))
	ctx := context.Background()
	r0 := mustRegister(t, writer, "x", varbridge.TypeInteger, int64(0)).Revision
	goLog := &watchLog{name: "go"}
	ref := mustWatch(t, watcher, ctx, nil, goLog.goWatch, resumingWatch...)
	inc := watchInfo(t, watcher, ref).Incarnation

	stopDir := t.TempDir()
	var pyLog *watchLog
	var pyW *pyWatcher
	if py != "" {
		pyW = startPyWatcher(t, py, list, writer.SessionID(), r0+1, stopDir)
		pyLog = pyW.log
		pyW.proc.waitReady(t)
	}
	logs := []*watchLog{goLog}
	if pyLog != nil {
		logs = append(logs, pyLog)
	}

	// The writer: x = 1, 2, 3, ... as fast as it can.
	var (
		acked  atomic.Int64 // writes acknowledged
		ackRev atomic.Int64 // the revision of the last one
		writes []failoverWrite
		stop   = make(chan struct{})
		done   = make(chan error, 1)
	)
	go func() {
		for v := int64(1); ; v++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			res, err := writer.Set(wctx, "x", v)
			cancel()
			switch {
			case err == nil:
				writes = append(writes, failoverWrite{val: v, rev: res.Revision})
				ackRev.Store(res.Revision)
				acked.Add(1)
			case errors.Is(err, varbridge.ErrUnavailable):
				writes = append(writes, failoverWrite{val: v, unknown: true})
			default:
				done <- fmt.Errorf("write %d: %w", v, err)
				return
			}
		}
	}()
	eventually(t, "200 writes", func() bool { return acked.Load() >= 200 })
	atKill := ackRev.Load()
	s1.kill()
	killed := time.Now()
	s2.start()
	started := time.Since(killed)
	for _, l := range logs {
		eventually(t, l.name+" watcher past the kill", func() bool { return l.lastRev.Load() > atKill })
		t.Logf("%s watcher: first update past revision %d %v after the kill (the second server was up after %v)",
			l.name, atKill, time.Since(killed), started)
	}
	n := acked.Load()
	eventually(t, "200 writes after the kill", func() bool { return acked.Load() >= n+200 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	last := ackRev.Load()
	for _, l := range logs {
		eventually(t, l.name+" watcher at the last write", func() bool { return l.lastRev.Load() >= last })
	}
	var pySummary map[string]any
	if pyW != nil {
		pySummary = pyW.finish(t)
	}

	unknown := 0
	for _, w := range writes {
		if w.unknown {
			unknown++
		}
	}
	for _, l := range logs {
		checkFailoverLog(t, l, r0, writes)
	}
	wi := watchInfo(t, watcher, ref)
	if !wi.Alive || wi.Incarnation != inc || wi.DuplicatesSkipped != 0 {
		t.Errorf("the Go watch after the failover: %+v (incarnation before: %s)", wi, inc)
	}
	if pySummary != nil && (pySummary["incarnation_changes"] != 0.0 || pySummary["duplicates_skipped"] != 0.0) {
		t.Errorf("the Python watch after the failover: %v", pySummary)
	}
	t.Logf("%d writes (%d with an unknown outcome, at the kill), revisions %d..%d; Go watch %d reconnects, %d stream errors; Python %v",
		len(writes), unknown, r0+1, last, wi.Reconnects, wi.Errors, pySummary)
}

// checkFailoverLog checks a watcher's log: one change of x per revision from
// r0+1 on, no gap, no repeat, no RESYNC, values increasing (a write sent
// again after a later one would show as a smaller value), and every
// acknowledged write at its revision.
func checkFailoverLog(t *testing.T, l *watchLog, r0 int64, writes []failoverWrite) {
	t.Helper()
	got := l.updates()
	byRev := map[int64]update{}
	prev := update{Rev: r0, Val: 0.0}
	for i, u := range got {
		if u.Type != "change" || u.Var != "x" || u.Rev != prev.Rev+1 {
			t.Fatalf("%s watcher, update %d: %+v after %+v: want the change of x at revision %d", l.name, i, u, prev, prev.Rev+1)
		}
		if toFloat(u.Val) <= toFloat(prev.Val) {
			t.Fatalf("%s watcher, update %d: x = %v after %v: a write repeated", l.name, i, u.Val, prev.Val)
		}
		byRev[u.Rev] = u
		prev = u
	}
	for _, w := range writes {
		if w.unknown {
			continue
		}
		if u, ok := byRev[w.rev]; !ok || toFloat(u.Val) != float64(w.val) {
			t.Fatalf("%s watcher: the write x = %d acknowledged at revision %d shows as %+v", l.name, w.val, w.rev, u)
		}
	}
}

// toFloat is a logged value as a number (int64 from Go, float64 from JSON).
func toFloat(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return -1
}
