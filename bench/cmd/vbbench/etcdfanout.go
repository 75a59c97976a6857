package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// openEtcdWatchers is openMuxWatchers on etcd's watch, the same layout: n
// clientv3 watchers of key over conns clients of addr (each client carries
// its watchers on one gRPC stream, as a varbridge connection carries its
// watches on one Watch stream). Values are the writer's CLOCK_MONOTONIC
// send times in decimal; it records up to maxWrites writes.
func openEtcdWatchers(ctx context.Context, addr, key string, n, conns, maxWrites int) (*fanout, error) {
	f := newFanout(addr, key, n, maxWrites)
	clients := make([]*clientv3.Client, 0, conns)
	wctx, cancel := context.WithCancel(ctx)
	f.cancel = func() {
		cancel()
		for _, c := range clients {
			_ = c.Close()
		}
	}
	for range conns {
		c, err := etcdClient(addr)
		if err != nil {
			f.close()
			return nil, err
		}
		clients = append(clients, c)
	}
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
					f.errs.Add(1)
					return
				}
				for _, ev := range wr.Events {
					if w >= maxWrites {
						continue
					}
					v, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
					if err != nil {
						f.errs.Add(1)
						return
					}
					f.got(w, i, now-v)
					w++
				}
			}
		}()
	}
	for range n {
		select {
		case <-created:
		case <-time.After(2 * time.Minute):
			f.close()
			return nil, fmt.Errorf("etcd watchers not created within 2 minutes")
		}
	}
	f.opened = time.Since(t0)
	return f, nil
}
