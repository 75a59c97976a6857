package varbridge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// BenchmarkPipelinedWrites: 64 goroutines Set on one BridgedState (its
// write stream), against the in-process server; ns/op is per write.
func BenchmarkPipelinedWrites(b *testing.B) {
	srv := servertest.Start(b, store.Options{})
	st := DialBridged(b, srv.Addr)
	ctx := context.Background()
	const writers = 64
	names := make([]string, writers)
	for i := range names {
		names[i] = fmt.Sprintf("w%d", i)
		MustRegister(b, st, names[i], TypeInteger, 0)
	}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for v := next.Add(1); v <= int64(b.N); v = next.Add(1) {
				if _, err := st.Set(ctx, names[w], v); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
