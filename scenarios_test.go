package varbridge_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	. "github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/local"
)

// Seed scenario 1: a watched integer set 1 -> 2 through the store with
// metadata source "test" reaches the watcher as (identifier as passed, 1, 2,
// meta with that source).
func TestSeedIntegerChangeReachesWatcher(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		v := MustRegister(t, e.p, "streamed", TypeInteger, 1)
		for _, ident := range []string{"streamed", v.ID} {
			rec := NewRecorder()
			ctx, cancel := context.WithCancel(context.Background())
			ref := MustWatch(t, e.p, ctx, []string{ident}, rec.Watch)
			want := int64(2)
			if ident == v.ID {
				want = 3
			}
			rev := e.set(t, "streamed", want, map[string]string{"source": "test"})
			u := rec.Next(t)
			if u.Identifier != ident || u.Old != want-1 || u.New != want {
				t.Fatalf("got (%q, %v, %v), want (%q, %d, %d)", u.Identifier, u.Old, u.New, ident, want-1, want)
			}
			if u.Meta.Source != "test" || u.Meta.Metadata["source"] != "test" || u.Meta.Revision != rev ||
				u.Meta.Initial || u.Meta.Name != "streamed" || u.Meta.Type != TypeInteger || u.Meta.VariableID != v.ID {
				t.Fatalf("meta = %+v", u.Meta)
			}
			if err := e.p.UnwatchVariables(ref); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
	})
}

// Seed scenario 2: killing a consumer shows it not alive in ListWatchers.
// Here the consumer's context is cancelled; TestBridgedGivesUpAfterMaxFailures
// kills one by cutting its connection for good.
func TestSeedKilledConsumerNotAlive(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "test", TypeString, "initial")
		ctx, cancel := context.WithCancel(context.Background())
		ref := MustWatch(t, e.p, ctx, []string{"test"}, func(string, any, any, UpdateMeta) {})
		if wi := WatchInfoOf(t, e.p, ref); !wi.Alive || wi.Identifiers[0] != "test" {
			t.Fatalf("before: %+v", wi)
		}
		cancel()
		Eventually(t, "the watch to die", func() bool { return !WatchInfoOf(t, e.p, ref).Alive })
		wi := WatchInfoOf(t, e.p, ref)
		if wi.Reason == "" || wi.LastError != nil {
			t.Fatalf("after cancel: %+v", wi)
		}
		Eventually(t, "the observer to go", func() bool { return e.watchCount() == 0 })
		if err := e.p.UnwatchVariables(ref); err != nil {
			t.Fatalf("unwatch a dead watch: %v", err)
		}
		if len(e.p.ListWatchers()) != 0 {
			t.Fatal("an unwatched watch is still listed")
		}
	})
}

// Seed scenario 3: a float filter abs(new-old) > 1.0 suppresses 20.0 -> 20.5
// and delivers 22.0.
func TestSeedFloatFilter(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "temp", TypeFloat, 20.0)
		rec := NewRecorder()
		ref := MustWatch(t, e.p, context.Background(), []string{"temp"}, rec.Watch,
			WithFilter(func(old, new any) bool { return math.Abs(new.(float64)-old.(float64)) > 1.0 }))
		e.set(t, "temp", 20.5, nil)
		rev := e.set(t, "temp", 22.0, nil)
		// Delivery is in order, so 22.0 arriving first shows 20.5 was dropped.
		if u := rec.Next(t); u.New != 22.0 || u.Old != 20.5 || u.Meta.Revision != rev {
			t.Fatalf("first delivered update = %+v, want 20.5 -> 22.0", u)
		}
		// The watch records the revision once the watcher call has returned,
		// which can be just after the recorder handed the update over.
		var wi WatchInfo
		Eventually(t, "the watch's last revision to reach the write's", func() bool {
			wi = WatchInfoOf(t, e.p, ref)
			return wi.LastRevision == rev
		})
		if wi.UpdatesFiltered != 1 || wi.UpdatesReceived != 2 {
			t.Fatalf("stats = %+v", wi)
		}
	})
}

