package feed

import (
	"container/heap"
	"context"
	"sync/atomic"
	"time"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Group drives many watches from one goroutine, its owner: the server's
// multiplexed watch stream, whose watches must not cost a goroutine each.
// Every member keeps Run's rules exactly (the same feeder sends its initial
// values, its changes in order, filtered, coalesced and batched, and its
// heartbeats); only the waiting is shared: one store.Waker for every
// member's store watch and one timer for every member's heartbeat.
//
// A Group is not safe for concurrent use: only its owner calls it (Wake
// and Interrupt excepted). A member's Send blocks the owner, so a stream
// that does not read slows its own watches and no one else's.
type Group struct {
	ctx     context.Context
	waker   *store.Waker
	members map[*store.Watch]*member
	hb      hbHeap
	timer   *time.Timer // wakes the owner for the earliest heartbeat
	timerAt time.Time   // when timer fires; zero when stopped
	hbDue   atomic.Bool
	ready   []*store.Watch // Step's, reused
}

type member struct {
	w   *Watch
	f   feeder    // in the member: one allocation per watch, not two
	due time.Time // the next heartbeat
	idx int       // in Group.hb
}

// NewGroup returns an empty Group whose feeds stop filter evaluations when
// ctx ends. The owner stops it with Close.
func NewGroup(ctx context.Context) *Group {
	g := &Group{ctx: ctx, waker: store.NewWaker(), members: map[*store.Watch]*member{}}
	g.timer = time.AfterFunc(time.Hour, func() {
		g.hbDue.Store(true)
		g.waker.Interrupt()
	})
	g.timer.Stop()
	return g
}

// Open registers the watch req asks for, as Open does, woken through the
// group: every later write reaches it. Add makes it a member; until then
// nothing is sent, and Watch.Close drops it.
func (g *Group) Open(st *store.Store, req *pb.WatchVariablesRequest, hooks Hooks) (*Watch, error) {
	return open(st, req, hooks, g.waker)
}

// Add makes w, opened by g.Open, a member fed through send, and sends its
// initial values. When that send fails, w is closed and the error returned.
func (g *Group) Add(w *Watch, send Send) error {
	m := &member{w: w}
	m.f.init(g.ctx, w.w, w.o, send)
	if err := m.f.sendInitial(); err != nil {
		w.Close()
		return err
	}
	m.due = time.Now().Add(m.f.o.Heartbeat)
	g.members[w.w] = m
	heap.Push(&g.hb, m)
	g.arm(m.due)
	return nil
}

// Remove closes a member and drops it; nothing more is sent for it.
func (g *Group) Remove(w *Watch) {
	w.Close()
	if m := g.members[w.w]; m != nil {
		delete(g.members, w.w)
		heap.Remove(&g.hb, m.idx)
	}
}

// Len returns the number of members.
func (g *Group) Len() int { return len(g.members) }

// Wake receives a value when a member may have work, a heartbeat is due,
// or someone called Interrupt: the owner then calls Step.
func (g *Group) Wake() <-chan struct{} { return g.waker.Wake() }

// Interrupt wakes the owner for something of its own (a request arrived).
// Anyone may call it.
func (g *Group) Interrupt() { g.waker.Interrupt() }

// Step feeds every member that has work and sends the heartbeats that are
// due, each member's updates in order. A member whose feed fails (its
// session ended, its filter spent its budget, a send failed) is removed
// and closed, and ended is told why; when ended returns an error, Step
// returns it at once (the stream is broken: the owner stops).
func (g *Group) Step(ended func(*Watch, error) error) error {
	g.ready = g.waker.Take(g.ready[:0])
	defer func() { clear(g.ready) }()
	for _, sw := range g.ready {
		m := g.members[sw]
		if m == nil { // removed since it was signalled
			continue
		}
		if err := m.f.drain(); err != nil {
			if err := g.end(m, err, ended); err != nil {
				return err
			}
		}
	}
	if !g.hbDue.CompareAndSwap(true, false) {
		return nil
	}
	g.timerAt = time.Time{}
	now := time.Now()
	for len(g.hb) > 0 && !g.hb[0].due.After(now) {
		m := g.hb[0]
		m.due = now.Add(m.f.o.Heartbeat)
		heap.Fix(&g.hb, 0)
		// Drained first, as Run does on a wake, so the heartbeat's
		// revision covers everything the session has committed.
		err := m.f.drain()
		if err == nil {
			err = m.f.heartbeat()
		}
		if err != nil {
			if err := g.end(m, err, ended); err != nil {
				return err
			}
		}
	}
	if len(g.hb) > 0 {
		g.arm(g.hb[0].due)
	}
	return nil
}

func (g *Group) end(m *member, err error, ended func(*Watch, error) error) error {
	g.Remove(m.w)
	return ended(m.w, err)
}

// arm makes the timer fire by at, unless it already does.
func (g *Group) arm(at time.Time) {
	if !g.timerAt.IsZero() && !g.timerAt.After(at) {
		return
	}
	g.timerAt = at
	g.timer.Reset(time.Until(at))
}

// Close closes every member and stops the timer; the owner calls it once,
// when it stops.
func (g *Group) Close() {
	g.timer.Stop()
	for sw, m := range g.members {
		m.w.Close()
		delete(g.members, sw)
	}
	g.hb = nil
}

// hbHeap orders members by their next heartbeat.
type hbHeap []*member

func (h hbHeap) Len() int           { return len(h) }
func (h hbHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h hbHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *hbHeap) Push(x any) {
	m := x.(*member)
	m.idx = len(*h)
	*h = append(*h, m)
}
func (h *hbHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return m
}
