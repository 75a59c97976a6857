package disk_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/disk"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func open(t *testing.T, dir string, so store.Options, do disk.Options) (*store.Store, store.Recovered) {
	t.Helper()
	st, rec, _ := openEngine(t, dir, so, do)
	return st, rec
}

func openEngine(t *testing.T, dir string, so store.Options, do disk.Options) (*store.Store, store.Recovered, *disk.Engine) {
	t.Helper()
	eng, err := disk.Open(dir, do)
	if err != nil {
		t.Fatalf("disk.Open: %v", err)
	}
	so.Engine = eng
	st, rec, err := store.Open(so)
	if err != nil {
		_ = eng.Close()
		t.Fatalf("store.Open: %v", err)
	}
	return st, rec, eng
}

func intVal(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

func register(t *testing.T, st *store.Store, sid, name string, c *pb.Constraints) *pb.Variable {
	t.Helper()
	v, _, err := st.Register(sid, store.Register{Name: name, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0), Constraints: c, Metadata: map[string]string{"unit": "n"}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func set(t *testing.T, st *store.Store, sid string, vals map[string]int64) int64 {
	t.Helper()
	var ws []store.Write
	for id, n := range vals {
		ws = append(ws, store.Write{Identifier: id, Value: intVal(n)})
	}
	res, err := st.Set(sid, ws, map[string]string{"by": "test"}, "tester")
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// state is everything a client can read of a session.
func state(t *testing.T, st *store.Store, sid string) (store.SessionInfo, []*pb.Variable) {
	t.Helper()
	info, err := st.GetSession(sid)
	if err != nil {
		t.Fatal(err)
	}
	vars, _, err := st.List(sid, "")
	if err != nil {
		t.Fatal(err)
	}
	return info, vars
}

// changes reads a session's history from rev through a resumed watch.
func changes(t *testing.T, st *store.Store, sid, incarnation string, from int64) []*store.Change {
	t.Helper()
	w, err := st.Watch(sid, nil, store.WatchOptions{StartRevision: from, Incarnation: incarnation})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var out []*store.Change
	for {
		b, err := w.Poll(1000)
		if err != nil {
			t.Fatal(err)
		}
		if b.Resync != nil {
			t.Fatalf("resume from %d: RESYNC, want the history", from)
		}
		out = append(out, b.Changes...)
		if !b.More {
			return out
		}
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st, rec := open(t, dir, store.Options{}, disk.Options{})
	if rec != (store.Recovered{}) {
		t.Fatalf("fresh directory recovered %+v", rec)
	}
	info0, _, err := st.CreateSessionWithToken("s1", 30*time.Minute, map[string]string{"team": "ml"}, []byte("hash"))
	if err != nil {
		t.Fatal(err)
	}
	a := register(t, st, "s1", "a", &pb.Constraints{Max: proto.Float64(100)})
	b := register(t, st, "s1", "b", nil)
	register(t, st, "s1", "gone", nil)
	for i := range int64(20) {
		set(t, st, "s1", map[string]int64{"a": i, "b": -i})
	}
	if _, _, err := st.Delete("s1", "gone", nil, "tester"); err != nil {
		t.Fatal(err)
	}
	ev := int64(20) // registered at 0, so the first write (0) changed nothing
	if _, err := st.Set("s1", []store.Write{{Identifier: "a", Value: intVal(50), ExpectedVersion: &ev}}, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Set("s1", []store.Write{{Identifier: "a", Value: intVal(500)}}, nil, ""); !errors.Is(err, store.ErrConstraint) {
		t.Fatalf("constraint not kept before restart: %v", err)
	}
	beforeInfo, beforeVars := state(t, st, "s1")
	beforeHist := changes(t, st, "s1", info0.Incarnation, 1)
	st.Close()

	st, rec = open(t, dir, store.Options{}, disk.Options{})
	defer st.Close()
	want := store.Recovered{Sessions: 1, Variables: 2, Changes: int(beforeInfo.Revision)}
	if rec != want {
		t.Errorf("recovered %+v, want %+v", rec, want)
	}
	afterInfo, afterVars := state(t, st, "s1")
	if afterInfo.Incarnation != beforeInfo.Incarnation || afterInfo.Revision != beforeInfo.Revision ||
		afterInfo.TTL != beforeInfo.TTL || !afterInfo.CreatedAt.Equal(beforeInfo.CreatedAt) || afterInfo.Metadata["team"] != "ml" {
		t.Errorf("session after restart %+v, before %+v", afterInfo, beforeInfo)
	}
	if h, ok := st.TokenHash("s1"); !ok || string(h) != "hash" {
		t.Errorf("token hash after restart %q, %v", h, ok)
	}
	if len(afterVars) != len(beforeVars) {
		t.Fatalf("%d variables after restart, %d before", len(afterVars), len(beforeVars))
	}
	for i := range afterVars {
		if !proto.Equal(afterVars[i], beforeVars[i]) {
			t.Errorf("variable after restart\n%v\nbefore\n%v", afterVars[i], beforeVars[i])
		}
	}
	afterHist := changes(t, st, "s1", info0.Incarnation, 1)
	if len(afterHist) != len(beforeHist) {
		t.Fatalf("history: %d changes after restart, %d before", len(afterHist), len(beforeHist))
	}
	for i, c := range afterHist {
		p := beforeHist[i]
		if c.Revision != p.Revision || !c.Time.Equal(p.Time) || c.Source != p.Source || len(c.Items) != len(p.Items) || c.Metadata["by"] != p.Metadata["by"] {
			t.Fatalf("change %d after restart %+v, before %+v", i, c, p)
		}
		for j := range c.Items {
			if c.Items[j].Kind != p.Items[j].Kind || !proto.Equal(c.Items[j].Var, p.Items[j].Var) || !proto.Equal(c.Items[j].Old, p.Items[j].Old) {
				t.Fatalf("change %d item %d differs after restart", i, j)
			}
		}
	}
	// The constraint and the ids came back with the variables.
	if _, err := st.Set("s1", []store.Write{{Identifier: a.Id, Value: intVal(500)}}, nil, ""); !errors.Is(err, store.ErrConstraint) {
		t.Fatalf("constraint after restart: %v", err)
	}
	// Revisions go on from where they were, in the same incarnation.
	if rev := set(t, st, "s1", map[string]int64{b.Id: 7}); rev != beforeInfo.Revision+1 {
		t.Errorf("first revision after restart %d, want %d", rev, beforeInfo.Revision+1)
	}
}

func TestWatchResumesAcrossRestartWithoutResync(t *testing.T) {
	dir := t.TempDir()
	st, _ := open(t, dir, store.Options{}, disk.Options{})
	info, _, _ := st.CreateSession("s", 0, nil)
	register(t, st, "s", "x", nil)
	for i := range int64(10) {
		set(t, st, "s", map[string]int64{"x": i + 1})
	}
	st.Close()
	st, _ = open(t, dir, store.Options{}, disk.Options{})
	defer st.Close()
	got := changes(t, st, "s", info.Incarnation, 5)
	if len(got) != 7 || got[0].Revision != 5 || got[6].Revision != 11 {
		t.Fatalf("resume from 5 after restart: %d changes from %d", len(got), got[0].Revision)
	}
}

func TestHistoryTrimmingFreesRecords(t *testing.T) {
	dir := t.TempDir()
	so := store.Options{HistoryLimit: 5}
	st, _ := open(t, dir, so, disk.Options{})
	st.CreateSession("s", 0, nil)
	register(t, st, "s", "x", nil)
	for i := range int64(100) {
		set(t, st, "s", map[string]int64{"x": i + 1})
	}
	// A burst that trims more than a few records at once (a range delete).
	if _, err := st.Set("s", []store.Write{{Identifier: "x", Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: -1}}}}, nil, ""); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, rec := open(t, dir, so, disk.Options{})
	defer st.Close()
	if rec.Changes != 5 {
		t.Fatalf("%d history records kept on disk, want the window of 5", rec.Changes)
	}
}

func TestCleanupAndRecreateAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	st, _ := open(t, dir, store.Options{}, disk.Options{})
	first, _, _ := st.CreateSession("s", 0, nil)
	register(t, st, "s", "x", nil)
	st.CreateSession("other", 0, nil)
	if _, err := st.CleanupSession("s"); err != nil {
		t.Fatal(err)
	}
	second, _, _ := st.CreateSession("s", 0, nil)
	st.Close()
	st, rec := open(t, dir, store.Options{}, disk.Options{})
	defer st.Close()
	if rec.Sessions != 2 || rec.Variables != 0 {
		t.Fatalf("recovered %+v, want 2 sessions and no variables", rec)
	}
	info, err := st.GetSession("s")
	if err != nil || info.Incarnation != second.Incarnation || info.Incarnation == first.Incarnation {
		t.Fatalf("re-created session came back as %+v (%v); incarnations first %s second %s", info, err, first.Incarnation, second.Incarnation)
	}
}

func TestExpiryCountsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	so := store.Options{Now: clock, SweepInterval: time.Hour}
	st, _ := open(t, dir, so, disk.Options{})
	st.CreateSession("idle", time.Minute, nil)
	st.CreateSession("busy", time.Minute, nil)
	st.CreateSession("watched", time.Minute, nil)
	w, err := st.Watch("watched", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	advance(50 * time.Second)
	register(t, st, "busy", "x", nil) // use: busy's minute starts again
	_ = w                             // watched at the crash: not closed
	st.Close()

	advance(30 * time.Second) // the server is down for 30 s
	st, rec := open(t, dir, so, disk.Options{})
	defer st.Close()
	if rec.Expired != 1 {
		t.Errorf("expired at startup: %d, want 1 (idle: 80 s unused of its minute)", rec.Expired)
	}
	if _, err := st.GetSession("idle"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("idle after restart: %v, want expired", err)
	}
	if _, err := st.GetSession("busy"); err != nil {
		t.Errorf("busy after restart: %v (used 30 s before)", err)
	}
	advance(40 * time.Second) // busy: 70 s unused; watched: 40 s since the restart
	st.Sweep()
	if _, err := st.GetSession("busy"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("busy 70 s after its last use: %v, want expired", err)
	}
	if _, err := st.GetSession("watched"); err != nil {
		t.Errorf("watched session 40 s after the restart: %v; its watchers get a TTL to come back", err)
	}
}

func TestOpenRefusesWhatIsNotItsOwn(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := disk.Open(dir, disk.Options{})
	var oe *disk.OpenError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "not a varbridge data directory") {
		t.Fatalf("open of a foreign directory: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
		t.Fatal("the foreign directory was changed")
	}
}

func TestOpenRefusesDataWithoutItsDatabase(t *testing.T) {
	dir := t.TempDir()
	st, _ := open(t, dir, store.Options{}, disk.Options{})
	st.CreateSession("s", 0, nil)
	st.Close()
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "MANIFEST") || strings.HasPrefix(en.Name(), "CURRENT") || strings.HasPrefix(en.Name(), "marker.") {
			os.Remove(filepath.Join(dir, en.Name()))
		}
	}
	if _, err := disk.Open(dir, disk.Options{}); err == nil {
		t.Fatal("a data directory that lost its database opened (it would start empty over it)")
	}
}

func TestCorruptLogIsRefusedNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	// Quick writes (no fsync): what is damaged is what the log holds.
	st, _ := open(t, dir, store.Options{}, disk.Options{Fsync: disk.FsyncNever})
	st.CreateSession("s", 0, nil)
	register(t, st, "s", "x", nil)
	for i := range int64(3000) {
		set(t, st, "s", map[string]int64{"x": i + 1})
	}
	st.Close()
	damageAndOpen(t, dir, ".log")
}

