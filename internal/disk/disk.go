// Package disk is varbridge's durable storage engine: a store.Engine that
// keeps sessions, variables, revisions and the watch history window in a
// Pebble database (github.com/cockroachdb/pebble), CockroachDB's storage
// engine, which brings the write-ahead log, group commit of synced batches,
// crash recovery and range deletions.
//
// Every mutation is one Pebble batch, so it is on disk whole or not at all.
// The store saves a session's mutations under the session's lock, in
// revision order, through Pebble's two-step commit (ApplyNoSyncWait, then
// SyncWait after the lock is released): the log keeps them in that order,
// and writers that wait at the same time share one fsync.
//
// What the fsync modes promise (see Fsync):
//   - always (the default): a write is acknowledged, and shown to watchers,
//     once it is fsynced: no crash of the process or the machine takes it
//     back.
//   - batch: a write is acknowledged, and shown, once the operating system
//     has it: a killed process loses nothing, and a machine that crashes or
//     loses power loses at most the last SyncInterval (10 ms) of writes.
//   - never: as batch, with the fsync left to the operating system (Linux
//     writes dirty pages back within about 30 s).
//
// A full disk is met before Pebble meets it: writes are refused with a
// StorageFullError while less than Reserve bytes are free, and a ballast
// file released on the first ENOSPC keeps Pebble's own writes going (the
// approach of CockroachDB). A failed write or fsync is fatal to the data
// on disk's promises: the engine refuses every later write (StorageFailed)
// until a restart recovers from disk.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Defaults for Options.
const (
	DefaultSyncInterval = 10 * time.Millisecond
	DefaultReserve      = 64 << 20
)

// Options configure Open.
type Options struct {
	Fsync Fsync
	// SyncInterval is how often FsyncBatch fsyncs the log.
	SyncInterval time.Duration
	// Reserve is the free space below which writes are refused: room for
	// Pebble's flushes and compactions, which free space later.
	Reserve uint64
	Logger  *slog.Logger
}

// markerName is the file that makes a directory a varbridge data directory.
const markerName = "VARBRIDGE"

// markerText is its content: the layout version of the data.
const markerText = "varbridge data directory, layout 1\n"

const ballastName = "BALLAST"

// exitCorrupt is the exit status after on-disk corruption (EX_DATAERR).
const exitCorrupt = 65

// Engine is a Pebble-backed store.Engine.
type Engine struct {
	dir  string
	opts Options
	log  *slog.Logger
	db   *pebble.DB
	wal  *walFS

	failed atomic.Pointer[store.StorageFailedError]
	chunks chunks // which records are kept in chunks

	// The free-space guard: writes skip the statfs while they are sure to
	// fit (before nextCheck and within budget bytes).
	spaceMu   sync.Mutex
	nextCheck atomic.Int64 // unix nanoseconds
	budget    atomic.Int64 // bytes
	full      atomic.Bool  // the ballast was released: refuse until space is back

	stop chan struct{}
	done sync.WaitGroup
}

// OpenError is why a data directory could not be opened. Nothing in it
// was changed.
type OpenError struct {
	Dir  string
	File string // the file at fault, when known
	Err  error
}

// Error names the directory, the file and what to do.
func (e *OpenError) Error() string {
	where := ""
	if e.File != "" {
		where = " (file " + e.File + ")"
	}
	return fmt.Sprintf("cannot open data directory %s%s: %v; nothing was changed. "+
		"Restore it from a snapshot (varbridge serve --restore FILE --data-dir NEW_DIR), "+
		"or move the directory away to start with an empty one", e.Dir, where, e.Err)
}

// Unwrap returns the cause.
func (e *OpenError) Unwrap() error { return e.Err }

