package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/local"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// stateLatency measures Set -> Watcher callback through the public
// StateProvider API: the watcher on w, the writer on wr (the same provider
// for local.State, another BridgedState for the remote case). Values are
// CLOCK_MONOTONIC send timestamps; -1 stops.
func stateLatency(ctx context.Context, w, wr varbridge.StateProvider, n, rate int) (latSamples, error) {
	var ls latSamples
	ls.send = make([]int64, 0, n)
	ls.commit = make([]int64, 0, n)
	done := make(chan struct{})
	var stopped atomic.Bool
	ref, err := w.WatchVariables(ctx, []string{"x"}, func(_ string, _, nv any, meta varbridge.UpdateMeta) {
		now, wall := mono(), time.Now().UnixNano()
		if meta.Initial || meta.Resync || meta.Deleted || stopped.Load() {
			return
		}
		v, _ := nv.(int64)
		if v < 0 {
			stopped.Store(true)
			close(done)
			return
		}
		ls.send = append(ls.send, now-v)
		ls.commit = append(ls.commit, wall-meta.Timestamp.UnixNano())
	})
	if err != nil {
		return ls, err
	}
	defer func() { _ = w.UnwatchVariables(ref) }()
	if err := pacedWriter(ctx, n, rate, func(v int64) error {
		_, err := wr.Set(ctx, "x", v)
		return err
	}); err != nil {
		return ls, err
	}
	select {
	case <-done:
	case <-time.After(latTimeout):
		return ls, fmt.Errorf("watcher did not see the stop value within %s", latTimeout)
	}
	ls.missed = n - len(ls.send)
	return ls, nil
}

// localLatency runs stateLatency on a local.State (writer and watcher in
// process, no network).
func localLatency(ctx context.Context, n, rate int) (latSamples, error) {
	l, err := local.New(varbridge.WithLogger(quietLog))
	if err != nil {
		return latSamples{}, err
	}
	defer l.Close()
	if _, err := l.Register(ctx, "x", varbridge.TypeInteger, int64(0)); err != nil {
		return latSamples{}, err
	}
	return stateLatency(ctx, l, l, n, rate)
}

// localThroughput: one local.State watch, a writer setting as fast as it
// can for n writes; updates delivered per second, and how many RESYNCs the
// watch got (the writer outran it past the history window).
func localThroughput(ctx context.Context, n int) (float64, int64, error) {
	l, err := local.New(varbridge.WithLogger(quietLog))
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	if _, err := l.Register(ctx, "x", varbridge.TypeInteger, int64(0)); err != nil {
		return 0, 0, err
	}
	// A writer this fast can outrun the watcher past the history window:
	// the watch then gets a RESYNC (by design) instead of every value, so
	// the run ends at the last value and counts what was delivered.
	var got, resyncs atomic.Int64
	done := make(chan struct{})
	ref, err := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, v any, meta varbridge.UpdateMeta) {
		got.Add(1)
		if meta.Resync {
			resyncs.Add(1)
		}
		if v == int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = l.UnwatchVariables(ref) }()
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		if _, err := l.Set(ctx, "x", int64(i)); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return 0, 0, fmt.Errorf("the last value never arrived: delivered %d of %d", got.Load(), n)
	}
	return float64(got.Load()) / time.Since(t0).Seconds(), resyncs.Load(), nil
}

// bridgedLatency: a BridgedState watcher (of watcherAddr) and another
// BridgedState writer (of writerAddr; its own connections), as two programs
// would be. The addresses are the same server, or two servers sharing one
// storage engine (the cluster group).
func bridgedLatency(ctx context.Context, writerAddr, watcherAddr, session string, n, rate int) (latSamples, error) {
	wr, err := varbridge.NewBridgedState(ctx, writerAddr, varbridge.WithSessionID(session), varbridge.WithLogger(quietLog))
	if err != nil {
		return latSamples{}, err
	}
	defer wr.Close()
	if _, err := wr.Register(ctx, "x", varbridge.TypeInteger, int64(0)); err != nil {
		return latSamples{}, err
	}
	w, err := varbridge.NewBridgedState(ctx, watcherAddr, varbridge.WithSessionID(session), varbridge.WithLogger(quietLog))
	if err != nil {
		return latSamples{}, err
	}
	defer w.Close()
	ls, err := stateLatency(ctx, w, wr, n, rate)
	_ = wr.CleanupSession(ctx)
	return ls, err
}

