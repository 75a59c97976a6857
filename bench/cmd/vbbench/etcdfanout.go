package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdFanout measures the fanout group's spaced writes on etcd's watch with
// the same layout: n watchers of one key over conns clients (each client
// multiplexes its watchers on one gRPC stream, as varbridge's shared Watch
// streams do), in this process, against etcd in its own; one clientv3
// writer. It returns the p50, p99 and max (ns) of every delivery of the
// writes after the first two.
func etcdFanout(ctx context.Context, addr string, n, conns, writes int) (p50, p99, pmax float64, opened time.Duration, err error) {
	key := fmt.Sprintf("fan-%d", time.Now().UnixNano())
	clients := make([]*clientv3.Client, conns)
	for i := range clients {
		if clients[i], err = etcdClient(addr); err != nil {
			return 0, 0, 0, 0, err
		}
		defer clients[i].Close()
	}
	writer, err := etcdClient(addr)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer writer.Close()
	lat := make([][]int64, writes)
	recvd := make([]atomic.Int64, writes)
	done := make([]chan struct{}, writes)
	for w := range writes {
		lat[w] = make([]int64, n)
		done[w] = make(chan struct{})
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var failed atomic.Int64
	created := make(chan struct{}, n)
	t0 := time.Now()
	for i := range n {
		wch := clients[i%conns].Watch(wctx, key, clientv3.WithCreatedNotify())
		go func() {
			w := 0
			for wr := range wch {
				now := mono()
				if wr.Created {
					created <- struct{}{}
					continue
				}
				if wr.Err() != nil {
					failed.Add(1)
					return
				}
				for _, ev := range wr.Events {
					if w >= writes {
						continue
					}
					v, perr := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
					if perr != nil {
						failed.Add(1)
						return
					}
					lat[w][i] = now - v
					if recvd[w].Add(1) == int64(n) {
						close(done[w])
					}
					w++
				}
			}
		}()
	}
	for range n {
		select {
		case <-created:
		case <-time.After(60 * time.Second):
			return 0, 0, 0, 0, fmt.Errorf("etcd watchers not created within 60 s")
		}
	}
	opened = time.Since(t0)
	var all []int64
	for w := range writes {
		if _, err := writer.Put(ctx, key, strconv.FormatInt(mono(), 10)); err != nil {
			return 0, 0, 0, 0, err
		}
		select {
		case <-done[w]:
		case <-time.After(30 * time.Second):
			return 0, 0, 0, 0, fmt.Errorf("etcd write %d reached %d of %d watchers within 30 s", w, recvd[w].Load(), n)
		}
		if w >= 2 { // the first two warm up, as in the varbridge runs
			all = append(all, lat[w]...)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := failed.Load(); f > 0 {
		return 0, 0, 0, 0, fmt.Errorf("%d etcd watchers failed", f)
	}
	p50, p99, pmax = latencyStats(all)
	return p50, p99, pmax, opened, nil
}
