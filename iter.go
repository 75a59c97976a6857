package varbridge

import (
	"context"
	"iter"
	"sync"
)

// Watch is the channel form of WatchVariables, in the manner of etcd's
// clientv3.Watch: it returns a channel of updates that is closed when ctx
// ends or the watch stops. When the watch stopped with an error, the last
// value on the channel carries it in Err. The watch is removed from p when
// the channel closes. A reader that falls behind holds up only this watch
// (BridgedState: its stream; LocalState: its cursor), never a writer.
func Watch(ctx context.Context, p StateProvider, identifiers []string, opts ...WatchOption) (<-chan Update, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan Update, 64)
	errc := make(chan error, 1)
	var (
		mu     sync.Mutex // held while sending, so that close waits for a send
		closed bool
	)
	fn := func(id string, old, new any, meta UpdateMeta) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		select {
		case ch <- Update{Identifier: id, Old: old, New: new, Meta: meta}:
		case <-ctx.Done():
		}
	}
	opts = append(opts[:len(opts):len(opts)], WithErrorHandler(func(err error) { errc <- err }))
	ref, err := p.WatchVariables(ctx, identifiers, fn, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		var err error
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
		cancel() // unblocks a send in progress
		_ = p.UnwatchVariables(ref)
		mu.Lock()
		closed = true
		mu.Unlock()
		if err != nil {
			select {
			case ch <- Update{Err: err}:
			case <-parent.Done():
			}
		}
		close(ch)
	}()
	return ch, nil
}

// Updates is the iterator form of WatchVariables:
//
//	for u, err := range varbridge.Updates(ctx, state, []string{"temperature"}) {
//		if err != nil { ... } // the watch could not start, or stopped
//		fmt.Println(u.Identifier, u.Old, u.New)
//	}
//
// The watch starts when the loop starts and is removed when it ends
// (break, or ctx ending). An error is the last value yielded.
func Updates(ctx context.Context, p StateProvider, identifiers []string, opts ...WatchOption) iter.Seq2[Update, error] {
	return func(yield func(Update, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := Watch(ctx, p, identifiers, opts...)
		if err != nil {
			yield(Update{}, err)
			return
		}
		defer func() {
			cancel()
			for range ch { // wait until the watch is removed
			}
		}()
		for u := range ch {
			if u.Err != nil {
				yield(Update{}, u.Err)
				return
			}
			if !yield(u, nil) {
				return
			}
		}
	}
}