// Open opens the data directory dir, creating it when it does not exist or
// is empty. A directory that holds something else, or damaged data, is
// refused with an *OpenError: the engine never starts empty over data.
func Open(dir string, opts Options) (*Engine, error) {
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.Reserve == 0 {
		opts.Reserve = DefaultReserve
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	fresh, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, opts: opts, log: opts.Logger, stop: make(chan struct{})}
	e.ensureBallast()
	e.wal = newWALFS(vfs.OnDiskFull(vfs.Default, e.releaseBallast), opts.Fsync)
	// Pebble finds a damaged table only when it reads it, and a compaction
	// that does stops the process (or stalls Open): check every table's
	// checksums first, so that startup refuses the directory naming it.
	if err := checkTables(dir); err != nil {
		return nil, err
	}
	db, err := e.openDB(fresh)
	if err != nil {
		return nil, err
	}
	e.db = db
	if err := e.checkLayout(fresh); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := e.finishRestore(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if opts.Fsync == FsyncBatch {
		e.done.Add(1)
		go e.syncLoop()
	}
	return e, nil
}

// openDB opens Pebble on e.dir.
func (e *Engine) openDB(fresh bool) (*pebble.DB, error) {
	po := &pebble.Options{
		FS:                 e.wal,
		Logger:             pebbleLogger{e.log},
		ErrorIfNotExists:   !fresh,
		FormatMajorVersion: pebble.FormatNewest,
		EventListener: &pebble.EventListener{
			DataCorruption: e.onCorruption,
		},
	}
	db, err := pebble.Open(e.dir, po)
	if err != nil {
		return nil, &OpenError{Dir: e.dir, File: faultyFile(e.dir, err), Err: err}
	}
	return db, nil
}

// onCorruption is Pebble's report of a damaged file met while serving.
// Pebble's answer stands: stop (its compactions would retry the file
// forever), with the file named and what to do; the restart then refuses
// the directory the same way (checkTables), before serving.
func (e *Engine) onCorruption(info pebble.DataCorruptionInfo) {
	err := &OpenError{Dir: e.dir, File: filepath.Base(info.Path), Err: fmt.Errorf("on-disk corruption: %v", info.Details)}
	e.log.Error("fatal storage error, exiting: "+err.Error(), "component", "pebble")
	os.Exit(exitCorrupt)
}

// checkTables verifies the block checksums of every table in dir with
// Pebble's own reader.
func checkTables(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return &OpenError{Dir: dir, Err: err}
	}
	ro := (&pebble.Options{}).MakeReaderOptions()
	for _, en := range entries {
		if !strings.HasSuffix(en.Name(), ".sst") {
			continue
		}
		if err := checkTable(filepath.Join(dir, en.Name()), ro); err != nil {
			return &OpenError{Dir: dir, File: en.Name(), Err: fmt.Errorf("damaged table: %w", err)}
		}
	}
	return nil
}

func checkTable(path string, ro sstable.ReaderOptions) error {
	f, err := vfs.Default.Open(path)
	if err != nil {
		return err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		_ = f.Close()
		return err
	}
	r, err := sstable.NewReader(context.Background(), readable, ro)
	if err != nil {
		_ = readable.Close()
		return err
	}
	defer r.Close()
	return r.ValidateBlockChecksums()
}

// prepareDir makes dir a data directory if it is new or empty, and reports
// whether it was.
func prepareDir(dir string) (fresh bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, &OpenError{Dir: dir, Err: err}
	case len(entries) > 0:
		b, err := os.ReadFile(filepath.Join(dir, markerName))
		if errors.Is(err, fs.ErrNotExist) {
			return false, &OpenError{Dir: dir, Err: fmt.Errorf("it is not empty and has no %s file, so it is not a varbridge data directory", markerName)}
		}
		if err != nil {
			return false, &OpenError{Dir: dir, File: markerName, Err: err}
		}
		if string(b) != markerText {
			return false, &OpenError{Dir: dir, File: markerName, Err: fmt.Errorf("unknown layout %q (written by another version of varbridge?)", b)}
		}
		// A first start that stopped before Pebble made its files leaves
		// the marker alone: that directory is still empty.
		for _, en := range entries {
			if n := en.Name(); n != markerName && n != ballastName && n != "LOCK" {
				return false, nil
			}
		}
		return true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, &OpenError{Dir: dir, Err: err}
	}
	if err := writeFileSync(filepath.Join(dir, markerName), []byte(markerText)); err != nil {
		return false, &OpenError{Dir: dir, File: markerName, Err: err}
	}
	return true, nil
}

// faultyFile picks the file a Pebble open error is about, when it names
// one of the directory's files.
func faultyFile(dir string, err error) string {
	entries, _ := os.ReadDir(dir)
	msg := err.Error()
	if strings.Contains(msg, "replaying WAL") {
		// Pebble does not say which log: name them all.
		var logs []string
		for _, en := range entries {
			if strings.HasSuffix(en.Name(), ".log") {
				logs = append(logs, en.Name())
			}
		}
		return strings.Join(logs, ", ")
	}
	for _, en := range entries {
		n := en.Name()
		if len(n) >= 6 && containsWord(msg, n) {
			return n
		}
		// Pebble names tables and logs by number ("000012"), manifests by name.
		if base := trimExt(n); len(base) >= 6 && containsWord(msg, base) {
			return n
		}
	}
	return ""
}

// Layout keys outside any session.
var formatKey = []byte("format")

const formatVersion = "1"

func (e *Engine) checkLayout(fresh bool) error {
	v, closer, err := e.db.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		if !fresh {
			return &OpenError{Dir: e.dir, Err: errors.New("the database has no layout record")}
		}
		return e.db.Set(formatKey, []byte(formatVersion), pebble.Sync)
	}
	if err != nil {
		return &OpenError{Dir: e.dir, File: faultyFile(e.dir, err), Err: err}
	}
	defer closer.Close()
	if string(v) != formatVersion {
		return &OpenError{Dir: e.dir, Err: fmt.Errorf("layout %q is not one this version reads", v)}
	}
	return nil
}

func (e *Engine) syncLoop() {
	defer e.done.Done()
	t := time.NewTicker(e.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if err := e.wal.syncAll(); err != nil {
				e.fail(err)
			}
		}
	}
}

