package systest

// The parts the crash, cluster and failover tests share: crash_client.py's
// Python watcher and writer, the wait for every watcher to reach the fence,
// and the Go watches' resume report.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
)

// pyWatcher is crash_client.py watching a session from a revision: its
// updates go to log, its last line to summary.
type pyWatcher struct {
	log     *watchLog
	proc    *pyProc
	stop    string
	mu      sync.Mutex
	summary map[string]any
}

// startPyWatcher starts crash_client.py's watch mode on addr (one server
// or a list) from revision from; stopDir holds its stop file.
func startPyWatcher(t *testing.T, py, addr, session string, from int64, stopDir string) *pyWatcher {
	t.Helper()
	w := &pyWatcher{log: &watchLog{name: "python, session"}, stop: filepath.Join(stopDir, "watch")}
	w.proc = startPy(t, py, "python watcher", func(b []byte) error {
		if strings.Contains(string(b), `"summary"`) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return json.Unmarshal(b, &w.summary)
		}
		var u update
		if err := json.Unmarshal(b, &u); err != nil {
			return err
		}
		if t, ok := map[string]string{"value_change": "change", "initial_value": "initial"}[u.Type]; ok {
			u.Type = t
		}
		w.log.add(u)
		return nil
	}, "watch", addr, session, fmt.Sprint(from), w.stop)
	return w
}

// finish stops the watcher and returns its summary.
func (w *pyWatcher) finish(t *testing.T) map[string]any {
	t.Helper()
	if err := os.WriteFile(w.stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.proc.wait(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.summary
}

// resumed stops the watcher and reports how it resumed, failing the test
// if the session's incarnation changed under it.
func (w *pyWatcher) resumed(t *testing.T) string {
	t.Helper()
	s := w.finish(t)
	if n, _ := s["incarnation_changes"].(float64); n != 0 {
		t.Errorf("%s: the session's incarnation changed %v times", w.log.name, n)
	}
	return fmt.Sprintf("%s: %v reconnects, %v duplicates skipped", w.log.name, s["reconnects"], s["duplicates_skipped"])
}

// pyWriter is crash_client.py writing its own variables (see crashWriter).
type pyWriter struct {
	proc *pyProc
	stop string
	mu   sync.Mutex
	recs []writeRec
}

// startPyWriter starts crash_client.py's write mode on addr as writer,
// writing names with the given seed; stopDir holds its stop file.
func startPyWriter(t *testing.T, py, addr, session, writer string, names []string, stopDir, seed string) *pyWriter {
	t.Helper()
	w := &pyWriter{stop: filepath.Join(stopDir, "write")}
	w.proc = startPy(t, py, "python writer", func(b []byte) error {
		var r writeRec
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		w.mu.Lock()
		w.recs = append(w.recs, r)
		w.mu.Unlock()
		return nil
	}, "write", addr, session, writer, strings.Join(names, ","), w.stop, seed)
	return w
}

// finish stops the writer and returns its writes.
func (w *pyWriter) finish(t *testing.T) []writeRec {
	t.Helper()
	if err := os.WriteFile(w.stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w.proc.wait(t)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recs
}

// awaitFence waits until every watcher (nil ones skipped) has delivered the
// fence revision, or fails after a minute.
func awaitFence(t *testing.T, fence int64, logs ...*watchLog) {
	t.Helper()
	for _, l := range logs {
		if l == nil {
			continue
		}
		deadline := time.Now().Add(time.Minute)
		for l.lastRev.Load() < fence {
			if time.Now().After(deadline) {
				t.Fatalf("%s: reached revision %d of %d", l.name, l.lastRev.Load(), fence)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// goWatch is a Go watch of a crash-style run and what it delivered.
type goWatch struct {
	log *watchLog
	ref varbridge.WatchRef
}

// goResumed reports how each Go watch resumed, failing the test if one is
// not alive or saw another incarnation, and removes them.
func goResumed(t *testing.T, st *varbridge.BridgedState, incarnation string, watches ...goWatch) []string {
	t.Helper()
	var out []string
	for _, w := range watches {
		wi := watchInfo(t, st, w.ref)
		out = append(out, fmt.Sprintf("%s: %d reconnects, %d duplicates skipped", w.log.name, wi.Reconnects, wi.DuplicatesSkipped))
		if !wi.Alive || wi.Incarnation != incarnation {
			t.Errorf("%s: alive %v, incarnation %q (was %q), last error %v", w.log.name, wi.Alive, wi.Incarnation, incarnation, wi.LastError)
		}
		if err := st.UnwatchVariables(w.ref); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// readHistory reads the session's whole history, from revision 1 to the
// fence, through a watch of reader.
func readHistory(ctx context.Context, t *testing.T, reader *varbridge.BridgedState, fence int64) []update {
	t.Helper()
	hist := &watchLog{name: "history"}
	ref := mustWatch(t, reader, ctx, nil, hist.goWatch, varbridge.WithStartRevision(1), varbridge.WithBatchedStream(true))
	eventually(t, "the history watch to reach the fence", func() bool { return hist.lastRev.Load() >= fence })
	if err := reader.UnwatchVariables(ref); err != nil {
		t.Fatal(err)
	}
	return hist.updates()
}

// checkCrashWatchers checks each watcher against the history
// (checkCrashWatcher) and says what each delivered.
func checkCrashWatchers(t *testing.T, r0, fence int64, hist []update, logs ...*watchLog) []string {
	t.Helper()
	var delivered []string
	for _, l := range logs {
		n, resyncs := checkCrashWatcher(t, l, r0, fence, hist)
		delivered = append(delivered, fmt.Sprintf("%s %d (%d RESYNC)", l.name, n, resyncs))
	}
	return delivered
}