// randomTensor is a uint8 tensor of n random bytes: incompressible, and
// cheap to check (no UTF-8 to validate, as a string would have).
func randomTensor(n int) *pb.Value {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Shape: []int64{int64(n)}, Dtype: "uint8", Data: b}}}
}

// damageAndOpen flips bytes in the middle of the largest file with the
// suffix and checks that the directory is refused with a message naming
// the file and what to do.
func damageAndOpen(t *testing.T, dir, suffix string) {
	t.Helper()
	victim := largestFile(t, dir, suffix)
	b, err := os.ReadFile(filepath.Join(dir, victim))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 4; i < len(b)/2; i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(filepath.Join(dir, victim), b, 0o600); err != nil {
		t.Fatal(err)
	}
	eng, err := disk.Open(dir, disk.Options{})
	if err == nil {
		var st *store.Store
		st, _, err = store.Open(store.Options{Engine: eng})
		if err == nil {
			st.Close()
		} else {
			_ = eng.Close()
		}
	}
	if err == nil {
		t.Fatalf("opened with %s damaged", victim)
	}
	if !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "--restore") {
		t.Fatalf("error does not name %s and what to do: %v", victim, err)
	}
}

// largestFile returns the largest file in dir whose name ends in suffix.
func largestFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var best string
	var size int64
	for _, en := range entries {
		n := en.Name()
		if !strings.HasSuffix(n, suffix) {
			continue
		}
		info, err := en.Info()
		if err == nil && info.Size() > size {
			best, size = n, info.Size()
		}
	}
	if best == "" {
		t.Fatalf("no %s file in %s", suffix, dir)
	}
	return best
}

