// Package storage compares the two embedded engines issue 11 considered for
// varbridge's durable store, Pebble (github.com/cockroachdb/pebble/v2, what
// internal/disk uses) and bbolt (go.etcd.io/bbolt, etcd's backend), on
// varbridge's write: one atomic, fsynced transaction that appends a history
// record, puts the variable, rewrites the session header and trims the
// oldest record out of a sliding history window. It is its own module so
// that bbolt stays at v1.4 (etcd 3.7, in the bench module, needs v1.5).
//
//	cd bench/storage && go test -run '^$' -bench Write -benchtime 3s -count 3
//	cd bench/storage && go test -run '^$' -bench Space -benchtime 30000x
//	cd bench/storage && go test -run '^$' -bench Trim -benchtime 3x
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
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	// reclaim is what the engine can do online to hand space back
	// (Pebble: flush the memtable, so its log can go, and compact the
	// dropped range; bbolt: nothing, its file never shrinks while open).
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
	if err := e.db.Flush(); err != nil {
		return err
	}
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
// reclaim space (dropped-bytes; dropped-log-bytes of it are Pebble's
// write-ahead log files). Run it with -benchtime 30000x.
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
			b.ReportMetric(float64(settledBytes(dir)), "dropped-bytes")
			b.ReportMetric(float64(logBytes(dir)), "dropped-log-bytes")
		})
	}
}

// trimFill is the history BenchmarkTrim builds (a session whose window
// was raised, or an operator lowering --history-limit), and trimKeep what
// the trim keeps.
const trimFill, trimKeep = 300_000, 10_000

// BenchmarkTrim builds one session of trimFill history records (written
// without fsync: the build is not what is measured), then times one
// synced trim of all but the newest trimKeep (Pebble: one range deletion;
// bbolt: a cursor deleting each key in one transaction), and reports the
// files' bytes before the trim, after it, and after what the engine can do
// online to hand space back (Pebble: flush and compact; bbolt: nothing;
// reclaimed-log-bytes of it are Pebble's write-ahead log files).
func BenchmarkTrim(b *testing.B) {
	for _, en := range []string{"pebble", "bbolt"} {
		b.Run(en, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				dir := b.TempDir()
				var trim, reclaim func() error
				var closeFn func() error
				first, last := key(0, 'h', 1), key(0, 'h', trimFill-trimKeep+1)
				switch en {
				case "pebble":
					db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: quiet{}})
					if err != nil {
						b.Fatal(err)
					}
					closeFn = db.Close
					for rev := uint64(1); rev <= trimFill; rev++ {
						if err := db.Set(key(0, 'h', rev), historyValue, pebble.NoSync); err != nil {
							b.Fatal(err)
						}
					}
					trim = func() error { return db.DeleteRange(first, last, pebble.Sync) }
					reclaim = func() error {
						if err := db.Flush(); err != nil {
							return err
						}
						return db.Compact(context.Background(), first, key(1, 0, 0), true)
					}
				case "bbolt":
					db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
					if err != nil {
						b.Fatal(err)
					}
					closeFn = db.Close
					db.NoSync = true
					for rev := uint64(1); rev <= trimFill; rev += 1000 {
						if err := db.Update(func(tx *bolt.Tx) error {
							bk, err := tx.CreateBucketIfNotExists(bucket(0))
							if err != nil {
								return err
							}
							for r := rev; r < rev+1000; r++ {
								if err := bk.Put(key(0, 'h', r), historyValue); err != nil {
									return err
								}
							}
							return nil
						}); err != nil {
							b.Fatal(err)
						}
					}
					if err := db.Sync(); err != nil {
						b.Fatal(err)
					}
					db.NoSync = false
					trim = func() error {
						return db.Update(func(tx *bolt.Tx) error {
							c := tx.Bucket(bucket(0)).Cursor()
							for k, _ := c.Seek(first); k != nil && string(k) < string(last); k, _ = c.Next() {
								if err := c.Delete(); err != nil {
									return err
								}
							}
							return nil
						})
					}
					reclaim = func() error { return nil }
				}
				before := dirBytes(dir)
				b.StartTimer()
				if err := trim(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				trimmed := dirBytes(dir)
				if err := reclaim(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(before), "before-bytes")
				b.ReportMetric(float64(trimmed), "trimmed-bytes")
				b.ReportMetric(float64(settledBytes(dir)), "reclaimed-bytes")
				b.ReportMetric(float64(logBytes(dir)), "reclaimed-log-bytes")
				if err := closeFn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// settledBytes is dirBytes once it stopped changing for a second (Pebble
// deletes obsolete files in the background), or after 10 s.
func settledBytes(dir string) int64 {
	n := dirBytes(dir)
	for range 10 {
		time.Sleep(time.Second)
		m := dirBytes(dir)
		if m == n {
			break
		}
		n = m
	}
	return n
}

// logBytes is the size of Pebble's write-ahead log files in dir (it keeps
// a few old ones to reuse): space the engine holds whatever the data.
func logBytes(dir string) int64 {
	var n int64
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		if info, err := os.Stat(l); err == nil {
			n += info.Size()
		}
	}
	return n
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