func TestInitialValuesThenChanges(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "b", TypeString, "x")
		MustRegister(t, e.p, "a", TypeFloat, 1.5)
		rec := NewRecorder()
		MustWatch(t, e.p, context.Background(), []string{"b", "a"}, rec.Watch, WithInitialValues(true))
		u1, u2 := rec.Next(t), rec.Next(t)
		if u1.Identifier != "a" || u1.New != 1.5 || u1.Old != nil || !u1.Meta.Initial ||
			u2.Identifier != "b" || u2.New != "x" || !u2.Meta.Initial || u1.Meta.Revision != 2 || u2.Meta.Revision != 2 {
			t.Fatalf("initial values: %+v, %+v", u1, u2)
		}
		e.set(t, "b", "y", nil)
		if u := rec.Next(t); u.Identifier != "b" || u.Old != "x" || u.New != "y" || u.Meta.Initial {
			t.Fatalf("change: %+v", u)
		}
	})
}

// A batch arrives as consecutive updates of one revision.
func TestBatchDeliveredTogether(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		for _, n := range []string{"x", "y", "z"} {
			MustRegister(t, e.p, n, TypeInteger, 0)
		}
		rec := NewRecorder()
		MustWatch(t, e.p, context.Background(), nil, rec.Watch)
		res, err := e.p.SetMany(context.Background(), map[string]any{"x": 1, "y": 2, "z": 3},
			WithSource("go"), WithMetadata(map[string]string{"k": "v"}))
		if err != nil {
			t.Fatal(err)
		}
		rev := res["x"].Revision
		var got []string
		for range 3 {
			u := rec.Next(t)
			if u.Meta.Revision != rev || u.Meta.Source != "go" || u.Meta.Metadata["k"] != "v" {
				t.Fatalf("batch member %+v", u)
			}
			got = append(got, u.Identifier)
		}
		sort.Strings(got)
		if !slices.Equal(got, []string{"x", "y", "z"}) {
			t.Fatalf("batch members %v", got)
		}
	})
}

func TestDeleteDelivered(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "gone", TypeBoolean, true)
		MustRegister(t, e.p, "stays", TypeBoolean, true)
		rec := NewRecorder()
		MustWatch(t, e.p, context.Background(), []string{"gone", "stays"}, rec.Watch)
		if err := e.p.Delete(context.Background(), "gone", WithSource("deleter")); err != nil {
			t.Fatal(err)
		}
		u := rec.Next(t)
		if u.Identifier != "gone" || !u.Meta.Deleted || u.Old != true || u.New != nil || u.Meta.Source != "deleter" {
			t.Fatalf("delete update %+v", u)
		}
		e.set(t, "stays", false, nil)
		if u := rec.Next(t); u.Identifier != "stays" || u.New != false {
			t.Fatalf("after delete %+v", u)
		}
	})
}

func TestUnwatchAndCancelLeaveNoObserver(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "v", TypeInteger, 0)
		refs := make([]WatchRef, 3)
		for i := range refs {
			refs[i] = MustWatch(t, e.p, context.Background(), []string{"v"}, func(string, any, any, UpdateMeta) {})
		}
		ctx, cancel := context.WithCancel(context.Background())
		MustWatch(t, e.p, ctx, []string{"v"}, func(string, any, any, UpdateMeta) {})
		// WatchVariables returns once the observer is registered, on both.
		if n := e.watchCount(); n != 4 {
			t.Fatalf("server-side watch count %d, want 4", n)
		}
		if n := e.sessionWatchCount(t); n != 4 {
			t.Fatalf("session watch_count %d, want 4", n)
		}
		cancel()
		Eventually(t, "cancel to remove the observer", func() bool { return e.watchCount() == 3 })
		for i, ref := range refs {
			if err := e.p.UnwatchVariables(ref); err != nil {
				t.Fatal(err)
			}
			want := len(refs) - 1 - i
			Eventually(t, "unwatch to remove the observer", func() bool { return e.watchCount() == want })
		}
		if err := e.p.UnwatchVariables(refs[0]); !errors.Is(err, ErrUnknownWatch) {
			t.Fatalf("unwatch twice: %v, want ErrUnknownWatch", err)
		}
		if err := e.p.UnwatchVariables(WatchRef{}); !errors.Is(err, ErrUnknownWatch) {
			t.Fatalf("unwatch zero ref: %v", err)
		}
	})
}

