package varbridge

import (
	"context"
	"iter"
	"sync"
)

// Watch is the channel form of WatchVariables, in the manner of etcd's
// clientv3.Watch: it returns a channel of updates that is closed when ctx
// ends, the provider is closed, or the watch stops for any other reason;
// its goroutine ends with it. When the watch stopped with an error, the last
// value on the channel carries it in Err. The watch is removed from p when
// the channel closes. A reader that falls behind holds up only this watch
// (BridgedState: its stream; local.State: its cursor), never a writer.
func Watch(ctx context.Context, p StateProvider, identifiers []string, opts ...WatchOption) (<-chan Update, error) {
	ch := make(chan Update, 64)
	var (
		stopOnce sync.Once
		endErr   error
	)
	// stopped releases a watcher blocked on a full channel when the watch
	// is stopped (UnwatchVariables, the provider's Close). ended is closed
	// by the watch's goroutine as it goes, whatever ended it; waiting on
	// ctx alone missed the provider closing and kept the channel open
	// forever.
	stopped, ended := make(chan struct{}), make(chan struct{})
	fn := func(id string, old, new any, meta UpdateMeta) {
		select {
		case ch <- Update{Identifier: id, Old: old, New: new, Meta: meta}:
		case <-stopped:
		case <-ctx.Done():
		}
	}
	opts = append(opts[:len(opts):len(opts)],
		func(c *watchConfig) { c.onStop = func() { stopOnce.Do(func() { close(stopped) }) } },
		WithDoneHandler(func(err error) {
			endErr = err
			close(ended)
		}))
	ref, err := p.WatchVariables(ctx, identifiers, fn, opts...)
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-ended:
		}
		// Removing the watch ends its goroutine if nothing else did; a
		// watch that the provider's Close took is gone already.
		_ = p.UnwatchVariables(ref)
		<-ended // no watcher call runs any more, and endErr is settled
		if endErr != nil {
			select {
			case ch <- Update{Err: endErr}:
			case <-ctx.Done():
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
// (break, or ctx ending); the loop ends when the watch does (the provider
// closed, the session went away, ...). An error is the last value yielded.
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
