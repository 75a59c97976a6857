// Package feed turns a store watch into the ordered stream of VariableUpdate
// messages a watcher receives. The gRPC server and LocalState both run it, so
// a remote and an in-process watch keep exactly the same semantics.
package feed

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Heartbeat bounds.
const (
	DefaultHeartbeat = 5 * time.Second
	MinHeartbeat     = 10 * time.Millisecond
	MaxHeartbeat     = time.Hour
)

// pollMax bounds how many history records one Poll scans, so a watcher far
// behind holds the session's read lock only briefly at a time.
const pollMax = 256

// Options configure Run. Open builds them from a watch request.
type Options struct {
	Where     *where.Filter // server-side filter; nil passes everything
	Coalesce  bool          // deliver only the latest value per variable when behind
	Compact   bool          // changes carry a variable of type, value and version only
	Heartbeat time.Duration // 0: DefaultHeartbeat
	Hooks
}

// Hooks let an adapter observe a feed (for metrics and logs).
type Hooks struct {
	// OnFilterError, if set, sees filter evaluation errors (the update is sent).
	OnFilterError func(error)
	// OnSent, if set, is told of each update sent.
	OnSent func(*pb.VariableUpdate)
	// OnResync, if set, is told when the watch fell out of the history window.
	OnResync func()
}

// Send delivers every update that is ready at once, in order (heartbeats
// included); an error ends the feed. The slice is reused after it returns.
// It may block (a gRPC stream under flow control): only this watch waits,
// never a writer.
type Send func([]*pb.VariableUpdate) error

// Run feeds w to send until ctx ends, the session ends, or send fails. It
// closes w when it returns. Run is the one goroutine that owns the watch.
func Run(ctx context.Context, w *store.Watch, o Options, send Send) error {
	defer w.Close()
	f := newFeeder(ctx, w, o, send)
	if err := f.sendInitial(); err != nil {
		return err
	}
	// The heartbeat timer, the context's end and the session's end all
	// arrive through Wake, so the loop is one channel receive: this is the
	// hottest line of a fan-out to many watchers, and a timer channel in a
	// select costs a timer-heap insert and removal on every wait.
	var hbDue atomic.Bool
	hb := time.AfterFunc(f.o.Heartbeat, func() {
		hbDue.Store(true)
		w.Interrupt()
	})
	defer hb.Stop()
	defer context.AfterFunc(ctx, w.Interrupt)()
	// Done is looked up once: a gRPC stream's context is a deep chain of
	// value contexts, and ctx.Err walks it on every call (8 % of a fan-out's
	// server CPU when it ran on every wake).
	done := ctx.Done()
	for {
		<-w.Wake()
		select {
		case <-done:
			return ctx.Err()
		default:
		}
		if err := f.drain(); err != nil { // Poll reports a closed session
			return err
		}
		if hbDue.CompareAndSwap(true, false) {
			if err := f.heartbeat(); err != nil {
				return err
			}
			hb.Reset(f.o.Heartbeat)
		}
	}
}

// newFeeder sets up the feed of w, its heartbeat interval bounded. Run
// drives one feeder from its own goroutine, a Group many from one.
func newFeeder(ctx context.Context, w *store.Watch, o Options, send Send) *feeder {
	f := new(feeder)
	f.init(ctx, w, o, send)
	return f
}

// init is newFeeder in place (a Group's member holds its feeder).
func (f *feeder) init(ctx context.Context, w *store.Watch, o Options, send Send) {
	*f = feeder{ctx: ctx, w: w, o: o, send: send}
	if f.o.Heartbeat <= 0 {
		f.o.Heartbeat = DefaultHeartbeat
	}
	f.o.Heartbeat = min(max(f.o.Heartbeat, MinHeartbeat), MaxHeartbeat)
}

// heartbeat sends a HEARTBEAT at the revision the feed has covered.
func (f *feeder) heartbeat() error {
	return f.emit(&pb.VariableUpdate{
		UpdateType: pb.UpdateType_UPDATE_TYPE_HEARTBEAT, Revision: f.covered,
		Timestamp: timestamppb.Now(), LastInRevision: true, Incarnation: f.w.Incarnation(),
	})
}

type feeder struct {
	ctx     context.Context // ends a filter evaluation in progress
	w       *store.Watch
	o       Options
	send    Send
	covered int64
	out     []*pb.VariableUpdate // reused between batches
	sent    bool                 // the stream's first update went out
	// limitHits has a bit set for each of the last 16 filter evaluations
	// that stopped at the per-evaluation cost limit, the latest lowest.
	limitHits uint16
}

func (f *feeder) emit(u *pb.VariableUpdate) error {
	f.out = append(f.out, u)
	return f.flush()
}

func (f *feeder) flush() error {
	if len(f.out) == 0 {
		return nil
	}
	if !f.sent { // a client that resumes later sends it back
		f.out[0].Incarnation = f.w.Incarnation()
		f.sent = true
	}
	if err := f.send(f.out); err != nil {
		return err
	}
	if f.o.OnSent != nil {
		for _, u := range f.out {
			f.o.OnSent(u)
		}
	}
	clear(f.out)
	f.out = f.out[:0]
	return nil
}

func (f *feeder) sendInitial() error {
	vars, rev := f.w.Initial()
	f.covered = rev
	for _, v := range vars {
		f.out = append(f.out, &pb.VariableUpdate{
			VariableId: v.Id, Variable: v, UpdateType: pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE,
			Revision: rev, UpdateSource: v.Source, Timestamp: v.UpdatedAt, VariableName: v.Name,
		})
	}
	markLast(f.out)
	return f.flush()
}

