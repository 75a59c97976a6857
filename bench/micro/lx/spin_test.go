package lx

import (
	"context"
	"testing"

	"github.com/varbridge/varbridge"
)

func TestLocalSpinWriter(t *testing.T) {
	ctx := context.Background()
	l, _ := varbridge.NewLocalState()
	defer l.Close()
	l.Register(ctx, "x", varbridge.TypeInteger, int64(0))
	var lat []int64
	done := make(chan struct{})
	ref, _ := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, nv any, meta varbridge.UpdateMeta) {
		now := mono()
		if meta.Initial { return }
		v := nv.(int64)
		if v < 0 { close(done); return }
		lat = append(lat, now-v)
	})
	defer l.UnwatchVariables(ref)
	next := mono()
	for i := 0; i < 3000; i++ {
		next += 1e6
		for mono() < next {}
		l.Set(ctx, "x", mono())
	}
	l.Set(ctx, "x", int64(-1))
	<-done
	pct(t, "spin-writer", lat)
}
