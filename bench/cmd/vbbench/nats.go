package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServe runs nats-server with JetStream (file storage in dir) on a free
// loopback port until stdin closes; it is the "nats-serve" subcommand, run
// as a child process so that NATS, like varbridge, has a process of its own.
// With syncAlways it reads its settings from a configuration file written
// into dir with `sync_interval: always` in its jetstream block (fsync after
// every write, as operators configure it), and the same settings otherwise.
func natsServe(dir string, syncAlways bool) error {
	opts := &natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 1 << 20,
	}
	if syncAlways {
		conf := filepath.Join(dir, "nats-server.conf")
		text := fmt.Sprintf("host: 127.0.0.1\nport: -1\nmax_payload: 1MB\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", filepath.Join(dir, "js"))
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return err
		}
		var err error
		if opts, err = natsserver.ProcessConfigFile(conf); err != nil {
			return err
		}
		if !opts.SyncAlways {
			return fmt.Errorf("%s: sync_interval: always did not set SyncAlways", conf)
		}
		opts.NoLog, opts.NoSigs = true, true
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return err
	}
	ns.Start()
	if !ns.ReadyForConnections(20 * time.Second) {
		return errors.New("nats-server not ready within 20s")
	}
	fmt.Printf("listening on %s\n", ns.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}

func startNATS(self, dir string) (*proc, error) {
	return startListener("nats-server", self, "nats-serve", "-dir", dir)
}

// startNATSSyncAlways starts a nats-server whose JetStream fsyncs every
// write (sync_interval: always, from its configuration file).
func startNATSSyncAlways(self, dir string) (*proc, error) {
	return startListener("nats-server (sync always)", self, "nats-serve", "-dir", dir, "-sync-always")
}

// natsStorage names the two ways the bench runs a NATS KV bucket: memory
// (like-for-like with varbridge's in-memory store) and file (JetStream's
// default sync: written to the file at once, fsynced every
// natsFileSync, not per write).
type natsStorage struct {
	name    string // "mem" or "file": the figures are nats_<name>_*
	storage jetstream.StorageType
	desc    string // for params
}

var natsMem = natsStorage{"mem", jetstream.MemoryStorage, "history 1, memory storage (like-for-like with varbridge's in-memory store)"}
var natsFile = natsStorage{"file", jetstream.FileStorage, "history 1, file storage in a temp dir, JetStream's default sync (fsync every 2 min, not per write)"}

// natsFileSync is file storage on a server configured with
// `sync_interval: always`: like-for-like with varbridge --fsync always.
var natsFileSync = natsStorage{"file_sync", jetstream.FileStorage, "history 1, file storage in a temp dir, nats-server configured with jetstream { sync_interval: always } (fsync after every write)"}

// natsKV creates (or resets) bucket with key set to "0" and returns it.
func natsKV(ctx context.Context, url, bucket, key string, st natsStorage) (*nats.Conn, jetstream.KeyValue, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	_ = js.DeleteKeyValue(ctx, bucket)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: st.storage})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if _, err := kv.Put(ctx, key, []byte("0")); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, kv, nil
}

// natsWriter returns a write function for pacedWriter: kv.Put of the
// value as decimal text, which returns once JetStream acknowledged it.
func natsWriter(ctx context.Context, kv jetstream.KeyValue, key string) func(int64) error {
	return func(v int64) error {
		_, err := kv.Put(ctx, key, strconv.AppendInt(nil, v, 10))
		return err
	}
}

// natsLatencyGo measures kv.Put -> a nats.go KV watcher on another
// connection, the same workload as grpcLatencyRaw.
func natsLatencyGo(ctx context.Context, url, bucket string, st natsStorage, n, rate int) (latSamples, error) {
	var ls latSamples
	wnc, kv, err := natsKV(ctx, url, bucket, "x", st)
	if err != nil {
		return ls, err
	}
	defer wnc.Close()
	rnc, err := nats.Connect(url)
	if err != nil {
		return ls, err
	}
	defer rnc.Close()
	rjs, err := jetstream.New(rnc)
	if err != nil {
		return ls, err
	}
	rkv, err := rjs.KeyValue(ctx, bucket)
	if err != nil {
		return ls, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := rkv.Watch(wctx, "x")
	if err != nil {
		return ls, err
	}
	defer func() { _ = w.Stop() }()
	// The current value, then nil: the watch is live.
	for e := range w.Updates() {
		if e == nil {
			break
		}
	}
	ls.send = make([]int64, 0, n)
	ls.commit = make([]int64, 0, n)
	recvErr := make(chan error, 1)
	go func() {
		for e := range w.Updates() {
			now, wall := mono(), time.Now().UnixNano()
			if e == nil {
				continue
			}
			v, err := strconv.ParseInt(string(e.Value()), 10, 64)
			if err != nil {
				recvErr <- err
				return
			}
			if v < 0 {
				recvErr <- nil
				return
			}
			ls.send = append(ls.send, now-v)
			ls.commit = append(ls.commit, wall-e.Created().UnixNano())
		}
		recvErr <- errors.New("watch ended")
	}()
	if err := pacedWriter(ctx, n, rate, natsWriter(ctx, kv, "x")); err != nil {
		return ls, err
	}
	if err := awaitStop(recvErr, "nats watcher"); err != nil {
		return ls, err
	}
	ls.missed = n - len(ls.send)
	return ls, nil
}
