package etcd

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
)

// renewTick is how often renewLoop looks for leases due: a small part of
// a third of the shortest TTL, so that no renewal comes a tick too late
// (a 1 s session, with 500 ms ticks, could wait a whole TTL).
const renewTick = 100 * time.Millisecond

// rewatchPause spaces the re-opening of a session's etcd watch after etcd
// cancelled it (a member that lost its leader, a compaction).
const rewatchPause = 50 * time.Millisecond

// follower is one session's etcd watch: at most one per session this
// server has watchers for (the store starts and stops it).
type follower struct {
	e     *Engine
	id    string
	lease clientv3.LeaseID
	ttl   time.Duration
	// renewAt is when renewLoop next renews the lease; guarded by e.mu.
	renewAt time.Time
	fn      func(store.FollowEvent)
	ctx     context.Context
	cancel  context.CancelFunc

	lost     chan struct{} // closed when the engine is cut off from etcd
	lostOnce sync.Once
	// watching is the parent of the etcd watches; markLost cancels it, as
	// clientv3's Watch blocks until it reaches a member.
	watching     context.Context
	stopWatching context.CancelFunc
}

func (f *follower) markLost() {
	f.lostOnce.Do(func() {
		close(f.lost)
		f.stopWatching()
	})
}

// Follow watches a session in etcd from just after fence, telling fn of
// every change committed there (this server's own too: the store skips
// what it holds), of its end, and of the engine losing etcd; and keeps the
// session's lease alive meanwhile. See store.Shared. stop cancels the
// follower without waiting for it (it may be the caller); Close waits for
// every follower.
func (e *Engine) Follow(rec *store.SessionRecord, fence int64, fn func(store.FollowEvent)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{e: e, id: rec.ID, lease: clientv3.LeaseID(rec.Lease), ttl: rec.TTL, renewAt: time.Now().Add(max(rec.TTL/3, 2*renewTick)), fn: fn, ctx: ctx, cancel: cancel, lost: make(chan struct{})}
	// RequireLeader: a member cut off from its cluster cancels the watch
	// rather than leaving it silent.
	f.watching, f.stopWatching = context.WithCancel(clientv3.WithRequireLeader(ctx))
	e.mu.Lock()
	select {
	case <-e.stop:
		e.mu.Unlock()
		cancel()
		return cancel
	default:
	}
	if e.cutOff {
		f.markLost()
	}
	e.followers[f] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	go f.run(fence + 1)
	return cancel
}

func (f *follower) run(from int64) {
	defer f.e.wg.Done()
	defer func() {
		f.e.mu.Lock()
		delete(f.e.followers, f)
		f.e.mu.Unlock()
		f.cancel()
	}()
	for {
		wctx, wcancel := context.WithCancel(f.watching)
		wch := f.e.c.Watch(wctx, f.e.keys.session(f.id), clientv3.WithPrefix(), clientv3.WithRev(from))
		next, end := f.watch(wch, from)
		wcancel()
		if end {
			return
		}
		from = next
		select {
		case <-f.ctx.Done():
			return
		case <-f.lost:
			f.fn(store.FollowEvent{Lost: true})
			return
		case <-time.After(rewatchPause):
		}
	}
}

// renewLoop renews, a few times per TTL, the lease of every session a
// follower watches: an open watch is use, on every server. One loop for
// every follower, rather than a goroutine each (or clientv3's KeepAlive,
// whose goroutines outlive a follower): a watched session costs the
// follower's goroutine and its etcd watch, nothing more.
func (e *Engine) renewLoop() { e.every(renewTick, e.renewDue) }

// renewDue renews the leases whose renewal is due.
func (e *Engine) renewDue() {
	now := time.Now()
	var due []*follower
	e.mu.Lock()
	for f := range e.followers {
		if f.lease != 0 && f.ttl > 0 && !now.Before(f.renewAt) {
			f.renewAt = now.Add(max(f.ttl/3, 2*renewTick))
			due = append(due, f)
		}
	}
	e.mu.Unlock()
	for _, f := range due {
		ctx, cancel := context.WithTimeout(f.ctx, e.opts.RequestTimeout)
		_, _ = e.c.KeepAliveOnce(ctx, f.lease) // a lease gone means the session ended, which the watch shows
		cancel()
	}
}

// every runs fn every d until the engine closes; the engine's WaitGroup
// counts it.
func (e *Engine) every(d time.Duration, fn func()) {
	defer e.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// watch reads one etcd watch until it ends; it returns the revision to
// watch from next, and whether following is over.
func (f *follower) watch(wch clientv3.WatchChan, from int64) (int64, bool) {
	keys := f.e.keys
	meta, end, hist := keys.meta(f.id), keys.end(f.id), keys.data(f.id)+"h/"
	for {
		select {
		case <-f.ctx.Done():
			return from, true
		case <-f.lost:
			f.fn(store.FollowEvent{Lost: true})
			return from, true
		case resp, ok := <-wch:
			if !ok {
				return from, false
			}
			if resp.CompactRevision != 0 {
				// Changes between from and the compaction are gone from
				// etcd's log (varbridge's own history keys may still hold
				// them): the store syncs, then the watch goes on from there.
				f.fn(store.FollowEvent{Behind: true})
				return resp.CompactRevision, false
			}
			if resp.Err() != nil || resp.Canceled {
				return from, false // watch again from the same revision: nothing is missed
			}
			gone, cause := false, store.ClosedExpired
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				switch {
				case ev.Type == mvccpb.DELETE && k == meta:
					gone = true
				case ev.Type == mvccpb.PUT && k == end:
					cause = store.CloseCause(ev.Kv.Value)
				case ev.Type == mvccpb.PUT && strings.HasPrefix(k, hist):
					c, err := record.DecodeChange(ev.Kv.Value)
					if err != nil {
						f.e.log.Error("etcd: a history record does not decode; syncing the session", "session", f.id, "key", k, "err", err)
						f.fn(store.FollowEvent{Behind: true})
						continue
					}
					f.fn(store.FollowEvent{Change: c, Fence: ev.Kv.ModRevision})
				}
			}
			if gone {
				f.fn(store.FollowEvent{Gone: true, Cause: cause})
				return from, true
			}
			if n := len(resp.Events); n > 0 {
				from = resp.Events[n-1].Kv.ModRevision + 1
			}
		}
	}
}

// health checks, every HealthInterval, that the engine still reaches a
// quorum. When it does not (a linearizable read failed for RequestTimeout),
// every follower is told: this server can no longer promise its watches
// are current, so they end and their clients resume elsewhere.
func (e *Engine) health() { e.every(e.opts.HealthInterval, e.checkQuorum) }

// checkQuorum is one health check.
func (e *Engine) checkQuorum() {
	ctx, cancel := e.ctx()
	_, err := e.c.Get(ctx, e.keys.format())
	cancel()
	select {
	case <-e.stop: // closing: a failed read says nothing of etcd
		return
	default:
	}
	e.mu.Lock()
	was := e.cutOff
	e.cutOff = err != nil
	if e.cutOff {
		for f := range e.followers {
			f.markLost()
		}
	}
	e.mu.Unlock()
	switch {
	case err != nil && !was:
		e.log.Error("lost touch with etcd: ending this server's watches so that their clients move", "endpoints", strings.Join(e.opts.Endpoints, ","), "err", err)
	case err == nil && was:
		e.log.Info("reached etcd again", "endpoints", strings.Join(e.opts.Endpoints, ","))
	}
}
