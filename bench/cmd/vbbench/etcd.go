package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdServe runs a single-member etcd (embedded, go.etcd.io/etcd/server/v3
// from the Go module proxy) with its data in dir, on loopback, with etcd's
// defaults otherwise (the WAL fsynced before a write is acknowledged), until
// stdin closes. It is the "etcd-serve" subcommand, run as a child process
// so that etcd has a process (and CPU accounting) of its own.
func etcdServe(dir string) error {
	client, err := freeLoopbackURL()
	if err != nil {
		return err
	}
	peer, err := freeLoopbackURL()
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = "vbbench"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return errors.New("etcd not ready within 30s")
	}
	fmt.Printf("listening on %s\n", client.Host)
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	return nil
}

// freeLoopbackURL returns http://127.0.0.1:PORT for a port free a moment ago.
func freeLoopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.Parse("http://" + addr)
}

func startEtcd(self, dir string) (*proc, error) {
	return startListener("etcd", self, "etcd-serve", "-dir", dir)
}

// startEtcdTemp starts etcd on a data directory of its own, which stop
// removes.
func startEtcdTemp(self string) (p *proc, stop func(), err error) {
	dir, err := os.MkdirTemp("", "vbbench-etcd-")
	if err != nil {
		return nil, nil, err
	}
	if p, err = startEtcd(self, dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	return p, func() { p.stop(); _ = os.RemoveAll(dir) }, nil
}

func etcdClient(addr string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
}

// etcdLatencyGo measures clientv3 Put -> a clientv3 Watch on another
// client (connection), the same workload as the varbridge latency runs:
// values are the writer's CLOCK_MONOTONIC send times, -1 stops. etcd has no
// commit timestamp, so only the from-send samples are taken.
func etcdLatencyGo(ctx context.Context, addr, key string, n, rate int) (latSamples, error) {
	var ls latSamples
	wcli, err := etcdClient(addr)
	if err != nil {
		return ls, err
	}
	defer wcli.Close()
	rcli, err := etcdClient(addr)
	if err != nil {
		return ls, err
	}
	defer rcli.Close()
	put, err := wcli.Put(ctx, key, "0")
	if err != nil {
		return ls, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := rcli.Watch(wctx, key, clientv3.WithRev(put.Header.Revision+1), clientv3.WithCreatedNotify())
	created, ok := <-wch
	if !ok || !created.Created {
		return ls, fmt.Errorf("etcd watch not created: %v", created.Err())
	}
	ls.send = make([]int64, 0, n)
	recvErr := make(chan error, 1)
	go func() {
		for wr := range wch {
			now := mono()
			if err := wr.Err(); err != nil {
				recvErr <- err
				return
			}
			for _, ev := range wr.Events {
				v, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
				if err != nil {
					recvErr <- err
					return
				}
				if v < 0 {
					recvErr <- nil
					return
				}
				ls.send = append(ls.send, now-v)
			}
		}
		recvErr <- errors.New("etcd watch ended")
	}()
	if err := pacedWriter(ctx, n, rate, func(v int64) error {
		_, err := wcli.Put(ctx, key, strconv.FormatInt(v, 10))
		return err
	}); err != nil {
		return ls, err
	}
	if err := awaitStop(recvErr, "etcd watcher"); err != nil {
		return ls, err
	}
	ls.missed = n - len(ls.send)
	return ls, nil
}
