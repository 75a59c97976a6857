package store

import (
	"time"

	"golang.org/x/time/rate"

	"github.com/varbridge/varbridge/internal/where"
)

// This file is the per-session filter budget. Where filters run in each
// watch's own feed goroutine, never in a writer's path, but they share the
// machine's CPU: without a bound per session, one session's watches could
// spend every core on filters and slow every other session's writers and
// watchers. The feed spends this budget and ends a watch that finds it
// spent.

// Defaults for FilterLimits.
const (
	// DefaultFilterCostPerSecond is at most about 0.2 s of CPU per second
	// (comprehension steps, the costliest per unit at 30-45 ns here), and
	// 1.6 million evaluations per second of a typical filter such as
	// `new > old` (3 units): more than one session's writes reach its
	// watchers on a small machine.
	DefaultFilterCostPerSecond = 5_000_000
	// DefaultFilterLimitHits of a watch's last 16 evaluations may reach the
	// per-evaluation cost limit before the watch ends: a filter that meets
	// a large value now and then keeps its watch, one that is costly on
	// every update does not.
	DefaultFilterLimitHits = 3
)

// FilterLimits bound what the where filters of a session's watches may cost,
// in CEL cost units (see package where). Zero fields take the defaults.
type FilterLimits struct {
	// CostPerSecond is what all watches of one session may spend on their
	// filters per second, up to one second's worth at once; negative means
	// unlimited.
	CostPerSecond int64
	// LimitHits is how many of a watch's last 16 evaluations may stop at
	// the per-evaluation cost limit before the watch ends (at most 16).
	LimitHits int
	// Compile bounds what a filter may cost, judged when its watch opens.
	// Zero fields take where.DefaultLimits, except that the value size is
	// the store's MaxValueBytes.
	Compile where.Limits
}

// CompileLimits are the limits a watch's where filter compiles with.
func (st *Store) CompileLimits() where.Limits { return st.opts.Filter.Compile }

// Budget is a session's filter budget, a token bucket shared by all its
// watches. A nil Budget is unlimited.
type Budget struct {
	lim       *rate.Limiter // nil: unlimited
	perSecond int64
	limitHits int
}

func newBudget(l FilterLimits) *Budget {
	b := &Budget{perSecond: l.CostPerSecond, limitHits: l.LimitHits}
	if b.perSecond == 0 {
		b.perSecond = DefaultFilterCostPerSecond
	}
	if b.limitHits <= 0 {
		b.limitHits = DefaultFilterLimitHits
	}
	b.limitHits = min(b.limitHits, 16)
	if b.perSecond > 0 {
		b.lim = rate.NewLimiter(rate.Limit(b.perSecond), int(b.perSecond))
	}
	return b
}

// FilterBudget returns the filter budget of the watch's session.
func (w *Watch) FilterBudget() *Budget { return w.sess.filterBudget }

// Spent reports whether the session's filters have spent their budget: the
// evaluation about to run must not.
func (b *Budget) Spent() bool { return b != nil && b.lim != nil && b.lim.Tokens() <= 0 }

// Spend charges what one evaluation cost. It is charged after the fact,
// since only then is the cost known, so the bucket may go below zero by
// what the evaluations running at that moment cost; Spent then stays true
// until it has refilled.
func (b *Budget) Spend(cost uint64) {
	if b == nil || b.lim == nil {
		return
	}
	now := time.Now()
	for cost > 0 { // in pieces of at most the burst, which are always granted
		n := min(cost, uint64(b.perSecond))
		b.lim.ReserveN(now, int(n))
		cost -= n
	}
}

// PerSecond returns the budget's rate; negative means unlimited.
func (b *Budget) PerSecond() int64 {
	if b == nil {
		return -1
	}
	return b.perSecond
}

// LimitHits returns how many of a watch's last 16 evaluations may stop at
// the per-evaluation cost limit before the watch ends.
func (b *Budget) LimitHits() int {
	if b == nil {
		return DefaultFilterLimitHits
	}
	return b.limitHits
}
