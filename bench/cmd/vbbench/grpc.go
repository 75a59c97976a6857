package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// dial opens a plain gRPC connection with keepalive the server permits.
func dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, pb.BridgeServiceClient, error) {
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return cc, pb.NewBridgeServiceClient(cc), nil
}

func intValue(v int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: v}} }

// newSession creates a session holding integer variables named names, all 0.
func newSession(ctx context.Context, c pb.BridgeServiceClient, id string, names ...string) error {
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: id}); err != nil {
		return fmt.Errorf("InitializeSession %s: %w", id, err)
	}
	for _, n := range names {
		if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{
			SessionId: id, Name: n, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intValue(0),
		}); err != nil {
			return fmt.Errorf("RegisterVariable %s: %w", n, err)
		}
	}
	return nil
}

// pacedWriter writes n+1 values to one variable at rate per second: n
// CLOCK_MONOTONIC send timestamps, then -1 (the stop sign for the watcher).
// It stops early when ctx ends.
func pacedWriter(ctx context.Context, n, rate int, write func(v int64) error) error {
	interval := time.Second / time.Duration(rate)
	next := time.Now()
	for i := 0; i < n; i++ {
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := write(mono()); err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
	}
	return write(-1)
}

// awaitStop waits for a watcher's receiver to report on recvErr: nil once
// it saw the stop value, or why it failed; latTimeout at most.
func awaitStop(recvErr <-chan error, who string) error {
	select {
	case err := <-recvErr:
		return err
	case <-time.After(latTimeout):
		return fmt.Errorf("%s did not see the stop value within %s", who, latTimeout)
	}
}

// latTimeout is a latency run's timeout: how long the harness waits for a
// watcher's stop value (and a Python watcher's samples) after the last
// write. A value a watcher never saw counts as this in the percentiles.
const latTimeout = 10 * time.Second

// latSamples are one latency run's samples, in nanoseconds.
type latSamples struct {
	send   []int64 // receipt - writer's send start (CLOCK_MONOTONIC, same host)
	commit []int64 // receipt - the server's commit timestamp (wall clock, same host)
	missed int     // updates the writer made that never arrived
}

// grpcLatencyRaw measures write -> Go watcher over a raw WatchVariables
// stream (the generated client, no library on top).
func grpcLatencyRaw(ctx context.Context, addr, session string, n, rate int) (latSamples, error) {
	var ls latSamples
	wcc, wc, err := dial(addr) // the writer's connection
	if err != nil {
		return ls, err
	}
	defer wcc.Close()
	rcc, rc, err := dial(addr) // the watcher's connection
	if err != nil {
		return ls, err
	}
	defer rcc.Close()
	if err := newSession(ctx, wc, session, "x"); err != nil {
		return ls, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rc.WatchVariables(sctx, &pb.WatchVariablesRequest{
		SessionId: session, VariableIdentifiers: []string{"x"}, IncludeInitialValues: true,
	})
	if err != nil {
		return ls, err
	}
	if _, err := stream.Recv(); err != nil { // the initial value: the watch is live
		return ls, fmt.Errorf("initial value: %w", err)
	}
	ls.send = make([]int64, 0, n)
	ls.commit = make([]int64, 0, n)
	recvErr := make(chan error, 1)
	go func() {
		for {
			u, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			now, wall := mono(), time.Now().UnixNano()
			if u.GetUpdateType() != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
				continue
			}
			v := u.GetVariable().GetValue().GetIntValue()
			if v < 0 {
				recvErr <- nil
				return
			}
			ls.send = append(ls.send, now-v)
			ls.commit = append(ls.commit, wall-u.GetTimestamp().AsTime().UnixNano())
		}
	}()
	werr := pacedWriter(ctx, n, rate, func(v int64) error {
		_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: session, VariableIdentifier: "x", Value: intValue(v)})
		return err
	})
	if werr != nil {
		return ls, werr
	}
	if err := awaitStop(recvErr, "watcher"); err != nil {
		return ls, err
	}
	ls.missed = n - len(ls.send)
	_, _ = wc.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: session})
	return ls, nil
}

