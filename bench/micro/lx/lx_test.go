package lx

import (
	"context"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"github.com/varbridge/varbridge"
)

func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func TestLocal(t *testing.T) {
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
	for i := 0; i < 3000; i++ {
		time.Sleep(time.Millisecond)
		l.Set(ctx, "x", mono())
	}
	l.Set(ctx, "x", int64(-1))
	<-done
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("p50 %.1fus p90 %.1f p99 %.1f", float64(lat[len(lat)/2])/1e3, float64(lat[len(lat)*9/10])/1e3, float64(lat[len(lat)*99/100])/1e3)
}
