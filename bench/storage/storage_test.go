// Package storage compares the two embedded engines issue 11 considered for
// varbridge's durable store, Pebble (github.com/cockroachdb/pebble/v2, what
// internal/disk uses) and bbolt (go.etcd.io/bbolt, etcd's backend), on
// varbridge's write: one atomic, fsynced transaction that appends a history
// record, puts the variable, rewrites the session header and trims the
// oldest record out of a sliding history window. It is its own module so
// that bbolt stays at v1.4 (etcd 3.7, in the bench module, needs v1.5).
//
//	cd bench/storage && go test -run '^$' -bench . -benchtime 3s
//
// Each engine is set up as its user sets it up: Pebble with its defaults
// (a synced batch per write; concurrent synced batches share a log fsync),
// bbolt with etcd's options (map freelist, freelist not synced), one
// Update per write for one writer, and for 64 writers both Update (one
// fsync per transaction, writers queue for the single writer lock) and
// Batch (bbolt's group commit: concurrent calls share a transaction, up to
// 10 ms of delay).
package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	bolt "go.etcd.io/bbolt"
)

// window is the history records kept per session (varbridge's default
// --history-limit).
const window = 10_000

// Sizes of varbridge's records for a small integer write (about what
// internal/disk encodes).
var (
	historyValue = make([]byte, 96)
	varValue     = make([]byte, 64)
	headerValue  = make([]byte, 48)
)

// engine is one of the two stores under the same workload.
type engine interface {
	// write is one varbridge write to session s at revision rev: history
	// record rev in, variable and header rewritten, record rev-window out.
	write(s int, rev uint64) error
	// drop removes everything of session s (CleanupSession).
	drop(s int) error
	// reclaim is what the engine can do to hand space back (Pebble:
	// compact the dropped range; bbolt: nothing while open).
	reclaim() error
	close() error
}

func key(s int, kind byte, suffix uint64) []byte {
	k := make([]byte, 0, 16)
	k = binary.BigEndian.AppendUint32(k, uint32(s))
	k = append(k, kind)
	return binary.BigEndian.AppendUint64(k, suffix)
}

type pebbleEngine struct{ db *pebble.DB }

func openPebble(dir string) (engine, error) {
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: quiet{}})
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db}, nil
}

func (e *pebbleEngine) write(s int, rev uint64) error {
	b := e.db.NewBatch()
	defer b.Close()
	_ = b.Set(key(s, 'h', rev), historyValue, nil)
	_ = b.Set(key(s, 'v', rev%64), varValue, nil)
	_ = b.Set(key(s, 'a', 0), headerValue, nil)
	if rev > window {
		_ = b.Delete(key(s, 'h', rev-window), nil)
	}
	return e.db.Apply(b, pebble.Sync)
}

func (e *pebbleEngine) drop(s int) error {
	return e.db.DeleteRange(key(s, 0, 0), key(s+1, 0, 0), pebble.Sync)
}

func (e *pebbleEngine) reclaim() error {
	return e.db.Compact(context.Background(), key(0, 0, 0), key(1<<31, 0, 0), true)
}

func (e *pebbleEngine) close() error { return e.db.Close() }

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

type boltEngine struct {
	db    *bolt.DB
	batch bool // db.Batch (group commit) rather than db.Update
}

func openBolt(batch bool) func(dir string) (engine, error) {
	return func(dir string) (engine, error) {
		// etcd's settings (server/storage/backend).
		db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, &bolt.Options{
			FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
		})
		if err != nil {
			return nil, err
		}
		return &boltEngine{db: db, batch: batch}, nil
	}
}

func bucket(s int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(s)) }

func (e *boltEngine) write(s int, rev uint64) error {
	fn := func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket(s))
		if err != nil {
			return err
		}
		if err := b.Put(key(s, 'h', rev), historyValue); err != nil {
			return err
		}
		if err := b.Put(key(s, 'v', rev%64), varValue); err != nil {
			return err
		}
		if err := b.Put(key(s, 'a', 0), headerValue); err != nil {
			return err
		}
		if rev > window {
			return b.Delete(key(s, 'h', rev-window))
		}
		return nil
	}
	if e.batch {
		return e.db.Batch(fn)
	}
	return e.db.Update(fn)
}

func (e *boltEngine) drop(s int) error {
	return e.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucket(s)) })
}

func (e *boltEngine) reclaim() error { return nil }

func (e *boltEngine) close() error { return e.db.Close() }

var engines = []struct {
	name string
	open func(dir string) (engine, error)
}{
	{"pebble", openPebble},
	{"bbolt-update", openBolt(false)},
	{"bbolt-batch", openBolt(true)},
}

// BenchmarkWrite: writers concurrent writers, each on its own session,
// each waiting for its write's fsync before the next. ns/op is wall time
// per write over all writers (writes/s = 1e9 / ns/op).
func BenchmarkWrite(b *testing.B) {
	for _, writers := range []int{1, 64} {
		for _, en := range engines {
			if writers == 1 && en.name == "bbolt-batch" {
				continue // one caller: Batch only adds its delay
			}
			b.Run(fmt.Sprintf("writers=%d/%s", writers, en.name), func(b *testing.B) {
				e, err := en.open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer e.close()
				var next atomic.Int64
				var wg sync.WaitGroup
				errc := make(chan error, writers)
				b.ResetTimer()
				for w := range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for rev := uint64(1); next.Add(1) <= int64(b.N); rev++ {
							if err := e.write(w, rev); err != nil {
								errc <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				select {
				case err := <-errc:
					b.Fatal(err)
				default:
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			})
		}
	}
}

// BenchmarkSpace writes b.N writes of one session through the sliding
// window, then drops the session, and reports the bytes the engine's
// files take at the end of the writes (window-bytes: the window is
// 10,000 records) and after the drop and what the engine can do online to
// reclaim space (dropped-bytes). Run it with -benchtime 200000x.
func BenchmarkSpace(b *testing.B) {
	for _, en := range engines[:2] {
		b.Run(en.name, func(b *testing.B) {
			dir := b.TempDir()
			e, err := en.open(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer e.close()
			for rev := uint64(1); rev <= uint64(b.N); rev++ {
				if err := e.write(0, rev); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			full := dirBytes(dir)
			if err := e.drop(0); err != nil {
				b.Fatal(err)
			}
			if err := e.reclaim(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(full), "window-bytes")
			b.ReportMetric(float64(dirBytes(dir)), "dropped-bytes")
		})
	}
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