// fillHistory writes revs revisions of SetVariables over vars variables
// (vars updates each) and returns the first revision written.
func fillHistory(ctx context.Context, c pb.BridgeServiceClient, session string, vars, revs int) (int64, error) {
	names := make([]string, vars)
	for i := range names {
		names[i] = fmt.Sprintf("v%04d", i)
	}
	if err := newSession(ctx, c, session, names...); err != nil {
		return 0, err
	}
	info, err := c.GetSession(ctx, &pb.GetSessionRequest{SessionId: session})
	if err != nil {
		return 0, err
	}
	first := info.GetSession().GetRevision() + 1
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1)
				if k > int64(revs) {
					return
				}
				up := make(map[string]*pb.Value, vars)
				for _, n := range names {
					up[n] = intValue(k)
				}
				if _, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: session, Updates: up}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	return first, nil
}

// goStreamReplay opens a watch at startRev and reads n VALUE_CHANGE updates
// as fast as the stream delivers them; it returns updates per second, timed
// from opening the stream to the n-th update.
func goStreamReplay(ctx context.Context, addr, session string, startRev int64, n int) (float64, error) {
	cc, c, err := dial(addr)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	if _, err := c.GetSession(ctx, &pb.GetSessionRequest{SessionId: session}); err != nil { // connect first
		return 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	stream, err := c.WatchVariables(sctx, &pb.WatchVariablesRequest{SessionId: session, StartRevision: startRev})
	if err != nil {
		return 0, err
	}
	got := 0
	var sum int64
	for got < n {
		u, err := stream.Recv()
		if err != nil {
			return 0, fmt.Errorf("after %d updates: %w", got, err)
		}
		if u.GetUpdateType() != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
			continue
		}
		sum += u.GetVariable().GetValue().GetIntValue() // touch the value as a consumer would
		got++
	}
	el := time.Since(t0)
	_ = sum
	return float64(n) / el.Seconds(), nil
}

// goStreamLive runs writers (SetVariables of vars variables each) while one
// watch reads for dur; it returns the watch's updates per second and the
// writers' updates per second.
func goStreamLive(ctx context.Context, addr, session string, vars int, dur time.Duration) (recvRate, writeRate float64, err error) {
	wcc, wc, err := dial(addr)
	if err != nil {
		return 0, 0, err
	}
	defer wcc.Close()
	names := make([]string, vars)
	for i := range names {
		names[i] = fmt.Sprintf("v%04d", i)
	}
	if err := newSession(ctx, wc, session, names...); err != nil {
		return 0, 0, err
	}
	rcc, rc, err := dial(addr)
	if err != nil {
		return 0, 0, err
	}
	defer rcc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rc.WatchVariables(sctx, &pb.WatchVariablesRequest{SessionId: session})
	if err != nil {
		return 0, 0, err
	}
	if _, err := stream.Header(); err != nil {
		return 0, 0, err
	}
	var received, written atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var k atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := k.Add(1)
				up := make(map[string]*pb.Value, vars)
				for _, n := range names {
					up[n] = intValue(v)
				}
				if _, err := wc.SetVariables(sctx, &pb.SetVariablesRequest{SessionId: session, Updates: up}); err != nil {
					return
				}
				written.Add(int64(vars))
			}
		}()
	}
	go func() {
		for {
			u, err := stream.Recv()
			if err != nil {
				return
			}
			if u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
				received.Add(1)
			}
		}
	}()
	time.Sleep(dur / 5) // warm up
	r0, w0, t0 := received.Load(), written.Load(), time.Now()
	time.Sleep(dur)
	r1, w1, el := received.Load(), written.Load(), time.Since(t0)
	close(stop)
	wg.Wait()
	cancel()
	_, _ = wc.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: session})
	return float64(r1-r0) / el.Seconds(), float64(w1-w0) / el.Seconds(), nil
}

func sessionName(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-" + strconv.FormatInt(sessionSeq.Add(1), 10)
}