func TestMissingIdentifiersListed(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "here", TypeInteger, 0)
		_, err := e.p.WatchVariables(context.Background(), []string{"nope1", "here", "nope2"}, func(string, any, any, UpdateMeta) {})
		var nf *NotFoundError
		if !errors.Is(err, ErrNotFound) || !errors.As(err, &nf) || !slices.Equal(nf.Identifiers, []string{"nope1", "nope2"}) {
			t.Fatalf("err = %v (%#v)", err, nf)
		}
		if e.watchCount() != 0 || len(e.p.ListWatchers()) != 0 {
			t.Fatal("a failed watch left something behind")
		}
	})
}

func TestPanickingWatcherCountedWatchGoesOn(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "p", TypeInteger, 0)
		rec := NewRecorder()
		ref := MustWatch(t, e.p, context.Background(), []string{"p"}, func(id string, old, new any, m UpdateMeta) {
			if new == int64(1) {
				panic("boom")
			}
			rec.Watch(id, old, new, m)
		}, WithFilter(func(old, new any) bool {
			if new == int64(2) {
				panic("filter boom") // counts as "notify"
			}
			return true
		}))
		e.set(t, "p", 1, nil)
		e.set(t, "p", 2, nil)
		if u := rec.Next(t); u.New != int64(2) || u.Old != int64(1) {
			t.Fatalf("after the panic: %+v", u)
		}
		if wi := WatchInfoOf(t, e.p, ref); !wi.Alive || wi.Panics != 2 || wi.UpdatesReceived != 2 {
			t.Fatalf("stats %+v", wi)
		}
	})
}

// Many writers race a watch opened mid-stream with initial values: the
// watcher sees the snapshot at R, then exactly the committed revisions
// after R, in order.
func TestConcurrentWritersNoGapNoDuplicate(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		names := []string{"w0", "w1", "w2", "w3"}
		for _, n := range names {
			MustRegister(t, e.p, n, TypeInteger, 0)
		}
		const perWriter = 300
		var (
			mu        sync.Mutex
			committed []int64
			wg        sync.WaitGroup
			started   = make(chan struct{})
		)
		for i, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 1; k <= perWriter; k++ {
					if k == perWriter/3 && i == 0 {
						close(started)
					}
					v, err := e.p.Set(context.Background(), n, int64(k))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					committed = append(committed, v.Revision)
					mu.Unlock()
				}
			}()
		}
		<-started
		rec := NewRecorder()
		MustWatch(t, e.p, context.Background(), names, rec.Watch, WithInitialValues(true))
		wg.Wait()
		var initial []Update
		for range names {
			initial = append(initial, rec.Next(t))
		}
		snap := initial[0].Meta.Revision
		for _, u := range initial {
			if !u.Meta.Initial || u.Meta.Revision != snap {
				t.Fatalf("initial value %+v", u)
			}
		}
		var want []int64
		for _, r := range committed {
			if r > snap {
				want = append(want, r)
			}
		}
		slices.Sort(want)
		got := make([]int64, 0, len(want))
		for len(got) < len(want) {
			got = append(got, rec.Next(t).Meta.Revision)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("revisions after the snapshot differ: got %d, want %d", len(got), len(want))
		}
		if u, ok := rec.Poll(); ok {
			t.Fatalf("an extra update: %+v", u)
		}
	})
}

func TestSessionCleanupEndsWatch(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "v", TypeInteger, 0)
		errc := make(chan error, 1)
		ref := MustWatch(t, e.p, context.Background(), []string{"v"}, func(string, any, any, UpdateMeta) {},
			WithErrorHandler(func(err error) { errc <- err }), WithBackoff(time.Millisecond, time.Millisecond))
		if _, err := e.st.CleanupSession(e.p.SessionID()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("error handler got %v, want ErrSessionClosed", err)
			}
		case <-time.After(WaitTimeout):
			t.Fatal("the error handler was not called")
		}
		if wi := WatchInfoOf(t, e.p, ref); wi.Alive || !errors.Is(wi.LastError, ErrSessionClosed) {
			t.Fatalf("after cleanup: %+v", wi)
		}
		if _, err := e.p.Get(context.Background(), "v"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("get after cleanup: %v", err)
		}
	})
}