// bridgedReplay: a BridgedState watch of every variable from startRev,
// reading n value changes; updates per second, first to last.
func bridgedReplay(ctx context.Context, addr, session string, startRev int64, n int, batched bool) (float64, error) {
	b, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID(session), varbridge.WithLogger(quietLog))
	if err != nil {
		return 0, err
	}
	defer b.Close()
	var got atomic.Int64
	var sum int64
	done := make(chan time.Time, 1)
	t0 := time.Now()
	ref, err := b.WatchVariables(ctx, nil, func(_ string, _, nv any, meta varbridge.UpdateMeta) {
		if meta.Initial || meta.Resync || meta.Deleted {
			return
		}
		k := got.Add(1)
		v, _ := nv.(int64)
		sum += v
		if k == int64(n) {
			done <- time.Now()
		}
	}, varbridge.WithStartRevision(startRev), varbridge.WithBatchedStream(batched))
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.UnwatchVariables(ref) }()
	select {
	case t1 := <-done:
		return float64(n) / t1.Sub(t0).Seconds(), nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("BridgedState replay: %d of %d updates in 2 min", got.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// goStreamReplayBatches is goStreamReplay over WatchVariableBatches.
func goStreamReplayBatches(ctx context.Context, addr, session string, startRev int64, n int) (float64, float64, error) {
	cc, c, err := dial(addr)
	if err != nil {
		return 0, 0, err
	}
	defer cc.Close()
	if _, err := c.GetSession(ctx, &pb.GetSessionRequest{SessionId: session}); err != nil { // connect first
		return 0, 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	stream, err := c.WatchVariableBatches(sctx, &pb.WatchVariablesRequest{SessionId: session, StartRevision: startRev})
	if err != nil {
		return 0, 0, err
	}
	got, msgs := 0, 0
	var sum int64
	for got < n {
		b, err := stream.Recv()
		if err != nil {
			return 0, 0, fmt.Errorf("after %d updates: %w", got, err)
		}
		msgs++
		for _, u := range b.GetUpdates() {
			if u.GetUpdateType() != pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
				continue
			}
			sum += u.GetVariable().GetValue().GetIntValue()
			got++
		}
	}
	el := time.Since(t0)
	_ = sum
	return float64(got) / el.Seconds(), float64(got) / float64(msgs), nil
}

// localPingPong: Set, wait for the callback, Set again: both goroutines stay
// hot, so this is the in-process path without the OS waking an idle thread.
func localPingPong(ctx context.Context, n int) ([]int64, error) {
	l, err := local.New(varbridge.WithLogger(quietLog))
	if err != nil {
		return nil, err
	}
	defer l.Close()
	if _, err := l.Register(ctx, "x", varbridge.TypeInteger, int64(0)); err != nil {
		return nil, err
	}
	got := make(chan int64, 1)
	ref, err := l.WatchVariables(ctx, []string{"x"}, func(_ string, _, nv any, meta varbridge.UpdateMeta) {
		now := mono()
		v, _ := nv.(int64)
		got <- now - v
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = l.UnwatchVariables(ref) }()
	out := make([]int64, 0, n)
	for range n {
		if _, err := l.Set(ctx, "x", mono()); err != nil {
			return nil, err
		}
		select {
		case d := <-got:
			out = append(out, d)
		case <-time.After(10 * time.Second):
			return nil, errors.New("no callback within 10s")
		}
	}
	return out, nil
}
