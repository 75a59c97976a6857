package lx

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
)

func pct(t *testing.T, name string, lat []int64) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("%s p50 %.1fus p90 %.1f p99 %.1f", name, float64(lat[len(lat)/2])/1e3, float64(lat[len(lat)*9/10])/1e3, float64(lat[len(lat)*99/100])/1e3)
}

func TestChanFloor(t *testing.T) {
	ch := make(chan int64, 1)
	var lat []int64
	done := make(chan struct{})
	go func() {
		for v := range ch {
			lat = append(lat, mono()-v)
		}
		close(done)
	}()
	for i := 0; i < 3000; i++ {
		time.Sleep(time.Millisecond)
		ch <- mono()
	}
	close(ch)
	<-done
	pct(t, "chan", lat)
}

func TestSetCost(t *testing.T) {
	ctx := context.Background()
	l, _ := varbridge.NewLocalState()
	defer l.Close()
	l.Register(ctx, "x", varbridge.TypeInteger, int64(0))
	var lat []int64
	for i := 0; i < 3000; i++ {
		time.Sleep(time.Millisecond)
		t0 := mono()
		l.Set(ctx, "x", t0)
		lat = append(lat, mono()-t0)
	}
	pct(t, "set-nowatch", lat)
	ref, _ := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, nv any, meta varbridge.UpdateMeta) {})
	defer l.UnwatchVariables(ref)
	lat = lat[:0]
	for i := 0; i < 3000; i++ {
		time.Sleep(time.Millisecond)
		t0 := mono()
		l.Set(ctx, "x", t0)
		lat = append(lat, mono()-t0)
	}
	pct(t, "set-watch", lat)
}
