package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/etcd"
	"github.com/varbridge/varbridge/internal/etcdtest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// servers opens n stores on one etcd cluster, as n varbridge servers.
func servers(t *testing.T, c *etcdtest.Cluster, n int, tune ...func(*etcd.Options, *store.Options)) []*store.Store {
	t.Helper()
	out := make([]*store.Store, n)
	for i := range out {
		_, out[i] = server(t, c, tune...)
	}
	return out
}

// server opens one store on the cluster, under the test's own prefix, and
// returns its engine too.
func server(t *testing.T, c *etcdtest.Cluster, tune ...func(*etcd.Options, *store.Options)) (*etcd.Engine, *store.Store) {
	t.Helper()
	eo := etcd.Options{Endpoints: c.Endpoints(), Prefix: "/t/" + t.Name() + "/", RequestTimeout: 3 * time.Second, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))}
	so := store.Options{}
	for _, f := range tune {
		f(&eo, &so)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	eng, err := etcd.Open(ctx, eo)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	so.Engine = eng
	st, _, err := store.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return eng, st
}

func intVal(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

func register(t *testing.T, st *store.Store, sid, name string, v int64) *pb.Variable {
	t.Helper()
	pv, _, err := st.Register(sid, store.Register{Name: name, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(v)})
	if err != nil {
		t.Fatal(err)
	}
	return pv
}

func set(t *testing.T, st *store.Store, sid string, vals map[string]int64) int64 {
	t.Helper()
	var ws []store.Write
	for k, v := range vals {
		ws = append(ws, store.Write{Identifier: k, Value: intVal(v)})
	}
	res, err := st.Set(sid, ws, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// seen is what a watch delivered: each change's revision and its items'
// "name=value", and the resyncs.
type seen struct {
	revs    []int64
	items   map[int64][]string
	resyncs int
}

// collect polls w until it has covered revision upto, or fails after 15 s.
func collect(t *testing.T, w *store.Watch, upto int64) seen {
	t.Helper()
	s := seen{items: map[int64][]string{}}
	deadline := time.After(15 * time.Second)
	for {
		b, err := w.Poll(1000)
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if b.Settle {
			if err := w.Settle(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if b.Resync != nil {
			s.resyncs++
		}
		for _, c := range b.Changes {
			s.revs = append(s.revs, c.Revision)
			for _, it := range c.Items {
				s.items[c.Revision] = append(s.items[c.Revision], fmt.Sprintf("%s=%d", it.Var.Name, it.Var.Value.GetIntValue()))
			}
		}
		if b.Covered >= upto {
			return s
		}
		if b.More {
			continue
		}
		select {
		case <-w.Wake():
		case <-deadline:
			t.Fatalf("watch covered revision %d, waiting for %d", b.Covered, upto)
		}
	}
}

func TestTwoServersShareOneTruth(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 2)
	a, b := s[0], s[1]
	info, created, err := a.CreateSession("shared", 0, map[string]string{"team": "ml"})
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	binfo, created, err := b.CreateSession("shared", 0, nil)
	if err != nil || created || binfo.Incarnation != info.Incarnation || binfo.Metadata["team"] != "ml" {
		t.Fatalf("B joins A's session: created %v, %+v, %v", created, binfo, err)
	}
	register(t, a, "shared", "temperature", 1)
	if v, rev, err := b.Get("shared", "temperature"); err != nil || v.Value.GetIntValue() != 1 || rev != 1 {
		t.Fatalf("B reads A's register: %v rev %d %v", v, rev, err)
	}
	if rev := set(t, b, "shared", map[string]int64{"temperature": 2}); rev != 2 {
		t.Fatalf("B's write took revision %d, want 2", rev)
	}
	v, rev, err := a.Get("shared", "temperature")
	if err != nil || v.Value.GetIntValue() != 2 || v.Version != 2 || rev != 2 {
		t.Fatalf("A reads B's write: %v rev %d %v", v, rev, err)
	}
	// A compare-and-set decided on A's copy, which B's write made stale
	// only in etcd.
	set(t, b, "shared", map[string]int64{"temperature": 3})
	one := int64(2)
	_, err = a.Set("shared", []store.Write{{Identifier: "temperature", Value: intVal(9), ExpectedVersion: &one}}, nil, "a")
	var vc *store.VersionConflictError
	if !errors.As(err, &vc) || vc.Actual != 3 {
		t.Fatalf("stale compare-and-set on A: %v, want a conflict at version 3", err)
	}
	three := int64(3)
	if _, err := a.Set("shared", []store.Write{{Identifier: "temperature", Value: intVal(9), ExpectedVersion: &three}}, nil, "a"); err != nil {
		t.Fatalf("compare-and-set at the version B wrote: %v", err)
	}
	// A no-op on B's copy is not one in etcd.
	if res, err := b.Set("shared", []store.Write{{Identifier: "temperature", Value: intVal(3)}}, nil, "b"); err != nil || len(res.Changed) != 1 {
		t.Fatalf("write of B's stale value: %+v %v, want a change", res, err)
	}
	// A name registered on A is taken on B.
	if _, _, err := b.Register("shared", store.Register{Name: "temperature", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("register on B of A's name: %v", err)
	}
	list, err := b.ListSessions("")
	if err != nil || len(list) != 1 || list[0].ID != "shared" || list[0].Revision != 5 {
		t.Fatalf("sessions from B: %+v %v", list, err)
	}
}

func TestWatchOnOneServerSeesWritesThroughAnother(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 2)
	a, b := s[0], s[1]
	if _, _, err := a.CreateSession("w", 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"x", "y", "z"} {
		register(t, a, "w", n, 0)
	}
	w, err := b.Watch("w", nil, store.WatchOptions{IncludeInitial: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	initial, snap := w.Initial()
	if len(initial) != 3 || snap != 3 {
		t.Fatalf("initial values %d at revision %d", len(initial), snap)
	}
	// Writers on both servers at once: every revision once, in order,
	// batches whole and ordered by name.
	const per = 40
	var wg sync.WaitGroup
	for i, st := range s {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				if k%4 == 0 {
					if _, err := st.Set("w", []store.Write{{Identifier: "z", Value: intVal(int64(1000*i + k + 1))}, {Identifier: "x", Value: intVal(int64(1000*i + k + 1))}}, nil, "batch"); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if _, err := st.Set("w", []store.Write{{Identifier: "y", Value: intVal(int64(1000*i + k + 1))}}, nil, "one"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := int64(3 + 2*per)
	got := collect(t, w, last)
	if got.resyncs != 0 {
		t.Fatalf("%d resyncs", got.resyncs)
	}
	if len(got.revs) != 2*per {
		t.Fatalf("watch on B saw %d changes, want %d", len(got.revs), 2*per)
	}
	for i, r := range got.revs {
		if r != int64(4+i) {
			t.Fatalf("change %d has revision %d, want %d (revisions %v)", i, r, 4+i, got.revs)
		}
		if items := got.items[r]; len(items) == 2 && (items[0][0] != 'x' || items[1][0] != 'z') {
			t.Fatalf("batch at %d out of name order: %v", r, items)
		}
	}
}

func TestResumeOnAnotherServer(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 2)
	a, b := s[0], s[1]
	info, _, err := a.CreateSession("r", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	register(t, a, "r", "v", 0)
	w, err := a.Watch("r", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		set(t, a, "r", map[string]int64{"v": int64(i + 1)})
	}
	first := collect(t, w, 6)
	w.Close() // server A "dies"; more writes land meanwhile through B
	for i := range 5 {
		set(t, b, "r", map[string]int64{"v": int64(10 + i)})
	}
	w2, err := b.Watch("r", nil, store.WatchOptions{StartRevision: 7, Incarnation: info.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	set(t, a, "r", map[string]int64{"v": 99})
	rest := collect(t, w2, 12)
	all := append(first.revs, rest.revs...)
	if rest.resyncs != 0 || len(all) != 11 {
		t.Fatalf("revisions across the move: %v (%d resyncs)", all, rest.resyncs)
	}
	for i, r := range all {
		if r != int64(2+i) {
			t.Fatalf("revisions across the move: %v", all)
		}
	}
	// A watch that resumes in another incarnation resyncs.
	w3, err := b.Watch("r", nil, store.WatchOptions{StartRevision: 3, Incarnation: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	defer w3.Close()
	if got := collect(t, w3, 12); got.resyncs != 1 {
		t.Fatalf("resume from another incarnation: %d resyncs", got.resyncs)
	}
}

func TestCleanupAndExpiryReachEveryServer(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 2)
	a, b := s[0], s[1]
	first, _, err := a.CreateSession("gone", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	register(t, a, "gone", "v", 0)
	w, err := b.Watch("gone", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := a.CleanupSession("gone"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("B's watch did not end with A's cleanup")
	}
	var sc *store.SessionClosedError
	if !errors.As(w.Err(), &sc) || sc.Cause != store.ClosedCleanedUp {
		t.Fatalf("B's watch ended with %v, want cleaned up", w.Err())
	}
	if _, _, err := b.Get("gone", "v"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Fatalf("B reads a cleaned-up session: %v", err)
	}
	again, created, err := b.CreateSession("gone", 0, nil)
	if err != nil || !created || again.Incarnation == first.Incarnation {
		t.Fatalf("re-created: %v %+v %v", created, again, err)
	}

	// A session's TTL is its etcd lease: it expires for every server at
	// once, unless a server watches it.
	if _, _, err := a.CreateSession("short", 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateSession("kept", 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	kw, err := b.Watch("kept", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer kw.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := b.GetSession("short")
		if errors.Is(err, store.ErrSessionNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 2s session is still there: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := a.GetSession("kept"); err != nil {
		t.Fatalf("a session watched on B expired: %v", err)
	}
}

func TestEtcdLimitsAreNamed(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 1, func(eo *etcd.Options, _ *store.Options) { eo.MaxTxnOps = 16 })
	a := s[0]
	if _, _, err := a.CreateSession("big", 0, nil); err != nil {
		t.Fatal(err)
	}
	vals := map[string]int64{}
	for i := range 20 {
		n := fmt.Sprintf("v%02d", i)
		register(t, a, "big", n, 0)
		vals[n] = 1
	}
	var le *store.LimitError
	var ws []store.Write
	for k, v := range vals {
		ws = append(ws, store.Write{Identifier: k, Value: intVal(v)})
	}
	if _, err := a.Set("big", ws, nil, ""); !errors.As(err, &le) || le.Limit != "etcd_max_txn_ops" || le.Max != 16 {
		t.Fatalf("a batch past etcd's ops per transaction: %v", err)
	}
	huge := &pb.Value{Kind: &pb.Value_StringValue{StringValue: string(make([]byte, 1<<20))}}
	if _, _, err := a.Register("big", store.Register{Name: "blob", Type: pb.VariableType_VARIABLE_TYPE_STRING, Value: huge}); !errors.As(err, &le) || le.Limit != "etcd_max_request_bytes" {
		t.Fatalf("a value past etcd's request size: %v", err)
	}
	// Refused whole: nothing of either is kept.
	if info, err := a.GetSession("big"); err != nil || info.Revision != 20 {
		t.Fatalf("after the refusals: %+v %v", info, err)
	}
}

func TestCutOffFromEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 1, func(eo *etcd.Options, _ *store.Options) {
		eo.RequestTimeout, eo.HealthInterval = time.Second, 100*time.Millisecond
	})
	a := s[0]
	if _, _, err := a.CreateSession("cut", 0, nil); err != nil {
		t.Fatal(err)
	}
	register(t, a, "cut", "v", 0)
	w, err := a.Watch("cut", nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c.Kill(0)
	select {
	case <-w.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the watch went on while its server could not reach etcd")
	}
	var sc *store.SessionClosedError
	if !errors.As(w.Err(), &sc) || sc.Cause != store.ClosedUnavailable {
		t.Fatalf("watch ended with %v, want unavailable", w.Err())
	}
	var ue *store.UnavailableError
	if _, err := a.Set("cut", []store.Write{{Identifier: "v", Value: intVal(1)}}, nil, ""); !errors.As(err, &ue) {
		t.Fatalf("write while cut off: %v", err)
	}
	if _, _, err := a.Get("cut", "v"); !errors.As(err, &ue) {
		t.Fatalf("read while cut off: %v, want unavailable rather than a stale value", err)
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// A server whose copy fell behind the history window (kept in etcd, and
// trimmed there by the writing server) reloads the session whole, and a
// resume from before the window resyncs, as on one server.
func TestCopyBehindTheWindowReloads(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := servers(t, c, 2, func(_ *etcd.Options, so *store.Options) { so.HistoryLimit = 5 })
	a, b := s[0], s[1]
	if _, _, err := a.CreateSession("win", 0, nil); err != nil {
		t.Fatal(err)
	}
	register(t, a, "win", "v", 0)
	if _, _, err := b.Get("win", "v"); err != nil { // B holds a copy at revision 1
		t.Fatal(err)
	}
	for i := range 20 {
		set(t, a, "win", map[string]int64{"v": int64(i + 1)})
	}
	v, rev, err := b.Get("win", "v")
	if err != nil || v.Value.GetIntValue() != 20 || v.Version != 21 || rev != 21 {
		t.Fatalf("B after the window moved on: %v rev %d %v", v, rev, err)
	}
	info, err := b.GetSession("win")
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.Watch("win", nil, store.WatchOptions{StartRevision: 3, Incarnation: info.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := collect(t, w, 21); got.resyncs != 1 || len(got.revs) != 0 {
		t.Fatalf("resume from before the window: %+v", got)
	}
	w2, err := b.Watch("win", nil, store.WatchOptions{StartRevision: 18, Incarnation: info.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if got := collect(t, w2, 21); got.resyncs != 0 || len(got.revs) != 4 {
		t.Fatalf("resume inside the window: %+v", got)
	}
}

// A follower that starts (or restarts) below etcd's compaction revision
// says it is behind, so that the store syncs from varbridge's own history,
// and then goes on with the changes after.
func TestFollowBelowCompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	eng, st := server(t, c)
	if _, _, err := st.CreateSession("c", 0, nil); err != nil {
		t.Fatal(err)
	}
	register(t, st, "c", "v", 0)
	sv, err := eng.Find("c")
	if err != nil || sv == nil {
		t.Fatalf("find: %v %v", sv, err)
	}
	for i := range 5 {
		set(t, st, "c", map[string]int64{"v": int64(i + 1)})
	}
	cli := c.Client()
	resp, err := cli.Get(ctx, "/t/"+t.Name()+"/format")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	events := make(chan store.FollowEvent, 100)
	stop := eng.Follow(&sv.Session, sv.Fence, func(ev store.FollowEvent) { events <- ev })
	defer stop()
	next := func() store.FollowEvent {
		select {
		case ev := <-events:
			return ev
		case <-ctx.Done():
			t.Fatal("no follow event")
			return store.FollowEvent{}
		}
	}
	if ev := next(); !ev.Behind {
		t.Fatalf("first event below the compaction: %+v, want Behind", ev)
	}
	set(t, st, "c", map[string]int64{"v": 99})
	for {
		ev := next()
		if ev.Change != nil && ev.Change.Revision == 7 {
			break
		}
	}
}

// A write whose session lease is gone (it expired under the write) is
// refused as stale, etcd's own error told apart by its code, so that the
// store's sync finds the session gone rather than reporting etcd down.
func TestWriteOnAGoneLeaseIsStale(t *testing.T) {
	c := etcdtest.Start(t, 1)
	eng, st := server(t, c)
	if _, _, err := st.CreateSession("l", 0, nil); err != nil {
		t.Fatal(err)
	}
	sv, err := eng.Find("l")
	if err != nil || sv == nil {
		t.Fatalf("find: %v %v", sv, err)
	}
	rec := sv.Session
	rec.Lease, rec.Revision = 0x7fff_0000_0001, rec.Revision+1 // a lease etcd never granted
	_, err = eng.Save(&store.Mutation{Session: &rec, Change: &store.Change{Revision: rec.Revision, Time: time.Now()}, Fence: sv.Fence})
	if !errors.Is(err, store.ErrStale) {
		t.Fatalf("a write on a lease that is gone: %v, want ErrStale", err)
	}
}
