package local

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/varbridge/varbridge"
)

// benchState is a State holding one variable, closed when b ends.
func benchState(b *testing.B, name string, typ varbridge.Type, v any) *State {
	b.Helper()
	l, err := New(varbridge.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	if _, err := l.Register(context.Background(), name, typ, v); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkLocalSet is one State write of an integer, no watcher.
func BenchmarkLocalSet(b *testing.B) {
	ctx := context.Background()
	l := benchState(b, "x", varbridge.TypeInteger, int64(0))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Set(ctx, "x", int64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLocalSetToWatcher is a State write and its watcher call,
// back to back (the next write waits for the call).
func BenchmarkLocalSetToWatcher(b *testing.B) {
	ctx := context.Background()
	l := benchState(b, "x", varbridge.TypeInteger, int64(0))
	called := make(chan struct{}, 1)
	ref, err := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, _ any, meta varbridge.UpdateMeta) {
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

// BenchmarkLocalSetTensor1MiB writes a 1 MiB float32 tensor, no watcher.
func BenchmarkLocalSetTensor1MiB(b *testing.B) {
	ctx := context.Background()
	t := varbridge.Tensor{Shape: []int64{512, 512}, DType: "float32", Data: make([]byte, 512*512*4)}
	l := benchState(b, "t", varbridge.TypeTensor, t)
	b.SetBytes(int64(len(t.Data)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t.Data[0] = byte(i) // a new value each time, so no write is a no-op
		if _, err := l.Set(ctx, "t", t); err != nil {
			b.Fatal(err)
		}
	}
}
