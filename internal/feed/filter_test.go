package feed_test

// Filter cost in the feed: a watch whose filter keeps reaching the
// per-evaluation limit ends with a CostError after delivering the updates
// it could not judge; a session whose filters spend its budget has its
// watches ended, and another session's watch is not affected.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func strVal(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }

// costly scans the value: about six units per hundred characters.
const costly = `new.contains("needle")`

func stringSession(tb testing.TB, st *store.Store, id string) {
	tb.Helper()
	if _, _, err := st.CreateSession(id, 0, nil); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := st.Register(id, store.Register{Name: "s", Type: pb.VariableType_VARIABLE_TYPE_STRING, Value: strVal("")}); err != nil {
		tb.Fatal(err)
	}
}

func setStr(tb testing.TB, st *store.Store, session, v string) {
	tb.Helper()
	if _, err := st.Set(session, []store.Write{{Identifier: "s", Value: strVal(v)}}, nil, "test"); err != nil {
		tb.Fatal(err)
	}
}

type running struct {
	got  chan *pb.VariableUpdate
	done chan error
}

func runWatch(t *testing.T, st *store.Store, session string, f *where.Filter) *running {
	t.Helper()
	w, err := st.Watch(session, []string{"s"}, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{got: make(chan *pb.VariableUpdate, 64), done: make(chan error, 1)}
	go func() {
		r.done <- feed.Run(ctx, w, feed.Options{Where: f, Heartbeat: feed.MaxHeartbeat}, each(func(u *pb.VariableUpdate) error {
			r.got <- u
			return nil
		}))
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *running) next(t *testing.T) *pb.VariableUpdate {
	t.Helper()
	select {
	case u := <-r.got:
		return u
	case err := <-r.done:
		r.done <- err
		t.Fatalf("watch ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
	}
	return nil
}

func (r *running) ended(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end")
	}
	return nil
}

func wantCostError(t *testing.T, err error, limit string) {
	t.Helper()
	var ce *where.CostError
	if !errors.Is(err, where.ErrTooCostly) || !errors.As(err, &ce) || ce.Limit != limit {
		t.Fatalf("watch ended with %v; want a CostError for %s", err, limit)
	}
}

func TestFilterReachingItsLimitEndsWatch(t *testing.T) {
	st := store.New(store.Options{Filter: store.FilterLimits{LimitHits: 3}})
	t.Cleanup(st.Close)
	stringSession(t, st, "a")
	f, err := where.CompileWith(costly, where.Limits{MaxEvalCost: 100})
	if err != nil {
		t.Fatal(err)
	}
	r := runWatch(t, st, "a", f)
	big := strings.Repeat("hay", 1000) // 180 units: over the limit
	setStr(t, st, "a", "needle")       // cheap, passes
	setStr(t, st, "a", "hay")          // cheap, filtered out
	setStr(t, st, "a", big)            // hit 1: delivered anyway
	setStr(t, st, "a", big+"x")        // hit 2: delivered anyway
	for _, want := range []string{"needle", big, big + "x"} {
		if u := r.next(t); u.GetVariable().GetValue().GetStringValue() != want {
			t.Fatalf("got %.20q; want %.20q", u.GetVariable().GetValue().GetStringValue(), want)
		}
	}
	setStr(t, st, "a", big+"y") // hit 3 in the last 16: the watch ends
	wantCostError(t, r.ended(t), where.LimitPerEvaluation)
	select {
	case u := <-r.got:
		t.Fatalf("the third costly update was delivered: %.20q", u.GetVariable().GetValue().GetStringValue())
	default:
	}
}

func TestSessionFilterBudget(t *testing.T) {
	st := store.New(store.Options{Filter: store.FilterLimits{CostPerSecond: 1000}})
	t.Cleanup(st.Close)
	stringSession(t, st, "a")
	stringSession(t, st, "b")
	f, err := where.CompileWith(costly, where.Limits{MaxEvalCost: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	cheap, err := where.Compile(`new != ""`)
	if err != nil {
		t.Fatal(err)
	}
	heavy := runWatch(t, st, "a", f)
	light := runWatch(t, st, "a", cheap)
	other := runWatch(t, st, "b", f)
	big := strings.Repeat("hay", 20_000) + "needle" // 3,600 units: the budget of 1,000 a second is spent for 2.6 s
	setStr(t, st, "a", big)
	if u := heavy.next(t); u.GetVariable().GetValue().GetStringValue() != big {
		t.Fatal("the first costly update did not arrive")
	}
	setStr(t, st, "a", "needle")
	wantCostError(t, heavy.ended(t), where.LimitPerSessionPerSecond)
	// The budget is the session's: the cheap filter's watch ends too, at
	// the first update it evaluates after the costly one was charged.
	wantCostError(t, light.ended(t), where.LimitPerSessionPerSecond)
	// Session b's watch keeps its own budget.
	setStr(t, st, "b", "needle")
	if u := other.next(t); u.GetVariable().GetValue().GetStringValue() != "needle" {
		t.Fatalf("session b: got %q", u.GetVariable().GetValue().GetStringValue())
	}
}