// Save records a mutation; see store.Engine.
func (e *Engine) Save(m *store.Mutation) (store.Pending, error) {
	if f := e.failed.Load(); f != nil {
		return nil, f
	}
	b := e.db.NewBatch()
	var edits []chunkEdit
	switch {
	case m.Drop != "":
		_ = b.DeleteRange(sessionPrefix(m.Drop), sessionEnd(m.Drop), nil)
		edits = append(edits, chunkEdit{session: m.Drop})
	case m.Create:
		id := m.Session.ID
		// Whatever an earlier session of this id left (an expiry saved
		// after its drop) goes with the new one's first write.
		_ = b.DeleteRange(sessionPrefix(id), sessionEnd(id), nil)
		edits = append(edits, chunkEdit{session: id})
		_ = b.Set(sessionKey(id, kindHeader), record.EncodeHeader(m.Session), nil)
		_ = b.Set(sessionKey(id, kindExpiry), record.EncodeExpiry(m.Session.Incarnation, m.Expiry), nil)
	case m.Change != nil:
		if err := e.addChange(b, &edits, m); err != nil {
			_ = b.Close()
			return nil, err
		}
	case m.Expiry != nil:
		_ = b.Set(sessionKey(m.Session.ID, kindExpiry), record.EncodeExpiry(m.Session.Incarnation, m.Expiry), nil)
	default:
		_ = b.Close()
		return nil, errors.New("disk: empty mutation")
	}
	if m.Change != nil || m.Create {
		if err := e.checkSpace(b.Len()); err != nil {
			_ = b.Close()
			return nil, err
		}
	}
	if err := e.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		_ = b.Close()
		return nil, e.fail(err)
	}
	e.chunks.apply(edits)
	return pending{e, b}, nil
}

func (e *Engine) addChange(b *pebble.Batch, edits *[]chunkEdit, m *store.Mutation) error {
	id := m.Session.ID
	encoded := make(map[*pb.Variable][]byte, len(m.Change.Items))
	rec, err := record.EncodeChange(m.Change, encoded)
	if err != nil {
		return fmt.Errorf("disk: encoding revision %d of session %q: %w", m.Change.Revision, id, err)
	}
	_ = b.Set(sessionKey(id, kindHeader), record.EncodeHeader(m.Session), nil)
	e.put(b, edits, id, historyKey(id, m.Change.Revision), rec)
	for _, v := range m.Put {
		enc, ok := encoded[v]
		if !ok {
			if enc, err = v.MarshalVT(); err != nil {
				return fmt.Errorf("disk: encoding variable %q of session %q: %w", v.Name, id, err)
			}
		}
		e.put(b, edits, id, varKey(id, v.Id), enc)
	}
	for _, vid := range m.Delete {
		e.del(b, edits, id, varKey(id, vid))
	}
	if from, below := max(m.TrimFrom, 1), m.TrimBelow; below > from {
		if below-from <= 4 { // the usual one record: no range tombstone
			for r := from; r < below; r++ {
				e.del(b, edits, id, historyKey(id, r))
			}
		} else {
			_ = b.DeleteRange(historyKey(id, from), historyKey(id, below), nil) // chunks included
			for r := from; r < below; r++ {
				if e.chunks.get(id, historyKey(id, r)) > 0 {
					*edits = append(*edits, chunkEdit{id, historyKey(id, r), 0})
				}
			}
		}
	}
	return nil
}

type pending struct {
	e *Engine
	b *pebble.Batch
}

// Wait waits for the batch's fsync (shared with the other batches of the
// same commit group).
func (p pending) Wait() error {
	err := p.b.SyncWait()
	_ = p.b.Close()
	if err != nil {
		return p.e.fail(err)
	}
	return nil
}

// Barrier returns once everything saved before it is durable: an empty
// synced record, which Pebble's log syncs after every earlier one.
func (e *Engine) Barrier() error {
	if f := e.failed.Load(); f != nil {
		return f
	}
	if err := e.db.LogData(nil, pebble.Sync); err != nil {
		return e.fail(err)
	}
	return nil
}

// fail records the engine's first failure and returns it.
func (e *Engine) fail(err error) error {
	f := &store.StorageFailedError{Dir: e.dir, Err: err}
	if e.failed.CompareAndSwap(nil, f) {
		e.log.Error("storage failed: refusing writes until restart", "dir", e.dir, "err", err)
	}
	return e.failed.Load()
}

// Close stops the batch syncer and closes the database (syncing its log).
func (e *Engine) Close() error {
	close(e.stop)
	e.done.Wait()
	err := e.db.Close()
	if e.opts.Fsync != FsyncAlways {
		if serr := e.wal.syncAll(); err == nil {
			err = serr
		}
	}
	return err
}

// Dir returns the data directory.
func (e *Engine) Dir() string { return e.dir }

// pebbleLogger sends Pebble's log lines to slog. Fatalf is Pebble's answer
// to a failure it cannot go on from (a failed manifest write, say): the
// process exits, and the next start recovers from the log.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("fatal storage error, exiting: "+fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(70) // EX_SOFTWARE
}
