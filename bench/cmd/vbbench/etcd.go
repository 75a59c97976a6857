package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// etcdMember is how an etcd-serve child joins a cluster: its name, its
// client, peer and metrics URLs, and the cluster's every name=peerURL. The
// zero value is a single member on free loopback ports.
type etcdMember struct {
	name, client, peer, metrics, cluster string
}

// etcdServe runs one etcd member (embedded, go.etcd.io/etcd/server/v3 from
// the Go module proxy) with its data in dir, on loopback, with etcd's
// defaults otherwise (the WAL fsynced before a write is acknowledged), until
// stdin closes. It is the "etcd-serve" subcommand, run as a child process
// so that etcd has a process (and CPU accounting) of its own. A member of a
// larger cluster (m.cluster set) is ready once the cluster has a leader, so
// the parent starts every member before waiting for any.
func etcdServe(dir string, m etcdMember) error {
	for _, p := range []*string{&m.client, &m.peer} {
		if *p == "" {
			u, err := freeLoopbackURL()
			if err != nil {
				return err
			}
			*p = u.String()
		}
	}
	client, err := url.Parse(m.client)
	if err != nil {
		return err
	}
	peer, err := url.Parse(m.peer)
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = "vbbench"
	if m.name != "" {
		cfg.Name = m.name
	}
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	if m.cluster != "" {
		cfg.InitialCluster = m.cluster
		cfg.InitialClusterToken = "vbbench-cluster"
	}
	if m.metrics != "" {
		mu, err := url.Parse(m.metrics)
		if err != nil {
			return err
		}
		cfg.ListenMetricsUrls = []url.URL{*mu}
	}
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
	if m.metrics != "" {
		fmt.Printf("metrics on %s/metrics\n", m.metrics)
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

// freeLoopbackURLs is freeLoopbackURL n times, every port held until all
// are picked, so they differ.
func freeLoopbackURLs(n int) ([]*url.URL, error) {
	var out []*url.URL
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		u, err := url.Parse("http://" + l.Addr().String())
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func startEtcd(self, dir string) (*proc, error) {
	return startListener("etcd", self, "etcd-serve", "-dir", dir)
}

// startEtcdCluster starts an etcd cluster of n members on loopback, each
// an etcd-serve child with its data in a temporary directory and its
// Prometheus metrics on a URL of its own (proc.metrics); stop stops every
// member and removes the data.
func startEtcdCluster(self string, n int) (members []*proc, stop func(), err error) {
	dir, err := os.MkdirTemp("", "vbbench-etcd-cluster-")
	if err != nil {
		return nil, nil, err
	}
	us, err := freeLoopbackURLs(3 * n)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	ms := make([]etcdMember, n)
	var peers []string
	for i := range ms {
		ms[i] = etcdMember{name: fmt.Sprintf("m%d", i), client: us[3*i].String(), peer: us[3*i+1].String(), metrics: us[3*i+2].String()}
		peers = append(peers, ms[i].name+"="+ms[i].peer)
	}
	members = make([]*proc, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() { // every member starts before any is ready (quorum)
			defer wg.Done()
			members[i], errs[i] = startListener("etcd-"+m.name, self, "etcd-serve", "-dir", filepath.Join(dir, m.name),
				"-name", m.name, "-client-url", m.client, "-peer-url", m.peer, "-metrics-url", m.metrics,
				"-initial-cluster", strings.Join(peers, ","))
		}()
	}
	wg.Wait()
	stop = func() {
		for _, p := range members {
			if p != nil {
				p.stop()
			}
		}
		_ = os.RemoveAll(dir)
	}
	if err := errors.Join(errs...); err != nil {
		stop()
		return nil, nil, err
	}
	return members, stop, nil
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

// etcdLatencyGo measures clientv3 Put (a client of writerAddr) -> a
// clientv3 Watch on another client (of watcherAddr: the same member, or
// another member of a cluster), the same workload as the varbridge latency runs:
// values are the writer's CLOCK_MONOTONIC send times, -1 stops. etcd has no
// commit timestamp, so only the from-send samples are taken.
func etcdLatencyGo(ctx context.Context, writerAddr, watcherAddr, key string, n, rate int) (latSamples, error) {
	var ls latSamples
	wcli, err := etcdClient(writerAddr)
	if err != nil {
		return ls, err
	}
	defer wcli.Close()
	rcli, err := etcdClient(watcherAddr)
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
