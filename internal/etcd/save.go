package etcd

import (
	"errors"
	"fmt"
	"math"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// done is the Pending of a mutation etcd has already acknowledged.
type done struct{}

func (done) Wait() error { return nil }

// Save records a mutation as one etcd transaction, fenced on the session's
// header; see store.Shared.
func (e *Engine) Save(m *store.Mutation) (store.Pending, error) {
	switch {
	case m.Create:
		return e.create(m)
	case m.Change != nil:
		return e.change(m)
	case m.Drop != "":
		return e.drop(m)
	case m.Expiry != nil:
		e.keepAlive(m.Session.Lease)
		return done{}, nil
	}
	return nil, errors.New("etcd: empty mutation")
}

func (e *Engine) create(m *store.Mutation) (store.Pending, error) {
	r := m.Session
	ctx, cancel := e.ctx()
	defer cancel()
	lease, err := e.c.Grant(ctx, int64(math.Ceil(r.TTL.Seconds())))
	if err != nil {
		return nil, e.unavailable("creating session "+r.ID, err)
	}
	meta := e.keys.meta(r.ID)
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(meta), "=", 0)).
		Then(
			clientv3.OpPut(meta, string(record.EncodeHeader(r)), clientv3.WithLease(lease.ID)),
			clientv3.OpPut(e.keys.index(r.ID), "", clientv3.WithLease(lease.ID)),
			clientv3.OpDelete(e.keys.end(r.ID)),
		).Commit()
	if err != nil {
		e.revoke(lease.ID)
		return nil, e.unavailable("creating session "+r.ID, err)
	}
	if !resp.Succeeded {
		e.revoke(lease.ID)
		return nil, store.ErrSessionExists
	}
	r.Lease = int64(lease.ID)
	m.Fence = resp.Header.Revision
	return done{}, nil
}

func (e *Engine) change(m *store.Mutation) (store.Pending, error) {
	r := m.Session
	id := r.ID
	lease := clientv3.WithLease(clientv3.LeaseID(r.Lease))
	encoded := make(map[*pb.Variable][]byte, len(m.Change.Items))
	rec, err := record.EncodeChange(m.Change, encoded)
	if err != nil {
		return nil, fmt.Errorf("etcd: encoding revision %d of session %q: %w", m.Change.Revision, id, err)
	}
	ops := []clientv3.Op{
		clientv3.OpPut(e.keys.meta(id), string(record.EncodeHeader(r)), lease),
		clientv3.OpPut(e.keys.history(id, m.Change.Revision), string(rec), lease),
	}
	size := len(rec) + 256
	for _, v := range m.Put {
		enc, ok := encoded[v]
		if !ok {
			if enc, err = v.MarshalVT(); err != nil {
				return nil, fmt.Errorf("etcd: encoding variable %q of session %q: %w", v.Name, id, err)
			}
		}
		size += len(enc) + 64
		ops = append(ops, clientv3.OpPut(e.keys.variable(id, v.Id), string(enc), lease))
	}
	for _, vid := range m.Delete {
		ops = append(ops, clientv3.OpDelete(e.keys.variable(id, vid)))
	}
	if m.TrimBelow > 1 {
		// From the first revision, not TrimFrom: whatever an older window
		// left goes too.
		ops = append(ops, clientv3.OpDelete(e.keys.history(id, 0), clientv3.WithRange(e.keys.history(id, m.TrimBelow))))
	}
	if len(ops) > e.opts.MaxTxnOps {
		return nil, &store.LimitError{Limit: "etcd_max_txn_ops", Max: int64(e.opts.MaxTxnOps),
			What: fmt.Sprintf("writing %d variables at once in session %q takes %d etcd operations", len(m.Put)+len(m.Delete), id, len(ops))}
	}
	if size > e.opts.MaxRequestBytes {
		return nil, &store.LimitError{Limit: "etcd_max_request_bytes", Max: int64(e.opts.MaxRequestBytes),
			What: fmt.Sprintf("this write to session %q is a %d-byte etcd request (the variables and their history record)", id, size)}
	}
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.keys.meta(id)), "=", m.Fence)).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil, store.ErrStale // expired meanwhile: the sync that follows finds it gone
		}
		return nil, e.unavailable(fmt.Sprintf("writing revision %d of session %s", m.Change.Revision, id), err)
	}
	if !resp.Succeeded {
		return nil, store.ErrStale
	}
	m.Fence = resp.Header.Revision
	return done{}, nil
}

func (e *Engine) drop(m *store.Mutation) (store.Pending, error) {
	id := m.Drop
	ctx, cancel := e.ctx()
	defer cancel()
	tomb, err := e.c.Grant(ctx, tombTTL)
	if err != nil {
		return nil, e.unavailable("cleaning up session "+id, err)
	}
	data := e.keys.data(id)
	resp, err := e.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(e.keys.meta(id)), "=", m.Fence)).
		Then(
			clientv3.OpDelete(data, clientv3.WithPrefix()),
			clientv3.OpDelete(e.keys.index(id)),
			clientv3.OpPut(e.keys.end(id), string(store.ClosedCleanedUp), clientv3.WithLease(tomb.ID)),
		).Commit()
	if err != nil {
		e.revoke(tomb.ID)
		return nil, e.unavailable("cleaning up session "+id, err)
	}
	if !resp.Succeeded {
		e.revoke(tomb.ID)
		return nil, store.ErrStale
	}
	if m.Session != nil {
		e.revoke(clientv3.LeaseID(m.Session.Lease)) // its keys are gone; free the lease
	}
	return done{}, nil
}

// keepAlive renews a session's lease: it was used. A failure is not the
// caller's: an expired lease ends the session, which the next sync finds.
func (e *Engine) keepAlive(lease int64) {
	if lease == 0 {
		return
	}
	ctx, cancel := e.ctx()
	defer cancel()
	_, _ = e.c.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
}

func (e *Engine) revoke(id clientv3.LeaseID) {
	if id == 0 {
		return
	}
	ctx, cancel := e.ctx()
	defer cancel()
	_, _ = e.c.Revoke(ctx, id)
}
