package varbridge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// muxSubs returns how many watches the connection's shared streams carry
// and how many shared streams it has.
func muxSubs(b *BridgedState) (watches, streams int) {
	pc := b.rb.pool.conns[0]
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, m := range pc.muxes {
		watches += len(m.subs)
	}
	return watches, len(pc.muxes)
}

// Fifty watches of one BridgedState travel on one shared stream: each gets
// its own variable's writes, unwatching one drops it from the stream and
// the server, and the stream closes with its last watch.
func TestWatchesShareOneStream(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr)
	ctx := context.Background()
	const n = 50
	recs := make([]*Recorder, n)
	refs := make([]WatchRef, n)
	for i := range n {
		name := fmt.Sprintf("v%d", i)
		MustRegister(t, b, name, TypeInteger, 0)
		recs[i] = NewRecorder()
		refs[i] = MustWatch(t, b, ctx, []string{name}, recs[i].Watch)
	}
	if w, s := muxSubs(b); w != n || s != 1 {
		t.Fatalf("%d watches on %d shared streams, want %d on 1", w, s, n)
	}
	for i := range n {
		if _, err := b.Set(ctx, fmt.Sprintf("v%d", i), int64(i+100)); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range recs {
		u := r.Next(t)
		if u.Identifier != fmt.Sprintf("v%d", i) || u.New != int64(i+100) {
			t.Fatalf("watch %d got %+v", i, u)
		}
	}
	for _, ref := range refs[:n/2] {
		if err := b.UnwatchVariables(ref); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, "the server to drop the unwatched", func() bool { return srv.WatchCount() == n/2 })
	if w, s := muxSubs(b); w != n/2 || s != 1 {
		t.Fatalf("%d watches on %d shared streams after unwatching half", w, s)
	}
	for _, ref := range refs[n/2:] {
		if err := b.UnwatchVariables(ref); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, "the server to drop every watch", func() bool { return srv.WatchCount() == 0 })
	if w, s := muxSubs(b); w != 0 || s != 0 {
		t.Fatalf("%d watches on %d shared streams after unwatching all", w, s)
	}
}

// Twelve watches with different filters of what they watch share a stream
// that a proxy cuts over and over: each gets every change it watches
// exactly once, in order, resumed from its own revision.
func TestSharedStreamCutsExactlyOnce(t *testing.T) {
	srv := StartServer(t, store.Options{HistoryLimit: 100_000})
	proxy := newProxy(t, srv.Addr)
	b := DialBridged(t, proxy.Addr(), fastRedial)
	names := []string{"a", "b", "c", "d"}
	for _, n := range names {
		MustRegister(t, b, n, TypeInteger, 0)
	}
	const watches = 12
	var mu sync.Mutex
	got := make([][]string, watches)
	refs := make([]WatchRef, watches)
	watched := make([][]string, watches)
	for i := range watches {
		watched[i] = []string{names[i%4], names[(i+1)%4]}
		if i%3 == 0 {
			watched[i] = nil // every variable
		}
		refs[i] = MustWatch(t, b, context.Background(), watched[i], func(ident string, _, nv any, m UpdateMeta) {
			mu.Lock()
			got[i] = append(got[i], fmt.Sprintf("%d:%s=%v", m.Revision, ident, nv))
			mu.Unlock()
		}, WithBackoff(time.Millisecond, 10*time.Millisecond), WithMaxFailures(1000), WithHeartbeat(20*time.Millisecond))
	}
	stop, cutterDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(cutterDone)
		proxy.CutAtRandom(stop, 4*time.Millisecond, func() bool { return true })
	}()
	want := make([][]string, watches)
	var last int64
	for k := range Size(3000, 1000) {
		n := names[k%4]
		res, err := srv.Store.Set(b.SessionID(), []store.Write{{Identifier: n, Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(k + 1)}}}}, nil, "w")
		if err != nil {
			t.Fatal(err)
		}
		last = res.Revision
		for i := range watches {
			if watched[i] == nil || slices.Contains(watched[i], n) {
				want[i] = append(want[i], fmt.Sprintf("%d:%s=%d", res.Revision, n, k+1))
			}
		}
		if k%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	Eventually(t, "every watch to catch up", func() bool {
		for _, ref := range refs {
			if WatchInfoOf(t, b, ref).LastRevision < last {
				return false
			}
		}
		return true
	})
	close(stop)
	<-cutterDone
	mu.Lock()
	defer mu.Unlock()
	for i := range watches {
		if !slices.Equal(got[i], want[i]) {
			j := 0
			for j < min(len(got[i]), len(want[i])) && got[i][j] == want[i][j] {
				j++
			}
			t.Fatalf("watch %d (%v): %d updates, want %d; first difference at %d: got %v, want %v", i, watched[i], len(got[i]), len(want[i]),
				j, got[i][j:min(j+3, len(got[i]))], want[i][j:min(j+3, len(want[i]))])
		}
	}
	if proxy.Cuts() < 5 {
		t.Fatalf("only %d cuts", proxy.Cuts())
	}
	t.Logf("%d cuts", proxy.Cuts())
}

