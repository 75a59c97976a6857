package store

import "sync"

// A Waker wakes one owner for many watches: a goroutine that drives every
// watch of a multiplexed stream waits on one channel instead of one per
// watch, and learns which watches have work from Take. A watch registered
// with a Waker (WatchOptions.Waker) has no Wake channel of its own.
type Waker struct {
	c chan struct{} // one slot: the owner is due to wake

	mu    sync.Mutex // a leaf lock: taken under sess.mu too
	ready []*Watch   // signalled since the last Take, each once
}

// NewWaker returns a Waker with no watch ready.
func NewWaker() *Waker { return &Waker{c: make(chan struct{}, 1)} }

// Wake receives a value when a watch may have work (see Take) or someone
// called Interrupt.
func (k *Waker) Wake() <-chan struct{} { return k.c }

// Interrupt wakes the owner without a watch having work, so that it can
// notice something of its own (a request, a timer, its context ending).
func (k *Waker) Interrupt() {
	select {
	case k.c <- struct{}{}:
	default:
	}
}

// Take appends the watches signalled since the last Take to dst, each once
// and in the order they were signalled, and forgets them. The list holds
// each watch at most once, so it is bounded by the watches registered.
func (k *Waker) Take(dst []*Watch) []*Watch {
	k.mu.Lock()
	for _, w := range k.ready {
		w.queued = false
	}
	dst = append(dst, k.ready...)
	clear(k.ready)
	k.ready = k.ready[:0]
	k.mu.Unlock()
	return dst
}

// add queues w unless it is queued already, and wakes the owner.
func (k *Waker) add(w *Watch) {
	k.mu.Lock()
	if !w.queued {
		w.queued = true
		k.ready = append(k.ready, w)
	}
	k.mu.Unlock()
	k.Interrupt()
}
