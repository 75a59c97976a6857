package systest

// Slow consumers (issue 6, item 3): writers at full speed are not slowed by
// watchers that stop reading, the server's memory stays bounded by its
// history window, and a stalled watcher that reads again gets a RESYNC and
// goes on.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Fixed HTTP/2 windows (which also turn off grpc-go's BDP window growth) on
// this test's client connections: their receive buffers then stay at
// 64 KiB per stream, so the heap this process gains is the server's, not
// the in-process clients' buffers.
var fixedWindows = []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(1 << 20)}

// stalled is a set of watchers that stopped reading: a raw gRPC stream on
// its own connection that is never read, and a BridgedState watch on the
// writers' own connection whose watcher blocks.
type stalled struct {
	cc      *grpc.ClientConn
	raw     grpc.ServerStreamingClient[pb.VariableUpdate]
	cancel  context.CancelFunc
	ref     varbridge.WatchRef
	release chan struct{}
	got     []delivered // appended by the blocked watch's goroutine
}

func openStalled(t *testing.T, addr string, b *varbridge.BridgedState) *stalled {
	t.Helper()
	s := &stalled{release: make(chan struct{})}
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, fixedWindows...)...)
	if err != nil {
		t.Fatal(err)
	}
	s.cc = cc
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	raw, err := pb.NewBridgeServiceClient(cc).WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: b.SessionID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Header(); err != nil { // the observer is registered; never Recv from here on
		t.Fatal(err)
	}
	s.raw = raw
	s.ref = mustWatch(t, b, context.Background(), nil, func(_ string, _, _ any, m varbridge.UpdateMeta) {
		<-s.release // blocks the watch's goroutine: its stream is no longer read
		s.got = append(s.got, delivered{rev: m.Revision, id: m.VariableID, resync: m.Resync})
	})
	return s
}

