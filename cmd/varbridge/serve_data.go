package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/varbridge/varbridge/internal/disk"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
)

// defaultDataDir is where serve keeps its data unless told (etcd's
// ./default.etcd, likewise, is relative to where it starts).
const defaultDataDir = "./varbridge.data"

// dataFlags are serve's flags for where and how its data is kept.
type dataFlags struct {
	dir     string
	memory  bool
	fsync   string
	restore string
	etcd    etcdFlags // serve_etcd.go
}

func (d *dataFlags) register(f *pflag.FlagSet) {
	f.StringVar(&d.dir, "data-dir", defaultDataDir,
		"directory that keeps sessions, variables and watch history across restarts (created when missing)")
	f.BoolVar(&d.memory, "memory", false,
		"keep everything in memory: a restart loses every session (tests, benchmarks, throwaway servers)")
	f.StringVar(&d.fsync, "fsync", "always",
		"when a write is acknowledged: always (on disk; a crash of the process or the machine loses nothing), "+
			"batch (handed to the OS, synced every 10ms: a killed process loses nothing, a power cut the last 10ms), "+
			"never (handed to the OS, synced when it likes)")
	f.StringVar(&d.restore, "restore", "",
		"before starting, make --data-dir (new or empty) from this snapshot file (varbridge snapshot save)")
	d.etcd.register(f)
}

// open returns the engine serve's store keeps its data in (nil with
// --memory) and logs what it did.
func (d *dataFlags) open(log *slog.Logger, changed func(string) bool) (store.Engine, error) {
	if len(d.etcd.endpoints) > 0 {
		for _, f := range []string{"memory", "data-dir", "fsync", "restore"} {
			if changed(f) {
				return nil, fmt.Errorf("--etcd-endpoints keeps the data in etcd; it does not go with --%s", f)
			}
		}
		return d.etcd.open(log)
	}
	if d.memory {
		for _, f := range []string{"data-dir", "fsync", "restore"} {
			if changed(f) {
				return nil, fmt.Errorf("--memory keeps nothing on disk; it does not go with --%s", f)
			}
		}
		log.Info("keeping everything in memory (--memory): a restart loses every session")
		return nil, nil
	}
	mode, err := disk.ParseFsync(d.fsync)
	if err != nil {
		return nil, fmt.Errorf("--fsync: %w", err)
	}
	if d.dir == "" {
		return nil, errors.New("--data-dir is empty: give a directory, or --memory to keep nothing on disk")
	}
	if d.restore != "" {
		if err := d.restoreSnapshot(log); err != nil {
			return nil, err
		}
	}
	eng, err := disk.Open(d.dir, disk.Options{Fsync: mode, Logger: log})
	if err != nil {
		return nil, err
	}
	return eng, nil
}

func (d *dataFlags) restoreSnapshot(log *slog.Logger) error {
	f, err := os.Open(d.restore)
	if err != nil {
		return fmt.Errorf("--restore: %w", err)
	}
	defer f.Close()
	start := time.Now()
	info, err := disk.Restore(f, d.dir)
	if err != nil {
		return fmt.Errorf("--restore %s: %w", d.restore, err)
	}
	log.Info("restored a snapshot: its sessions get new incarnations, so their watchers resync",
		"file", d.restore, "data_dir", d.dir, "files", info.Files, "bytes", info.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// openStore opens the store on eng (memory only when nil) and logs what
// it recovered.
func openStore(log *slog.Logger, so store.Options, eng store.Engine) (*store.Store, []server.Option, error) {
	if eng == nil {
		st, _, err := store.Open(so)
		return st, nil, err
	}
	so.Engine = eng
	de, ok := eng.(*disk.Engine)
	if !ok { // etcd: sessions are loaded as they are used
		st, _, err := store.Open(so)
		if err != nil {
			_ = eng.Close()
		}
		why := server.WithoutSnapshots("this server keeps its data in etcd (serve --etcd-endpoints): snapshot etcd itself (etcdctl snapshot save)")
		return st, []server.Option{why}, err
	}
	start := time.Now()
	st, rec, err := store.Open(so)
	if err != nil {
		_ = eng.Close()
		return nil, nil, err
	}
	log.Info("data recovered", "data_dir", de.Dir(), "sessions", rec.Sessions, "variables", rec.Variables,
		"revisions", rec.Changes, "expired_while_down", rec.Expired, "took", time.Since(start).Round(time.Millisecond))
	snap := func(w io.Writer) error { _, err := de.Snapshot(w); return err }
	return st, []server.Option{server.WithSnapshots(snap)}, nil
}