// Against a server without the shared stream (an older one), watches fall
// back to a stream each and keep working.
func TestSharedStreamFallsBack(t *testing.T) {
	old := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == pb.BridgeService_Watch_FullMethodName {
			return status.Error(codes.Unimplemented, "unknown method Watch")
		}
		return h(srv, ss)
	})
	srv := StartServer(t, store.Options{}, server.WithGRPCOptions(old))
	b := DialBridged(t, srv.Addr)
	MustRegister(t, b, "x", TypeInteger, 0)
	recs := []*Recorder{NewRecorder(), NewRecorder()}
	for _, r := range recs {
		MustWatch(t, b, context.Background(), []string{"x"}, r.Watch)
	}
	if _, err := b.Set(context.Background(), "x", int64(5)); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if u := r.Next(t); u.New != int64(5) {
			t.Fatalf("got %+v", u)
		}
	}
	pc := b.rb.pool.conns[0]
	pc.mu.Lock()
	noMux := pc.noMux
	pc.mu.Unlock()
	if !noMux {
		t.Fatal("the connection did not note that the server lacks Watch")
	}
}

// A watch whose handler blocks does not hold up the other watches of its
// shared stream (etcd#17529): they get every write while it is stuck, and
// once it is released it gets every write too, exactly once and in order,
// having been left behind and reopened from its revision.
func TestStuckWatchDoesNotHoldUpItsStream(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr)
	ctx := context.Background()
	MustRegister(t, b, "x", TypeInteger, 0)
	release := make(chan struct{})
	var mu sync.Mutex
	var stuckGot []any
	stuck := MustWatch(t, b, ctx, []string{"x"}, func(_ string, _, new any, _ UpdateMeta) {
		<-release
		mu.Lock()
		stuckGot = append(stuckGot, new)
		mu.Unlock()
	})
	free := NewRecorder()
	MustWatch(t, b, ctx, []string{"x"}, free.Watch)
	if w, s := muxSubs(b); w != 2 || s != 1 {
		t.Fatalf("%d watches on %d shared streams, want 2 on 1", w, s)
	}
	const writes = 300 // far more responses than a watch's queue holds
	for i := int64(1); i <= writes; i++ {
		if _, err := b.Set(ctx, "x", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(1); i <= writes; i++ {
		if u := free.Next(t); u.New != i {
			t.Fatalf("the free watch got %+v, want %d", u, i)
		}
	}
	close(release)
	deadline := time.Now().Add(WaitTimeout)
	for {
		mu.Lock()
		n := len(stuckGot)
		mu.Unlock()
		if n >= writes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the released watch got %d of %d writes", n, writes)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range stuckGot {
		if v != int64(i+1) {
			t.Fatalf("the released watch's update %d is %v: %v", i, v, stuckGot)
		}
	}
	if len(stuckGot) != writes {
		t.Fatalf("the released watch got %d updates, want %d", len(stuckGot), writes)
	}
	info := WatchInfoOf(t, b, stuck)
	if info.Failovers != 0 || !info.Alive {
		t.Fatalf("the released watch: %+v", info)
	}
}
