package etcd

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Find reads a session whole; see store.Shared.
func (e *Engine) Find(id string) (*store.Saved, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.keys.data(id), clientv3.WithPrefix())
	if err != nil {
		return nil, e.unavailable("reading session "+id, err)
	}
	return e.parse(id, resp.Kvs)
}

type kv = mvccpb.KeyValue

// parse builds a session from its keys (sorted: history, meta, variables).
func (e *Engine) parse(id string, kvs []*kv) (*store.Saved, error) {
	sv := &store.Saved{}
	found := false
	hist, meta, vars := e.keys.data(id)+"h/", e.keys.meta(id), e.keys.data(id)+"v/"
	for _, kv := range kvs {
		k := string(kv.Key)
		switch {
		case k == meta:
			h, err := record.DecodeHeader(id, kv.Value)
			if err != nil {
				return nil, fmt.Errorf("etcd: session %q: header: %w", id, err)
			}
			h.Lease = kv.Lease
			sv.Session, sv.Fence, found = h, kv.ModRevision, true
		case strings.HasPrefix(k, hist):
			c, err := record.DecodeChange(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("etcd: session %q: history record %s: %w", id, k, err)
			}
			sv.History = append(sv.History, c)
		case strings.HasPrefix(k, vars):
			v := &pb.Variable{}
			if err := v.UnmarshalVT(kv.Value); err != nil {
				return nil, fmt.Errorf("etcd: session %q: variable %s: %w", id, k, err)
			}
			sv.Variables = append(sv.Variables, v)
		}
	}
	if !found {
		return nil, nil
	}
	// A write that trimmed the history and one that added to it can meet
	// in a read only as a contiguous window ending at the header's
	// revision; anything else left behind is older than the window.
	h := sv.History
	for len(h) > 0 && h[len(h)-1].Revision > sv.Session.Revision {
		h = h[:len(h)-1]
	}
	sv.History = h
	return sv, nil
}

// Sync tells a server what changed in a session since the revision it
// holds, in one round trip; see store.Shared.
func (e *Engine) Sync(id, incarnation string, revision, fence int64) (store.SyncResult, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	hist := e.keys.history(id, revision+1)
	resp, err := e.c.Txn(ctx).Then(
		clientv3.OpGet(e.keys.meta(id)),
		clientv3.OpGet(e.keys.end(id)),
		clientv3.OpGet(hist, clientv3.WithRange(e.keys.historyEnd(id))),
	).Commit()
	if err != nil {
		return store.SyncResult{}, e.unavailable("reading session "+id, err)
	}
	metas := resp.Responses[0].GetResponseRange().Kvs
	if len(metas) == 0 {
		res := store.SyncResult{Gone: true, Cause: store.ClosedExpired}
		if len(resp.Responses[1].GetResponseRange().Kvs) > 0 {
			res.Cause = store.ClosedCleanedUp
		}
		return res, nil
	}
	meta := metas[0]
	if meta.ModRevision == fence {
		return store.SyncResult{}, nil
	}
	h, err := record.DecodeHeader(id, meta.Value)
	if err != nil {
		return store.SyncResult{}, fmt.Errorf("etcd: session %q: header: %w", id, err)
	}
	res := store.SyncResult{Fence: meta.ModRevision}
	if h.Incarnation == incarnation {
		for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
			c, err := record.DecodeChange(kv.Value)
			if err != nil {
				return store.SyncResult{}, fmt.Errorf("etcd: session %q: history record %s: %w", id, kv.Key, err)
			}
			if c.Revision != revision+1+int64(len(res.Changes)) || c.Revision > h.Revision {
				break
			}
			res.Changes = append(res.Changes, c)
		}
		if n := len(res.Changes); n > 0 && res.Changes[n-1].Revision == h.Revision {
			return res, nil
		}
		if h.Revision == revision {
			return res, nil // the header moved without a change (its TTL); nothing to take
		}
	}
	// Another incarnation, or changes no longer kept: the whole session.
	full, err := e.Find(id)
	if err != nil {
		return store.SyncResult{}, err
	}
	if full == nil {
		return store.SyncResult{Gone: true, Cause: store.ClosedExpired}, nil
	}
	return store.SyncResult{Reload: full, Fence: full.Fence}, nil
}

// IDs lists every session's id; see store.Shared.
func (e *Engine) IDs() ([]string, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	p := e.keys.indexPrefix()
	resp, err := e.c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, e.unavailable("listing sessions", err)
	}
	ids := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if id, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), p)); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}
