package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/codec"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// fanout is a set of watches on one variable (or, for etcd, one key)
// spread over several connections, and the latency of every delivery.
type fanout struct {
	addr    string
	session string
	conns   []*grpc.ClientConn
	writer  pb.BridgeServiceClient
	wconn   *grpc.ClientConn
	cancel  context.CancelFunc
	n       int
	recvd   []atomic.Int64 // per write index: deliveries so far
	lat     [][]int64      // [write][watcher] receipt - send, ns
	allDone []chan struct{}
	errs    atomic.Int64
	opened  time.Duration
}

// openFanout opens n watches of variable "x" over conns connections, each
// waiting for its initial value, and starts a receiver per watch that
// records the latency of up to maxWrites writes.
func openFanout(ctx context.Context, addr, session string, n, conns, maxWrites int) (*fanout, error) {
	f := newFanout(addr, session, n, maxWrites)
	var err error
	f.wconn, f.writer, err = dial(addr)
	if err != nil {
		return nil, err
	}
	if err := newSession(ctx, f.writer, session, "x"); err != nil {
		f.close()
		return nil, err
	}
	clients := make([]pb.BridgeServiceClient, conns)
	for i := range conns {
		// The watchers decode as the Go client does (its codec, compact
		// updates): they share the machine's two cores with the server.
		cc, c, err := dial(addr, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Client)))
		if err != nil {
			f.close()
			return nil, err
		}
		f.conns = append(f.conns, cc)
		clients[i] = c
	}
	sctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				st, err := clients[i%conns].WatchVariables(sctx, &pb.WatchVariablesRequest{
					SessionId: session, VariableIdentifiers: []string{"x"}, IncludeInitialValues: true, Compact: true,
				})
				if err == nil {
					_, err = st.Recv()
				}
				if err != nil {
					errc <- fmt.Errorf("watch %d: %w", i, err)
					return
				}
				go f.receive(i, st)
			}
		}()
	}
	wg.Wait()
	f.opened = time.Since(t0)
	select {
	case err := <-errc:
		f.close()
		return nil, err
	default:
	}
	return f, nil
}

func (f *fanout) receive(i int, st grpc.ServerStreamingClient[pb.VariableUpdate]) {
	w := 0
	for {
		u, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.Canceled && !errors.Is(err, io.EOF) {
				f.errs.Add(1)
			}
			return
		}
		now := mono()
		if u.GetUpdateType() != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE || w >= len(f.lat) {
			continue
		}
		f.got(w, i, now-u.GetVariable().GetValue().GetIntValue())
		w++
	}
}

// newFanout is a fanout of n watches, recording up to maxWrites writes.
func newFanout(addr, session string, n, maxWrites int) *fanout {
	f := &fanout{addr: addr, session: session, n: n, recvd: make([]atomic.Int64, maxWrites), lat: make([][]int64, maxWrites), allDone: make([]chan struct{}, maxWrites)}
	for i := range f.lat {
		f.lat[i] = make([]int64, n)
		f.allDone[i] = make(chan struct{})
	}
	return f
}

// got records that write w reached watch i after ns nanoseconds. Only the
// receiver of watch i calls it for that watch, and in write order.
func (f *fanout) got(w, i int, ns int64) {
	f.lat[w][i] = ns
	if f.recvd[w].Add(1) == int64(f.n) {
		close(f.allDone[w])
	}
}

// write sets x to a send timestamp; the watch receivers take write number w
// from their own count, so writes must go in order.
func (f *fanout) write(ctx context.Context) error {
	_, err := f.writer.SetVariable(ctx, &pb.SetVariableRequest{SessionId: f.session, VariableIdentifier: "x", Value: intValue(mono())})
	return err
}

func (f *fanout) wait(w int, timeout time.Duration) error {
	select {
	case <-f.allDone[w]:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("write %d reached %d of %d watches within %s", w, f.recvd[w].Load(), f.n, timeout)
	}
}

func (f *fanout) close() {
	if f.cancel != nil {
		f.cancel()
	}
	if f.writer != nil {
		_, _ = f.writer.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: f.session})
	}
	for _, cc := range f.conns {
		_ = cc.Close()
	}
	if f.wconn != nil {
		_ = f.wconn.Close()
	}
}

// idleWatches opens n watches on one variable (no initial values) over
// conns connections and keeps them open until release is called.
func idleWatches(ctx context.Context, addr, session string, n, conns, parallel int) (opened int, el time.Duration, release func(), err error) {
	wcc, wc, err := dial(addr)
	if err != nil {
		return 0, 0, nil, err
	}
	if err := newSession(ctx, wc, session, "x"); err != nil {
		wcc.Close()
		return 0, 0, nil, err
	}
	var ccs []*grpc.ClientConn
	clients := make([]pb.BridgeServiceClient, conns)
	for i := range conns {
		cc, c, err := dial(addr)
		if err != nil {
			return 0, 0, nil, err
		}
		ccs = append(ccs, cc)
		clients[i] = c
	}
	sctx, cancel := context.WithCancel(ctx)
	release = func() {
		cancel()
		for _, cc := range ccs {
			_ = cc.Close()
		}
		_, _ = wc.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: session})
		_ = wcc.Close()
	}
	streams := make([]grpc.ServerStreamingClient[pb.VariableUpdate], n)
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	t0 := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				st, err := clients[i%conns].WatchVariables(sctx, &pb.WatchVariablesRequest{
					SessionId: session, VariableIdentifiers: []string{"x"},
				})
				if err == nil {
					_, err = st.Header() // sent once the server registered the watch
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("watch %d: %w", i, err))
					next.Store(int64(n)) // stop opening more
					return
				}
				streams[i] = st
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el = time.Since(t0)
	if e, _ := firstErr.Load().(error); e != nil {
		err = e
	}
	// Keep the streams referenced until release; their heartbeats queue
	// in the client's flow-control window, which is far from full.
	_ = streams
	return int(ok.Load()), el, release, err
}

var sessionSeq atomic.Int64
