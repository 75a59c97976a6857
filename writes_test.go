package varbridge

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// openWriteStream is the write stream of b's pool for its token, or nil.
func openWriteStream(b *BridgedState) *writeStream {
	w := &b.rb.pool.writes
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byToken[bearer(b.rb.token)]
}

// writeUntilStream sets ident to *n+1, *n+2, ... until a write stream is
// open, and returns it. The write after another opens the stream, unless
// the connection is not ready at that moment (a busy machine): then a
// later one does.
func writeUntilStream(ctx context.Context, t *testing.T, b *BridgedState, ident string, n *int64) *writeStream {
	t.Helper()
	var s *writeStream
	Eventually(t, "a write stream", func() bool {
		*n++
		if _, err := b.Set(ctx, ident, *n); err != nil {
			t.Fatal(err)
		}
		s = openWriteStream(b)
		return s != nil
	})
	return s
}

// Concurrent Sets and SetManys of one BridgedState go on one write stream,
// pipelined: every write is acknowledged with its own result, and the
// errors are the unary calls' (typed, with their fields).
func TestBridgedWritesOnStream(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	maxN := 1e9
	MustRegister(t, b, "n", TypeInteger, 0, WithConstraints(Constraints{Max: &maxN}))
	writers, each := int64(16), int64(Size(200, 40))
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%d", w)
				if i == 0 {
					if _, err := b.Register(ctx, name, TypeInteger, int64(0)); err != nil {
						errs <- err
						return
					}
				}
				v, err := b.Set(ctx, name, int64(i+1))
				if err != nil || v.Value != int64(i+1) || v.Version != int64(i+2) {
					errs <- fmt.Errorf("writer %d, write %d: %+v, %v", w, i, v, err)
					return
				}
				if _, err := b.SetMany(ctx, map[string]any{"n": int64(w*each + i + 1)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if openWriteStream(b) == nil {
		t.Fatal("no write stream open after the writes")
	}
	v, err := b.Get(ctx, "n")
	if err != nil || v.Version != writers*each+1 {
		t.Fatalf("n = %+v, %v; want version %d", v, err, writers*each+1)
	}

	_, err = b.Set(ctx, "n", int64(1), WithExpectedVersion(1))
	var vc *VersionConflictError
	if !errors.As(err, &vc) || vc.Expected != 1 || vc.Actual != writers*each+1 {
		t.Errorf("compare-and-set on the stream: %v, want a VersionConflictError 1 vs %d", err, writers*each+1)
	}
	_, err = b.Set(ctx, "n", int64(2e9))
	var ce *ConstraintError
	if !errors.As(err, &ce) || ce.Variable != "n" || ce.Constraint != "max" {
		t.Errorf("constraint on the stream: %v (%#v)", err, ce)
	}
	_, err = b.SetMany(ctx, map[string]any{"n": int64(3), "nope": int64(1)})
	var nf *NotFoundError
	if !errors.As(err, &nf) || len(nf.Identifiers) != 1 || nf.Identifiers[0] != "nope" {
		t.Errorf("unknown variable in a batch on the stream: %v", err)
	}
	if _, err := b.Set(ctx, "n", int64(4)); err != nil {
		t.Errorf("a write after failed ones: %v", err)
	}
}

// A write whose ack is lost with its stream fails ErrUnavailable (it may
// have been applied: it is never sent again behind the caller's back); the
// next write opens a new stream.
func TestBridgedWriteLostAckIsUnavailable(t *testing.T) {
	srv := StartServer(t, store.Options{})
	proxy := newProxy(t, srv.Addr)
	b := DialBridged(t, proxy.Addr(), fastRedial)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	MustRegister(t, b, "x", TypeInteger, 0)
	n := int64(0)
	s := writeUntilStream(ctx, t, b, "x", &n)
	proxy.Stall(time.Hour) // the next write and its ack wait in the proxy
	done := make(chan error, 1)
	go func() { _, err := b.Set(ctx, "x", n+1); done <- err }()
	Eventually(t, "the write waiting for its ack", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.waiting) == 1
	})
	proxy.Cut()
	err := <-done
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write with its ack lost: %v, want ErrUnavailable", err)
	}
	if _, err := b.Set(ctx, "x", n+2); err != nil {
		t.Fatalf("the write after: %v", err)
	}
	if v, err := b.Get(ctx, "x"); err != nil || v.Value != n+2 {
		t.Fatalf("x = %+v, %v", v, err)
	}
	// The write after the cut went unary while the connection came back;
	// once it is back, writes open a new stream.
	Eventually(t, "a new write stream", func() bool {
		n++
		if _, err := b.Set(ctx, "x", n+2); err != nil {
			t.Fatal(err)
		}
		s2 := openWriteStream(b)
		return s2 != nil && s2 != s
	})
}

// withoutWriteStream is the server as one from before WriteVariables.
type withoutWriteStream struct{ *server.Server }

func (withoutWriteStream) WriteVariables(grpc.BidiStreamingServer[pb.WriteVariablesRequest, pb.WriteVariablesResponse]) error {
	return status.Error(codes.Unimplemented, "method WriteVariables not implemented")
}

// A server without WriteVariables gets unary writes, and its errors, the
// stream never tried again.
func TestBridgedWritesWithoutWriteStream(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{})
	g := grpc.NewServer()
	pb.RegisterBridgeServiceServer(g, withoutWriteStream{server.New(st, server.WithLogger(Quiet))})
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done; st.Close() })

	b := DialBridged(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	MustRegister(t, b, "x", TypeInteger, 0)
	for i := range 5 {
		if v, err := b.Set(ctx, "x", int64(i+1)); err != nil || v.Value != int64(i+1) {
			t.Fatalf("set %d: %+v, %v", i, v, err)
		}
	}
	if _, err := b.SetMany(ctx, map[string]any{"x": int64(9)}, WithExpectedVersions(map[string]int64{"x": 1})); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("compare-and-set: %v", err)
	}
	w := &b.rb.pool.writes
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.unsupported || len(w.byToken) != 0 {
		t.Fatalf("write streams %+v: want none, the server marked as without them", w.byToken)
	}
}

// A lone write goes unary; writes that follow each other open the stream,
// which closes cleanly once idle, leaving nothing behind.
func TestBridgedWriteStreamOpensAndIdles(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	MustRegister(t, b, "x", TypeInteger, 0)
	if _, err := b.Set(ctx, "x", int64(1)); err != nil {
		t.Fatal(err)
	}
	if s := openWriteStream(b); s != nil {
		t.Fatal("a lone write opened a write stream")
	}
	n := int64(1)
	s := writeUntilStream(ctx, t, b, "x", &n)
	Eventually(t, "the idle write stream to close", func() bool { return openWriteStream(b) == nil })
	select {
	case <-s.done:
	case <-time.After(WaitTimeout):
		t.Fatal("the closed stream's receiver did not stop")
	}
	if v, err := b.Get(ctx, "x"); err != nil || v.Value != n {
		t.Fatalf("x = %+v, %v", v, err)
	}
}