func (s *stalled) close(t *testing.T, b *varbridge.BridgedState) {
	t.Helper()
	close(s.release)
	if err := b.UnwatchVariables(s.ref); err != nil {
		t.Fatal(err)
	}
	s.cancel()
	_ = s.cc.Close()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestSlowConsumerWritersKeepPace: four writers set 512-byte strings as
// fast as they can, in rounds alternating (ABBA) between no watcher and two
// watchers that stopped reading. Under make chaos (-chaos.strict) the
// median writer throughput with the stalled watchers must stay within 10% of
// the median without, and the server must show both sends in flight; in
// make test these are timing figures on a shared machine with the race
// detector on, so they are logged, not asserted. Always: writers are never
// blocked (every round completes), the heap grows by less than the history
// window holds, and when the watchers read again they get a RESYNC (they
// fell out of the window) and then every later revision in order.
func TestSlowConsumerWritersKeepPace(t *testing.T) {
	const (
		hist    = 2_000
		writers = 4
	)
	// Many short rounds, alternating: a burst of load from elsewhere on the
	// machine then hits both kinds of round alike.
	bound, pairs, roundTime := 0.0, 4, 300*time.Millisecond
	if *chaosStrict {
		bound, pairs, roundTime = 0.90, 16, 500*time.Millisecond
	}
	m := metrics.New()
	srv := servertest.Start(t, store.Options{HistoryLimit: hist}, server.WithMetrics(m))
	b := dialBridged(t, srv.Addr, varbridge.WithDialOptions(fixedWindows...))
	ctx := context.Background()
	var names []string
	for i := range writers {
		names = append(names, fmt.Sprintf("w%d", i))
		mustRegister(t, b, names[i], varbridge.TypeString, "")
	}
	pad := strings.Repeat("x", 500)
	var counter atomic.Int64
	round := func() float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		deadline := time.Now().Add(roundTime)
		t0 := time.Now()
		for w := range writers {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					if _, err := b.Set(ctx, names[w], fmt.Sprintf("%s%012d", pad, counter.Add(1))); err != nil {
						t.Error(err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return float64(n.Load()) / time.Since(t0).Seconds()
	}

	// writeN writes n updates, spread over the writers.
	writeN := func(n int) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for range n / writers {
					if _, err := b.Set(ctx, names[w], fmt.Sprintf("%s%012d", pad, counter.Add(1))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}

	writeN(2 * hist) // warm up and fill the history window
	heapFull := heapInUse()
	var without, with, paired []float64
	for i := range 2 * pairs {
		if i%4 == 1 || i%4 == 2 { // ABBA ABBA: drift cancels out
			s := openStalled(t, srv.Addr, b)
			// Measure once both have stopped for good: the server is blocked
			// sending to each (their windows are full).
			for tries := 0; gatherValue(t, m, metrics.WatchSending) < 2 && tries < 400; tries++ {
				writeN(writers * 25)
			}
			with = append(with, round())
			if inFlight := gatherValue(t, m, metrics.WatchSending); inFlight < 2 && *chaosStrict {
				t.Errorf("round %d: %v sends in flight; the stalled watchers should both be blocked in one", i, inFlight)
			}
			s.close(t, b)
		} else {
			without = append(without, round())
		}
		if i%2 == 1 { // each pair of neighbouring rounds, one of each kind
			paired = append(paired, with[len(with)-1]/without[len(without)-1])
		}
	}
	// Once more with stalled watchers, which stay, and enough writes to
	// leave them behind the history window: memory, then reading again.
	s := openStalled(t, srv.Addr, b)
	writeN(3 * hist)
	heapStalled := heapInUse()
	medWithout, medWith := median(without), median(with)
	ratio := medWith / medWithout
	t.Logf("writer throughput, %d writers, %d+%d rounds of %v: without a stalled watcher %.0f/s (median of %.0f), with two stalled watchers %.0f/s (median of %.0f): %.1f%% (median of the %d neighbour ratios %.1f%%)",
		writers, pairs, pairs, roundTime, medWithout, without, medWith, with, 100*ratio, len(paired), 100*median(paired))
	if r := median(paired); r < bound {
		t.Errorf("with stalled watchers the writers reached %.1f%% of their throughput without (median of neighbour ratios); want at least %.0f%%", 100*r, 100*bound)
	}
	// The history holds 2,000 changes of ~0.6 KiB, about 1.2 MiB in store
	// records; the protobuf messages of a feed's pending batch (up to 256
	// updates) and gRPC's 64 KiB send quota per stalled stream come on top.
	// Growth past 4 MiB means something grows with the writes.
	const heapBound = 4 << 20
	t.Logf("live heap: %s with the history full, %s with the watchers stalled through %d more writes", mib(heapFull), mib(heapStalled), counter.Load())
	if heapStalled > heapFull+heapBound {
		t.Errorf("live heap grew from %s to %s while watchers were stalled; want at most +%s", mib(heapFull), mib(heapStalled), mib(heapBound))
	}

	// Read again: the raw stream first gets the RESYNC (the current values
	// at revision R), then every revision after R.
	final, err := srv.Store.GetSession(b.SessionID())
	if err != nil {
		t.Fatal(err)
	}
	var prev int64
	resynced := false
	for prev < final.Revision {
		u, err := s.raw.Recv()
		if err != nil {
			t.Fatalf("the stalled stream reading again: %v", err)
		}
		rev := u.GetRevision()
		switch u.GetUpdateType() {
		case pb.UpdateType_UPDATE_TYPE_HEARTBEAT:
			continue
		case pb.UpdateType_UPDATE_TYPE_RESYNC: // may skip ahead; its members share a revision
			if rev < prev {
				t.Fatalf("RESYNC at revision %d after %d", rev, prev)
			}
			resynced = true
		default:
			if prev != 0 && rev != prev+1 {
				t.Fatalf("revision %d after %d without a RESYNC between", rev, prev)
			}
		}
		prev = rev
	}
	if !resynced {
		t.Error("the raw stream that fell out of the window got no RESYNC")
	}
	// The blocked BridgedState watch: released, it gets a Resync and
	// catches up to the last revision.
	close(s.release)
	eventually(t, "the blocked watch to catch up", func() bool { return watchInfo(t, b, s.ref).LastRevision >= final.Revision })
	var bResync int
	for _, d := range s.got {
		if d.resync {
			bResync++
		}
	}
	if bResync == 0 {
		t.Error("the blocked BridgedState watch got no Resync")
	}
	resyncs := gatherValue(t, m, metrics.WatchResyncs)
	t.Logf("reading again: the raw stream resynced and reached revision %d; the BridgedState watch got %d resync updates and reached %d; varbridge_watch_resyncs_total %v",
		prev, bResync, watchInfo(t, b, s.ref).LastRevision, resyncs)
	s.cancel()
	if err := b.UnwatchVariables(s.ref); err != nil {
		t.Fatal(err)
	}
	_ = s.cc.Close()
	eventually(t, "the observers to go", func() bool { return srv.Store.WatchCount() == 0 })
}
