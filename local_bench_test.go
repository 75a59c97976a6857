package varbridge

import (
	"context"
	"testing"
)

// BenchmarkLocalSet is one LocalState write of an integer, no watcher.
func BenchmarkLocalSet(b *testing.B) {
	ctx := context.Background()
	l, err := NewLocalState(WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Register(ctx, "x", TypeInteger, int64(0)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Set(ctx, "x", int64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLocalSetToWatcher is a LocalState write and its watcher call,
// back to back (the next write waits for the call).
func BenchmarkLocalSetToWatcher(b *testing.B) {
	ctx := context.Background()
	l, err := NewLocalState(WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Register(ctx, "x", TypeInteger, int64(0)); err != nil {
		b.Fatal(err)
	}
	called := make(chan struct{}, 1)
	ref, err := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, _ any, meta UpdateMeta) {
		if !meta.Initial {
			called <- struct{}{}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.UnwatchVariables(ref) }()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Set(ctx, "x", int64(i+1)); err != nil {
			b.Fatal(err)
		}
		<-called
	}
}