func TestSnapshotDuringWritesRestoresIdenticalSessions(t *testing.T) {
	dir := t.TempDir()
	st, _, eng := openEngine(t, dir, store.Options{}, disk.Options{})
	incs := map[string]string{}
	for s := range 3 {
		sid := fmt.Sprintf("s%d", s)
		info, _, _ := st.CreateSession(sid, 0, nil)
		incs[sid] = info.Incarnation
		register(t, st, sid, "x", nil)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := fmt.Sprintf("s%d", s)
			for i := int64(1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.Set(sid, []store.Write{{Identifier: "x", Value: intVal(i)}}, nil, ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	var buf bytes.Buffer
	info, err := eng.Snapshot(&buf)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Files == 0 {
		t.Fatal("empty snapshot")
	}
	st.Close()

	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := disk.Restore(bytes.NewReader(buf.Bytes()), restored); err != nil {
		t.Fatal(err)
	}
	st2, rec := open(t, restored, store.Options{}, disk.Options{})
	defer st2.Close()
	if rec.Sessions != 3 {
		t.Fatalf("restored %d sessions, want 3", rec.Sessions)
	}
	for s := range 3 {
		sid := fmt.Sprintf("s%d", s)
		info, vars := state(t, st2, sid)
		if info.Incarnation == incs[sid] {
			t.Errorf("%s restored in its old incarnation: clients that saw later revisions would resume silently", sid)
		}
		v := vars[0]
		// Consistent: the variable's value is the one its revision says.
		if v.Revision > info.Revision || v.Value.GetIntValue() != v.Version-1 {
			t.Errorf("%s restored inconsistent: revision %d, variable %v", sid, info.Revision, v)
		}
		hist := changes(t, st2, sid, info.Incarnation, 1)
		if int64(len(hist)) != info.Revision {
			t.Errorf("%s: %d history records for revision %d", sid, len(hist), info.Revision)
		}
	}
}

// Large values are kept in chunks: written, overwritten by smaller and
// larger ones, deleted and trimmed from the history, they come back whole
// after a restart, and nothing of a replaced value is left behind (a stray
// chunk would fail the load).
func TestLargeValuesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	so := store.Options{HistoryLimit: 4}
	st, _ := open(t, dir, so, disk.Options{Fsync: disk.FsyncNever})
	st.CreateSession("s", 0, nil)
	big, _, err := st.Register("s", store.Register{Name: "big", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, Value: randomTensor(300 << 10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Register("s", store.Register{Name: "gone", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, Value: randomTensor(100 << 10)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1 << 20, 10, 64 << 10, 4 << 10, 4<<10 + 1, 200 << 10} {
		if _, err := st.Set("s", []store.Write{{Identifier: "big", Value: randomTensor(n)}}, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.Delete("s", "gone", nil, ""); err != nil {
		t.Fatal(err)
	}
	_, beforeVars := state(t, st, "s")
	info, _ := st.GetSession("s")
	beforeHist := changes(t, st, "s", info.Incarnation, info.Revision-3)
	st.Close()

	st, rec := open(t, dir, so, disk.Options{})
	defer st.Close()
	if rec.Variables != 1 || rec.Changes != 4 {
		t.Fatalf("recovered %+v, want 1 variable and a history of 4", rec)
	}
	_, afterVars := state(t, st, "s")
	if len(afterVars) != 1 || !proto.Equal(afterVars[0], beforeVars[0]) || afterVars[0].Id != big.Id {
		t.Fatal("the large variable did not come back whole")
	}
	afterHist := changes(t, st, "s", info.Incarnation, info.Revision-3)
	for i := range afterHist {
		if !proto.Equal(afterHist[i].Items[0].Var, beforeHist[i].Items[0].Var) || !proto.Equal(afterHist[i].Items[0].Old, beforeHist[i].Items[0].Old) {
			t.Fatalf("history record %d did not come back whole", afterHist[i].Revision)
		}
	}
}

// A damaged table of large values is refused at once, naming the file
// (Pebble's bit-flip search over a block of megabytes took hours).
func TestCorruptTableIsRefusedNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	st, _ := open(t, dir, store.Options{}, disk.Options{Fsync: disk.FsyncNever})
	st.CreateSession("s", 0, nil)
	if _, _, err := st.Register("s", store.Register{Name: "big", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, Value: randomTensor(1)}); err != nil {
		t.Fatal(err)
	}
	// More than a memtable's worth (4 MiB), so Pebble writes a table.
	for range 6 {
		if _, err := st.Set("s", []store.Write{{Identifier: "big", Value: randomTensor(1 << 20)}}, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	damageAndOpen(t, dir, ".sst")
}

// Readers and resyncing watchers next to writers whose syncs are in
// flight: reads wait for what they saw to be durable (Barrier), and a
// watch that must resync while changes are in flight settles first. All
// of it goes on without errors, and every watcher ends at the last
// revision.
func TestReadsAndResyncsBesideWritesInFlight(t *testing.T) {
	st, _, eng := openEngine(t, t.TempDir(), store.Options{HistoryLimit: 2}, disk.Options{})
	defer st.Close()
	if err := eng.Barrier(); err != nil {
		t.Fatalf("Barrier on an idle engine: %v", err)
	}
	st.CreateSession("s", 0, nil)
	register(t, st, "s", "x", nil)
	const writers, writes = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				if _, err := st.Set("s", []store.Write{{Identifier: "x", Value: intVal(int64(w*1000 + i + 1))}}, nil, ""); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := st.Get("s", "x"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// A watcher that polls rarely falls behind the window of 2 and
	// resyncs, with writes in flight.
	w, err := st.Watch("s", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var last int64
	resyncs := 0
	poll := func() {
		for {
			b, err := w.Poll(100)
			if err != nil {
				t.Fatal(err)
			}
			if b.Settle {
				if err := w.Settle(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if b.Resync != nil {
				resyncs++
				last = b.Resync.Revision
			}
			for _, c := range b.Changes {
				if c.Revision <= last {
					t.Fatalf("revision %d after %d", c.Revision, last)
				}
				last = c.Revision
			}
			if !b.More {
				return
			}
		}
	}
	for range 20 {
		time.Sleep(5 * time.Millisecond)
		poll()
	}
	wg.Wait()
	poll()
	info, _ := st.GetSession("s")
	if last != info.Revision {
		t.Fatalf("the watcher ended at %d, the session at %d", last, info.Revision)
	}
	t.Logf("%d resyncs", resyncs)
}
