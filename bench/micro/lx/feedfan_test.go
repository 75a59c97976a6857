package lx

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func BenchmarkFeedFanout10k(b *testing.B) {
	st := store.New(store.Options{MaxWatches: 1 << 20})
	defer st.Close()
	st.CreateSession("s", 0, nil)
	if _, _, err := st.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 0}}}); err != nil {
		b.Fatal(err)
	}
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
			feed.Run(ctx, w, feed.Options{}, func(u *pb.VariableUpdate) error {
				if got.Add(1)%n == 0 {
					step <- struct{}{}
				}
				return nil
			})
		}()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Set("s", []store.Write{{Identifier: "x", Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(i + 1)}}}}, nil, "")
		<-step
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	cancel()
	wg.Wait()
}