// The channel and iterator forms.
func TestWatchChannelAndIterator(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "c", TypeInteger, 0)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := Watch(ctx, e.p, []string{"c"}, WithInitialValues(true))
		if err != nil {
			t.Fatal(err)
		}
		if u := <-ch; !u.Meta.Initial || u.New != int64(0) {
			t.Fatalf("channel initial %+v", u)
		}
		e.set(t, "c", 1, nil)
		if u := <-ch; u.New != int64(1) {
			t.Fatalf("channel change %+v", u)
		}
		cancel()
		for range ch { // closes
		}
		if len(e.p.ListWatchers()) != 0 {
			t.Fatal("the channel watch is still listed")
		}

		done := make(chan []int64)
		go func() {
			var got []int64
			for u, err := range Updates(context.Background(), e.p, []string{"c"}) {
				if err != nil {
					t.Error(err)
					break
				}
				got = append(got, u.New.(int64))
				if len(got) == 3 {
					break
				}
			}
			done <- got
		}()
		Eventually(t, "the iterator's watch", func() bool { return len(e.p.ListWatchers()) == 1 })
		for i := int64(2); i <= 4; i++ {
			e.set(t, "c", i, nil)
		}
		if got := <-done; !slices.Equal(got, []int64{2, 3, 4}) {
			t.Fatalf("iterator got %v", got)
		}
		if len(e.p.ListWatchers()) != 0 {
			t.Fatal("the iterator's watch is still listed after break")
		}
		for u, err := range Updates(context.Background(), e.p, []string{"nope"}) {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("iterator over a missing variable: %v, %+v", err, u)
			}
		}
	})
}

// A watch resuming from a revision the history no longer holds gets the
// current values flagged Resync, then goes on.
func TestResyncSurfaced(t *testing.T) {
	opts := store.Options{HistoryLimit: 4}
	run := func(t *testing.T, e env) {
		MustRegister(t, e.p, "r", TypeInteger, 0)
		for i := int64(1); i <= 10; i++ {
			e.set(t, "r", i, nil)
		}
		rec := NewRecorder()
		ref := MustWatch(t, e.p, context.Background(), []string{"r"}, rec.Watch, WithStartRevision(2))
		if u := rec.Next(t); !u.Meta.Resync || u.New != int64(10) || u.Old != nil || u.Meta.Revision != 11 {
			t.Fatalf("resync update %+v", u)
		}
		rev := e.set(t, "r", 11, nil)
		if u := rec.Next(t); u.Meta.Resync || u.New != int64(11) || u.Meta.Revision != rev {
			t.Fatalf("after resync %+v", u)
		}
		// Recorded once the watcher call has returned (see TestSeedFloatFilter).
		Eventually(t, "the watch's last revision to reach the write's", func() bool {
			return WatchInfoOf(t, e.p, ref).LastRevision == rev
		})
	}
	t.Run("local", func(t *testing.T) {
		st := store.New(opts)
		defer st.Close()
		run(t, newLocalEnvOn(t, st))
	})
	t.Run("bridged", func(t *testing.T) {
		e, _ := newBridgedEnv(t, opts)
		run(t, e)
	})
}

// Seed parity (issue 10): a compare-and-set that finds another version
// fails with a VersionConflictError carrying both versions, matching
// ErrVersionConflict, from either provider; SetMany's too.
func TestVersionConflictError(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		ctx := context.Background()
		MustRegister(t, e.p, "v", TypeInteger, int64(0))
		if _, err := e.p.Set(ctx, "v", int64(1)); err != nil {
			t.Fatal(err)
		}
		_, err := e.p.Set(ctx, "v", int64(2), WithExpectedVersion(5))
		var vc *VersionConflictError
		if !errors.As(err, &vc) || !errors.Is(err, ErrVersionConflict) {
			t.Fatalf("Set with a stale version: %v", err)
		}
		if vc.Variable != "v" || vc.Expected != 5 || vc.Actual != 2 {
			t.Fatalf("conflict %+v (%v), want v expected 5 actual 2", vc, err)
		}
		_, err = e.p.SetMany(ctx, map[string]any{"v": int64(3)}, WithExpectedVersions(map[string]int64{"v": 1}))
		if !errors.As(err, &vc) || vc.Variable != "v" || vc.Expected != 1 || vc.Actual != 2 {
			t.Fatalf("SetMany with a stale version: %v (%+v)", err, vc)
		}
	})
}

