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

// The multiplexed watch stream (Watch, issue 15): the fanout and idle
// groups measure it in every run beside a stream per watch, with every
// connection's watches on one Watch stream (watchLayouts). Its figures are
// named mux_*.

type muxStream = grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]

// openMuxStreams opens one Watch stream per client and creates watches
// 0..n-1 of variable "x" on them (watch i on stream i%len(clients), watch
// id i), waiting until every one is created. onResp, if set, gets every
// later response of stream k.
func openMuxStreams(ctx context.Context, clients []pb.BridgeServiceClient, session string, n int,
	onResp func(k int, r *pb.WatchResponse), errs *atomic.Int64) ([]muxStream, error) {
	return openMuxStreamsOf(ctx, clients, func(int) string { return session }, n, onResp, errs)
}

// openMuxStreamsOf is openMuxStreams with watch i on session sessionOf(i).
func openMuxStreamsOf(ctx context.Context, clients []pb.BridgeServiceClient, sessionOf func(i int) string, n int,
	onResp func(k int, r *pb.WatchResponse), errs *atomic.Int64) ([]muxStream, error) {
	conns := len(clients)
	streams := make([]muxStream, conns)
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := clients[k].Watch(ctx)
			if err != nil {
				errc <- err
				return
			}
			streams[k] = st
			mine := 0
			for i := k; i < n; i += conns {
				mine++
				if err := st.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreateRequest{
					WatchId: int64(i), Watch: &pb.WatchVariablesRequest{SessionId: sessionOf(i), VariableIdentifiers: []string{"x"}, Compact: true},
				}}}); err != nil {
					errc <- fmt.Errorf("stream %d: create %d: %w", k, i, err)
					return
				}
			}
			for created := 0; created < mine; {
				r, err := st.Recv()
				if err != nil {
					errc <- fmt.Errorf("stream %d: %w", k, err)
					return
				}
				if r.GetEnded() != nil {
					errc <- fmt.Errorf("stream %d: watch %d ended", k, r.GetWatchId())
					return
				}
				if r.GetCreated() != nil {
					created++
				}
			}
			go func() {
				for {
					r, err := st.Recv()
					if err != nil {
						if status.Code(err) != codes.Canceled && !errors.Is(err, io.EOF) && errs != nil {
							errs.Add(1)
						}
						return
					}
					if onResp != nil {
						onResp(k, r)
					}
				}
			}()
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	return streams, nil
}

// openMuxFanout is openFanout on Watch streams: one per connection.
func openMuxFanout(ctx context.Context, addr, session string, n, conns, maxWrites int) (*fanout, error) {
	wconn, writer, err := dial(addr)
	if err != nil {
		return nil, err
	}
	if err := newSession(ctx, writer, session, "x"); err != nil {
		_ = wconn.Close()
		return nil, err
	}
	f, err := openMuxWatchers(ctx, []string{addr}, session, n, conns, maxWrites)
	if err != nil {
		_, _ = writer.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: session})
		_ = wconn.Close()
		return nil, err
	}
	f.wconn, f.writer = wconn, writer
	return f, nil
}

// openMuxWatchers opens the watches of openMuxFanout, of a session that
// exists, without a writer: connection i goes to addrs[i%len(addrs)]. The
// watchers subcommand runs it in a process of its own (the fanout group on
// one server, the cluster group split over two).
func openMuxWatchers(ctx context.Context, addrs []string, session string, n, conns, maxWrites int) (*fanout, error) {
	f := newFanout(addrs[0], session, n, maxWrites)
	clients := make([]pb.BridgeServiceClient, conns)
	for i := range conns {
		cc, c, err := dial(addrs[i%len(addrs)], grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Client)))
		if err != nil {
			f.close()
			return nil, err
		}
		f.conns = append(f.conns, cc)
		clients[i] = c
	}
	sctx, cancel := context.WithCancel(ctx)
	f.cancel = cancel
	writes := make([]int, n) // per watch: the writes it received; only its stream's reader touches it
	t0 := time.Now()
	_, err := openMuxStreams(sctx, clients, session, n, func(_ int, r *pb.WatchResponse) {
		now := mono()
		i := int(r.GetWatchId())
		for _, u := range r.GetUpdates().GetUpdates() {
			w := writes[i]
			if u.GetUpdateType() != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE || w >= len(f.lat) {
				continue
			}
			f.got(w, i, now-u.GetVariable().GetValue().GetIntValue())
			writes[i]++
		}
	}, &f.errs)
	f.opened = time.Since(t0)
	if err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// muxIdleWatches is idleWatches on Watch streams: one per connection.
func muxIdleWatches(ctx context.Context, addr, session string, n, conns, _ int) (int, time.Duration, func(), error) {
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
	release := func() {
		cancel()
		for _, cc := range ccs {
			_ = cc.Close()
		}
		_, _ = wc.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: session})
		_ = wcc.Close()
	}
	t0 := time.Now()
	// Heartbeats keep arriving: the readers drain them, as a client does.
	if _, err := openMuxStreams(sctx, clients, session, n, nil, nil); err != nil {
		return 0, time.Since(t0), release, err
	}
	return n, time.Since(t0), release, nil
}
