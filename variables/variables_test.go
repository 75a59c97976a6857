package variables_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/local"
	"github.com/varbridge/varbridge/variables"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var seq atomic.Int64

func newLocal(t *testing.T) varbridge.StateProvider {
	t.Helper()
	l, err := local.New(varbridge.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func bridged(t *testing.T) varbridge.StateProvider {
	t.Helper()
	srv := servertest.Start(t, store.Options{})
	b, err := varbridge.NewBridgedState(context.Background(), srv.Addr,
		varbridge.WithSessionID(fmt.Sprintf("v-%d", seq.Add(1))), varbridge.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func both(t *testing.T, f func(t *testing.T, p varbridge.StateProvider)) {
	t.Run("local", func(t *testing.T) { f(t, newLocal(t)) })
	t.Run("bridged", func(t *testing.T) { f(t, bridged(t)) })
}

func register(t *testing.T, p varbridge.StateProvider, name string, v any) {
	t.Helper()
	typ := varbridge.TypeInteger
	if _, ok := v.(float64); ok {
		typ = varbridge.TypeFloat
	}
	if _, err := p.Register(context.Background(), name, typ, v); err != nil {
		t.Fatal(err)
	}
}

func set(t *testing.T, p varbridge.StateProvider, name string, v any) {
	t.Helper()
	if _, err := p.Set(context.Background(), name, v); err != nil {
		t.Fatal(err)
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("nothing within %v", waitTimeout)
		panic("unreachable")
	}
}

func updates() (chan varbridge.Update, varbridge.Watcher) {
	ch := make(chan varbridge.Update, 1000)
	return ch, func(id string, old, new any, m varbridge.UpdateMeta) {
		ch <- varbridge.Update{Identifier: id, Old: old, New: new, Meta: m}
	}
}

// received waits until the provider's watch has taken n updates in.
func received(t *testing.T, p varbridge.StateProvider, sub *variables.Subscription, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, wi := range p.ListWatchers() {
			if wi.Ref == sub.Ref() && wi.UpdatesReceived >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch did not receive %d updates", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestInitialValuesOnByDefault(t *testing.T) {
	both(t, func(t *testing.T, p varbridge.StateProvider) {
		register(t, p, "temperature", 0.7)
		ch, fn := updates()
		sub, err := variables.Watch(context.Background(), p, []string{"temperature"}, fn)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
		if u := recv(t, ch); !u.Meta.Initial || u.New != 0.7 {
			t.Fatalf("first update %+v", u)
		}
		set(t, p, "temperature", 0.9)
		if u := recv(t, ch); u.Old != 0.7 || u.New != 0.9 {
			t.Fatalf("change %+v", u)
		}
	})
}

func TestFilter(t *testing.T) {
	p := newLocal(t)
	register(t, p, "temp", 20.0)
	ch, fn := updates()
	sub, err := variables.Watch(context.Background(), p, []string{"temp"}, fn, variables.WithInitial(false),
		variables.WithFilter(func(old, new any) bool { return new.(float64)-old.(float64) > 1 }))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	set(t, p, "temp", 20.5)
	set(t, p, "temp", 22.0)
	if u := recv(t, ch); u.New != 22.0 {
		t.Fatalf("got %+v, want 22.0 first", u)
	}
}

// Debounce is per variable and trailing-edge: each variable's last value
// arrives, with the old value from before the burst.
func TestDebounceDeliversLastValue(t *testing.T) {
	both(t, func(t *testing.T, p varbridge.StateProvider) {
		register(t, p, "a", 0)
		register(t, p, "b", 0)
		ch, fn := updates()
		const d = 150 * time.Millisecond
		sub, err := variables.Watch(context.Background(), p, []string{"a", "b"}, fn,
			variables.WithInitial(false), variables.WithDebounce(d))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
		start := time.Now()
		for i := int64(1); i <= 10; i++ {
			set(t, p, "a", i)
			set(t, p, "b", -i)
		}
		burst := time.Since(start)
		last := map[string]any{"a": int64(0), "b": int64(0)}
		final := map[string]any{"a": int64(10), "b": int64(-10)}
		calls := 0
		for last["a"] != final["a"] || last["b"] != final["b"] {
			u := recv(t, ch)
			calls++
			if u.Old != last[u.Identifier] {
				t.Fatalf("%s: old %v, want the last delivered %v", u.Identifier, u.Old, last[u.Identifier])
			}
			last[u.Identifier] = u.New
		}
		if burst < d/2 && calls != 2 {
			t.Fatalf("a burst of %v under a %v debounce gave %d calls, want 2", burst, d, calls)
		}
	})
}

// Stopping a watch delivers what debounce still held.
func TestDebounceStopDeliversHeldValue(t *testing.T) {
	p := newLocal(t)
	register(t, p, "x", 0)
	ch, fn := updates()
	sub, err := variables.Watch(context.Background(), p, []string{"x"}, fn, variables.WithDebounce(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	set(t, p, "x", 1)
	set(t, p, "x", 2)
	received(t, p, sub, 3) // the initial value and two changes
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-ch:
		if u.Old != nil || u.New != int64(2) {
			t.Fatalf("held update %+v, want nil -> 2 (initial merged with the changes)", u)
		}
	default:
		t.Fatal("Stop returned before delivering the held value")
	}
	if len(p.ListWatchers()) != 0 {
		t.Fatal("the watch is still listed after Stop")
	}
}

// Closing the provider ends a debounced watch although its context never
// ends: the held value is delivered and the loop's goroutine is gone
// (goleak), on both providers.
func TestDebounceEndsWithProvider(t *testing.T) {
	for _, kind := range []string{"local", "bridged"} {
		t.Run(kind, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Run("close", func(t *testing.T) {
				p := newLocal(t)
				if kind == "bridged" {
					p = bridged(t)
				}
				register(t, p, "x", 0)
				ch, fn := updates()
				sub, err := variables.Watch(context.Background(), p, []string{"x"}, fn, variables.WithDebounce(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				set(t, p, "x", 1)
				received(t, p, sub, 2) // the initial value and the change
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				if u := recv(t, ch); u.Old != nil || u.New != int64(1) {
					t.Fatalf("held update %+v, want nil -> 1", u)
				}
			})
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestBatchWindow(t *testing.T) {
	both(t, func(t *testing.T, p varbridge.StateProvider) {
		register(t, p, "n", 0)
		batches := make(chan []varbridge.Update, 100)
		const window = 150 * time.Millisecond
		sub, err := variables.Watch(context.Background(), p, []string{"n"}, nil, variables.WithInitial(false),
			variables.WithBatch(window, func(us []varbridge.Update) { batches <- us }))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Stop()
		start := time.Now()
		for i := int64(1); i <= 5; i++ {
			set(t, p, "n", i)
		}
		burst := time.Since(start)
		var got []any
		n := 0
		for len(got) < 5 {
			for _, u := range recv(t, batches) {
				got = append(got, u.New)
			}
			n++
		}
		for i, v := range got {
			if v != int64(i+1) {
				t.Fatalf("batched values %v", got)
			}
		}
		if burst < window/2 && n != 1 {
			t.Fatalf("a burst of %v in a %v window gave %d batches", burst, window, n)
		}
	})
}

func TestBatchStopDeliversCollected(t *testing.T) {
	p := newLocal(t)
	register(t, p, "n", 0)
	var mu sync.Mutex
	var got [][]varbridge.Update
	sub, err := variables.Watch(context.Background(), p, []string{"n"}, nil, variables.WithInitial(false),
		variables.WithBatch(time.Hour, func(us []varbridge.Update) { mu.Lock(); got = append(got, us); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	set(t, p, "n", 1)
	set(t, p, "n", 2)
	received(t, p, sub, 2)
	_ = sub.Stop()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || len(got[0]) != 2 || got[0][1].New != int64(2) {
		t.Fatalf("batches after Stop: %+v", got)
	}
}

func TestStopFromCallbackAndContextEnd(t *testing.T) {
	p := newLocal(t)
	register(t, p, "x", 0)
	stopped := make(chan error, 1)
	var sub *variables.Subscription
	var ready sync.WaitGroup
	ready.Add(1)
	sub, err := variables.Watch(context.Background(), p, []string{"x"}, func(string, any, any, varbridge.UpdateMeta) {
		ready.Wait()
		stopped <- sub.Stop()
	}, variables.WithDebounce(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ready.Done()
	if err := recv(t, stopped); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for len(p.ListWatchers()) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(p.ListWatchers()) != 0 {
		t.Fatal("the watch outlived Stop from its callback")
	}

	ctx, cancel := context.WithCancel(context.Background())
	if _, err := variables.Watch(ctx, p, []string{"x"}, func(string, any, any, varbridge.UpdateMeta) {}); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline = time.Now().Add(waitTimeout)
	for len(p.ListWatchers()) != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(p.ListWatchers()) != 0 {
		t.Fatal("the watch outlived its context")
	}
}

func TestBadArguments(t *testing.T) {
	p := newLocal(t)
	register(t, p, "x", 0)
	fn := func(string, any, any, varbridge.UpdateMeta) {}
	if _, err := variables.Watch(context.Background(), p, []string{"x"}, nil); !errors.Is(err, varbridge.ErrInvalidArgument) {
		t.Errorf("no callback: %v", err)
	}
	if _, err := variables.Watch(context.Background(), p, []string{"x"}, fn,
		variables.WithBatch(time.Second, func([]varbridge.Update) {})); !errors.Is(err, varbridge.ErrInvalidArgument) {
		t.Errorf("both callbacks: %v", err)
	}
	if _, err := variables.Watch(context.Background(), p, []string{"nope"}, fn); !errors.Is(err, varbridge.ErrNotFound) {
		t.Errorf("missing variable: %v", err)
	}
}

func ExampleWatch() {
	ctx := context.Background()
	state, err := local.New()
	if err != nil {
		panic(err)
	}
	defer state.Close()
	if _, err := state.Register(ctx, "temperature", varbridge.TypeFloat, 0.5); err != nil {
		panic(err)
	}

	// Initial values are on by default; a burst of changes is debounced
	// into one call with the last value.
	calls := make(chan struct{})
	sub, err := variables.Watch(ctx, state, []string{"temperature"}, func(id string, old, new any, meta varbridge.UpdateMeta) {
		fmt.Printf("%s: %v -> %v (initial=%v)\n", id, old, new, meta.Initial)
		calls <- struct{}{}
	}, variables.WithDebounce(20*time.Millisecond))
	if err != nil {
		panic(err)
	}
	defer sub.Stop()
	<-calls // the initial value
	for _, t := range []float64{0.6, 0.7, 0.8} {
		if _, err := state.Set(ctx, "temperature", t); err != nil {
			panic(err)
		}
	}
	<-calls // the burst, once quiet for 20 ms
	// Output:
	// temperature: <nil> -> 0.5 (initial=true)
	// temperature: 0.5 -> 0.8 (initial=false)
}
