package feed_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func intVal(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

func newStore(tb testing.TB) *store.Store {
	tb.Helper()
	st := store.New(store.Options{MaxWatches: 1 << 20})
	tb.Cleanup(st.Close)
	if _, _, err := st.CreateSession("s", 0, nil); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := st.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); err != nil {
		tb.Fatal(err)
	}
	return st
}

func set(tb testing.TB, st *store.Store, v int64) {
	tb.Helper()
	if _, err := st.Set("s", []store.Write{{Identifier: "x", Value: intVal(v)}}, nil, "test"); err != nil {
		tb.Fatal(err)
	}
}

// A quiet watch gets heartbeats at the revision it has covered, changes in
// between arrive in order, and cancelling ends Run with the context's error
// and leaves nothing running (goleak).
func TestHeartbeatsChangesAndCancel(t *testing.T) {
	st := newStore(t)
	w, err := st.Watch("s", []string{"x"}, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *pb.VariableUpdate, 64)
	done := make(chan error, 1)
	go func() {
		done <- feed.Run(ctx, w, feed.Options{Heartbeat: feed.MinHeartbeat}, each(func(u *pb.VariableUpdate) error {
			got <- u
			return nil
		}))
	}()
	next := func() *pb.VariableUpdate {
		select {
		case u := <-got:
			return u
		case <-time.After(10 * time.Second):
			t.Fatal("no update within 10s")
			return nil
		}
	}
	for _, want := range []struct {
		typ pb.UpdateType
		rev int64
	}{
		{pb.UpdateType_UPDATE_TYPE_HEARTBEAT, 1},
		{pb.UpdateType_UPDATE_TYPE_HEARTBEAT, 1},
	} {
		if u := next(); u.UpdateType != want.typ || u.Revision != want.rev || !u.LastInRevision {
			t.Fatalf("update = %v, want %v at %d", u, want.typ, want.rev)
		}
	}
	set(t, st, 5)
	u := next()
	for u.UpdateType == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
		u = next()
	}
	if u.UpdateType != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE || u.Revision != 2 || u.Variable.GetValue().GetIntValue() != 5 {
		t.Fatalf("change = %v", u)
	}
	if u := next(); u.UpdateType != pb.UpdateType_UPDATE_TYPE_HEARTBEAT || u.Revision != 2 {
		t.Fatalf("heartbeat after the change = %v, want revision 2", u)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// A send error ends Run with that error.
func TestSendErrorEndsRun(t *testing.T) {
	st := newStore(t)
	w, err := st.Watch("s", []string{"x"}, store.WatchOptions{IncludeInitial: true})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("peer gone")
	err = feed.Run(context.Background(), w, feed.Options{}, func([]*pb.VariableUpdate) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Run returned %v, want %v", err, boom)
	}
}

// BenchmarkFanout10k: one write reaching 10,000 watches in process (store
// and feed, no gRPC): the server's own share of a fan-out.
func BenchmarkFanout10k(b *testing.B) {
	st := newStore(b)
	const n = 10000
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	var wg sync.WaitGroup
	step := make(chan struct{}, 1)
	for range n {
		w, err := st.Watch("s", []string{"x"}, store.WatchOptions{})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = feed.Run(ctx, w, feed.Options{}, each(func(*pb.VariableUpdate) error {
				if got.Add(1)%n == 0 {
					step <- struct{}{}
				}
				return nil
			}))
		}()
	}
	b.ResetTimer()
	for i := range b.N {
		set(b, st, int64(i+1))
		<-step
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	cancel()
	wg.Wait()
}

// each adapts a per-update function to feed.Send.
func each(fn func(*pb.VariableUpdate) error) feed.Send {
	return func(us []*pb.VariableUpdate) error {
		for _, u := range us {
			if err := fn(u); err != nil {
				return err
			}
		}
		return nil
	}
}