// Issue 10 item 5: the members of an atomic SetMany reach a watcher ordered
// by variable name, whatever order the map or the registration gave, on
// both providers.
func TestSetManyDeliveredByName(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		ctx := context.Background()
		names := []string{"zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "chi"}
		for _, n := range names {
			MustRegister(t, e.p, n, TypeInteger, int64(0))
		}
		rec := NewRecorder()
		MustWatch(t, e.p, ctx, nil, rec.Watch)
		want := slices.Clone(names)
		sort.Strings(want)
		for round := int64(1); round <= 20; round++ {
			updates := map[string]any{}
			for _, n := range names {
				updates[n] = round
			}
			if _, err := e.p.SetMany(ctx, updates); err != nil {
				t.Fatal(err)
			}
			var got []string
			for range names {
				got = append(got, rec.Next(t).Identifier)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d delivered %v, want %v", round, got, want)
			}
		}
	})
}

// WatchVariables delivers no initial values unless asked (the seed's
// include_initial: false, as Python's watch_variables and the CLI).
func TestWatchVariablesNoInitialByDefault(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		MustRegister(t, e.p, "q", TypeInteger, int64(1))
		rec := NewRecorder()
		MustWatch(t, e.p, context.Background(), []string{"q"}, rec.Watch)
		rev := e.set(t, "q", int64(2), nil)
		if u := rec.Next(t); u.Meta.Initial || u.New != int64(2) || u.Meta.Revision != rev {
			t.Fatalf("first update %+v, want the change to 2", u)
		}
		MustWatch(t, e.p, context.Background(), []string{"q"}, rec.Watch, WithInitialValues())
		if u := rec.Next(t); !u.Meta.Initial || u.New != int64(2) {
			t.Fatalf("with WithInitialValues(): %+v", u)
		}
		MustWatch(t, e.p, context.Background(), []string{"q"}, rec.Watch, WithInitialValues(false))
		rev = e.set(t, "q", int64(3), nil)
		for range 3 { // the change, to each of the three watches, and no initial value
			if u := rec.Next(t); u.Meta.Initial || u.New != int64(3) || u.Meta.Revision != rev {
				t.Fatalf("after WithInitialValues(false): %+v", u)
			}
		}
	})
}