// drain sends everything the watch has pending.
func (f *feeder) drain() error {
	for {
		b, err := f.w.Poll(pollMax)
		if err != nil {
			return err
		}
		if b.Settle {
			if err := f.w.Settle(); err != nil {
				return err
			}
			continue
		}
		if b.Resync != nil {
			f.resync(b.Resync)
		} else if err := f.changes(b.Changes); err != nil {
			return err
		}
		if err := f.flush(); err != nil {
			return err
		}
		f.covered = b.Covered
		if !b.More {
			return nil
		}
	}
}

func (f *feeder) resync(rs *store.Resync) {
	if f.o.OnResync != nil {
		f.o.OnResync()
	}
	ts := timestamppb.Now()
	inc := f.w.Incarnation()
	for _, v := range rs.Vars {
		f.out = append(f.out, &pb.VariableUpdate{
			VariableId: v.Id, Variable: v, UpdateType: pb.UpdateType_UPDATE_TYPE_RESYNC,
			Revision: rs.Revision, UpdateSource: v.Source, Timestamp: ts, VariableName: v.Name, Incarnation: inc,
		})
	}
	for _, id := range rs.Gone {
		f.out = append(f.out, &pb.VariableUpdate{
			VariableId: id, UpdateType: pb.UpdateType_UPDATE_TYPE_DELETED,
			Revision: rs.Revision, Timestamp: ts, VariableName: f.w.Identifier(id), Incarnation: inc,
		})
	}
	if len(f.out) == 0 { // nothing watched exists: still tell the client where it stands
		f.out = append(f.out, &pb.VariableUpdate{
			UpdateType: pb.UpdateType_UPDATE_TYPE_RESYNC, Revision: rs.Revision, Timestamp: ts, Incarnation: inc,
		})
	}
	markLast(f.out)
}

// changes appends the updates for a batch of changes, filtered, and in
// coalesce mode reduced to the latest per variable. An error from the
// filter ends the watch.
func (f *feeder) changes(cs []*store.Change) error {
	var latest map[string]int // coalesce: variable id -> index in f.out
	if f.o.Coalesce && len(cs) > 1 {
		latest = map[string]int{}
	}
	for _, c := range cs {
		start := len(f.out)
		ts := c.Timestamp
		for _, it := range c.Items {
			if !f.w.Concerns(it) {
				continue
			}
			if ok, err := f.pass(c, it); err != nil {
				return err
			} else if !ok {
				continue
			}
			v := it.Var
			if f.o.Compact {
				v = &pb.Variable{Type: v.Type, Value: v.Value, Version: v.Version}
			}
			u := &pb.VariableUpdate{
				VariableId: it.Var.Id, Variable: v, OldValue: it.Old,
				UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, Revision: c.Revision,
				UpdateSource: c.Source, UpdateMetadata: c.Metadata, Timestamp: ts, VariableName: it.Var.Name,
			}
			if it.Kind == store.Deleted {
				u.UpdateType = pb.UpdateType_UPDATE_TYPE_DELETED
			}
			if latest != nil {
				if i, ok := latest[it.Var.Id]; ok {
					u.OldValue = f.out[i].OldValue // the value this watcher last saw
					f.out[i] = nil
				}
				latest[it.Var.Id] = len(f.out)
			}
			f.out = append(f.out, u)
		}
		if latest == nil {
			markLast(f.out[start:])
		}
	}
	if latest != nil {
		kept := f.out[:0]
		for _, u := range f.out {
			if u != nil {
				kept = append(kept, u)
			}
		}
		clear(f.out[len(kept):])
		f.out = kept
		for i, u := range f.out {
			u.LastInRevision = i == len(f.out)-1 || f.out[i+1].Revision != u.Revision
		}
	}
	return nil
}

// pass applies the where filter to value changes; deletions always pass.
// An evaluation error lets the update through (the client-side rule), but
// a filter that costs too much ends the watch with a where.CostError: when
// the session's filter budget is spent, or when too many of the watch's
// last 16 evaluations stopped at the per-evaluation cost limit. Delivering
// anyway would let a filter that always reaches the limit cost that much
// on every update, for ever.
func (f *feeder) pass(c *store.Change, it store.Item) (bool, error) {
	if f.o.Where == nil || it.Kind == store.Deleted {
		return true, nil
	}
	budget := f.w.FilterBudget()
	if budget.Spent() {
		return false, &where.CostError{
			Limit: where.LimitPerSessionPerSecond, Max: budget.PerSecond(),
			What: "the where filters of this session's watches spent its filter budget",
		}
	}
	ok, spent, err := f.o.Where.Eval(f.ctx, it.Old, it.Var.Value, it.Var.Name, c.Metadata)
	budget.Spend(spent)
	f.limitHits <<= 1
	if errors.Is(err, where.ErrCostLimit) {
		f.limitHits |= 1
		if n := bits.OnesCount16(f.limitHits); n >= budget.LimitHits() {
			return false, &where.CostError{
				Limit: where.LimitPerEvaluation, Max: int64(f.o.Where.MaxEvalCost()),
				What: fmt.Sprintf("it reached the per-evaluation limit %d times in its last 16 evaluations", n),
			}
		}
	}
	if err != nil {
		if f.ctx.Err() != nil { // the watch is ending: the update goes nowhere
			return false, f.ctx.Err()
		}
		if f.o.OnFilterError != nil {
			f.o.OnFilterError(err)
		}
	}
	return ok, nil
}

func markLast(us []*pb.VariableUpdate) {
	if len(us) > 0 {
		us[len(us)-1].LastInRevision = true
	}
}