// Issue 10 item 4: Heartbeat restarts the session's TTL and describes the
// session, on both providers.
func TestHeartbeat(t *testing.T) {
	ttl := 2 * time.Second
	check := func(t *testing.T, hb func(context.Context) (*SessionInfo, error), id string) {
		t.Helper()
		first, err := hb(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if first.ID != id || first.Incarnation == "" || first.TTL != ttl || first.Revision != 1 || first.VariableCount != 1 {
			t.Fatalf("heartbeat %+v", first)
		}
		time.Sleep(50 * time.Millisecond)
		second, err := hb(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !second.ExpiresAt.After(first.ExpiresAt) || second.Incarnation != first.Incarnation {
			t.Fatalf("a heartbeat did not extend the TTL: %v then %v", first.ExpiresAt, second.ExpiresAt)
		}
	}
	t.Run("local", func(t *testing.T) {
		e := newLocalEnv(t, WithSessionTTL(ttl))
		MustRegister(t, e.p, "h", TypeInteger, int64(0))
		check(t, e.p.(*local.State).Heartbeat, e.p.SessionID())
	})
	t.Run("bridged", func(t *testing.T) {
		e, _ := newBridgedEnv(t, store.Options{}, WithSessionTTL(ttl))
		MustRegister(t, e.p, "h", TypeInteger, int64(0))
		check(t, e.p.(*BridgedState).Heartbeat, e.p.SessionID())
	})
}

// Issue 10 item 4: CleanupSession removes the session, ends the watches of
// every other provider on it with ErrSessionClosed, and closes the
// provider, on both.
func TestCleanupSessionBothProviders(t *testing.T) {
	run := func(t *testing.T, cleaner interface {
		StateProvider
		CleanupSession(context.Context) error
	}, other StateProvider, st *store.Store) {
		MustRegister(t, cleaner, "c", TypeInteger, int64(0))
		errc := make(chan error, 1)
		MustWatch(t, other, context.Background(), []string{"c"}, func(string, any, any, UpdateMeta) {},
			WithErrorHandler(func(err error) { errc <- err }))
		if err := cleaner.CleanupSession(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("the other provider's watch ended with %v, want ErrSessionClosed", err)
			}
		case <-time.After(WaitTimeout):
			t.Fatal("the other provider's watch went on after CleanupSession")
		}
		if _, err := st.GetSession(cleaner.SessionID()); !errors.Is(err, store.ErrSessionNotFound) {
			t.Fatalf("the session after CleanupSession: %v", err)
		}
		if _, err := cleaner.Get(context.Background(), "c"); !errors.Is(err, ErrClosed) {
			t.Fatalf("the cleaner after CleanupSession: %v, want ErrClosed", err)
		}
	}
	t.Run("local", func(t *testing.T) {
		st := store.New(store.Options{})
		defer st.Close()
		a := newLocalEnvOn(t, st, WithSessionID("cleanup-local"))
		b := newLocalEnvOn(t, st, WithSessionID("cleanup-local"))
		run(t, a.p.(*local.State), b.p, st)
	})
	t.Run("bridged", func(t *testing.T) {
		a, srv := newBridgedEnv(t, store.Options{}, WithSessionID("cleanup-bridged"))
		b := DialBridged(t, srv.Addr, WithSessionID("cleanup-bridged"))
		run(t, a.p.(*BridgedState), b, srv.Store)
	})
}

// Issue 10 item 4: a session that is only watched does not expire, however
// long it stays Quiet; its TTL starts again when the last watch closes.
// The store's clock is a fake one, moved by the test.
func TestWatchKeepsSessionAlive(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	opts := store.Options{TTL: time.Minute, Now: clock, SweepInterval: time.Hour}
	run := func(t *testing.T, e env) {
		MustRegister(t, e.p, "w", TypeInteger, int64(0))
		rec := NewRecorder()
		ref := MustWatch(t, e.p, context.Background(), []string{"w"}, rec.Watch)
		Eventually(t, "the watch to be registered", func() bool { return e.watchCount() == 1 })
		advance(10 * time.Minute)
		if gone := e.st.Sweep(); len(gone) != 0 {
			t.Fatalf("a watched session expired: %v", gone)
		}
		rev := e.set(t, "w", int64(1), nil)
		if u := rec.Next(t); u.New != int64(1) || u.Meta.Revision != rev {
			t.Fatalf("after ten Quiet TTLs: %+v", u)
		}
		advance(10 * time.Minute)
		if err := e.p.UnwatchVariables(ref); err != nil {
			t.Fatal(err)
		}
		Eventually(t, "the watch to go", func() bool { return e.watchCount() == 0 })
		advance(30 * time.Second)
		if gone := e.st.Sweep(); len(gone) != 0 {
			t.Fatalf("the session expired %v after its last watch closed, within its TTL: %v", 30*time.Second, gone)
		}
		advance(time.Minute)
		if gone := e.st.Sweep(); len(gone) != 1 || gone[0] != e.p.SessionID() {
			t.Fatalf("an unwatched, unused session outlived its TTL: %v", gone)
		}
	}
	t.Run("local", func(t *testing.T) {
		st := store.New(opts)
		defer st.Close()
		run(t, newLocalEnvOn(t, st))
	})
	t.Run("bridged", func(t *testing.T) {
		SkipInClusterMode(t, "the session's expiry is one store's, swept on a fake clock; on etcd it is a lease that etcd expires")
		e, _ := newBridgedEnv(t, opts)
		run(t, e)
	})
}

// Every watch reports the session incarnation from the start, whichever way
// it began (named variables or all of them, with or without initial values),
// so a caller can resume it later with WithIncarnation.
func TestWatchReportsIncarnation(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T) env
	}{
		{"local", func(t *testing.T) env { return newLocalEnv(t) }},
		{"bridged", func(t *testing.T) env { e, _ := newBridgedEnv(t, store.Options{}); return e }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.make(t)
			MustRegister(t, e.p, "v", TypeInteger, int64(0))
			info, err := e.p.(interface {
				Heartbeat(context.Context) (*SessionInfo, error)
			}).Heartbeat(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, idents := range [][]string{{"v"}, nil} {
				for _, initial := range []bool{false, true} {
					MustWatch(t, e.p, context.Background(), idents, func(string, any, any, UpdateMeta) {}, WithInitialValues(initial))
				}
			}
			for _, wi := range e.p.ListWatchers() {
				if wi.Incarnation != info.Incarnation {
					t.Errorf("watch %v of %v: incarnation %q, want %q", wi.Ref, wi.Identifiers, wi.Incarnation, info.Incarnation)
				}
			}
		})
	}
}
