package disk

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Fsync says when an acknowledged write has reached the disk.
type Fsync int

// Fsync modes; see the package comment for what each promises.
const (
	// FsyncAlways acknowledges a write once its log record is fsynced;
	// concurrent writers share fsyncs.
	FsyncAlways Fsync = iota
	// FsyncBatch acknowledges a write once its log record is written to
	// the operating system, and fsyncs the log every SyncInterval.
	FsyncBatch
	// FsyncNever acknowledges a write once its log record is written to
	// the operating system, and leaves the fsync to the operating system.
	FsyncNever
)

// ParseFsync reads "always", "batch" or "never".
func ParseFsync(s string) (Fsync, error) {
	switch s {
	case "always":
		return FsyncAlways, nil
	case "batch":
		return FsyncBatch, nil
	case "never":
		return FsyncNever, nil
	}
	return 0, fmt.Errorf("fsync mode %q: want always, batch or never", s)
}

func (f Fsync) String() string {
	switch f {
	case FsyncBatch:
		return "batch"
	case FsyncNever:
		return "never"
	}
	return "always"
}

// walFS gives Pebble write-ahead-log files whose fsyncs follow the mode.
// Pebble writes every record of a synced commit to the file before it
// syncs it, so a commit whose sync returned is in the operating system's
// hands, and a killed process cannot lose it, whatever the mode; the mode
// only decides when the operating system must put it on the disk. Every
// other file (tables, manifest) syncs as Pebble asks.
type walFS struct {
	vfs.FS
	mode Fsync

	mu   sync.Mutex
	open map[*walFile]struct{}
}

func newWALFS(inner vfs.FS, mode Fsync) *walFS {
	return &walFS{FS: inner, mode: mode, open: map[*walFile]struct{}{}}
}

func (fs *walFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || fs.mode == FsyncAlways || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	w := &walFile{File: f, fs: fs}
	fs.mu.Lock()
	fs.open[w] = struct{}{}
	fs.mu.Unlock()
	return w, nil
}

// Create wraps a new log file.
func (fs *walFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

// OpenReadWrite wraps a log file opened for writing.
func (fs *walFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

// ReuseForWrite wraps a recycled log file.
func (fs *walFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

// Unwrap returns the file system underneath.
func (fs *walFS) Unwrap() vfs.FS { return fs.FS }

// syncAll fsyncs every log file written since its last fsync (the batch
// mode's tick).
func (fs *walFS) syncAll() error {
	fs.mu.Lock()
	files := make([]*walFile, 0, len(fs.open))
	for f := range fs.open {
		files = append(files, f)
	}
	fs.mu.Unlock()
	for _, f := range files {
		if err := f.flush(); err != nil {
			return err
		}
	}
	return nil
}

type walFile struct {
	vfs.File
	fs     *walFS
	dirty  atomic.Bool
	mu     sync.Mutex // serializes real syncs with Close
	closed bool       // guarded by mu
}

// Sync records that the file has unsynced writes; the mode decides when
// they are synced.
func (f *walFile) Sync() error {
	f.dirty.Store(true)
	return nil
}

// SyncData is Sync.
func (f *walFile) SyncData() error { return f.Sync() }

// SyncTo is Sync, for the whole file.
func (f *walFile) SyncTo(int64) (bool, error) { return true, f.Sync() }

func (f *walFile) flush() error {
	if !f.dirty.Swap(false) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil // Close synced it
	}
	return f.File.SyncData()
}

// Close syncs a file that batch mode has not synced yet: its records would
// otherwise wait for the operating system past the batch interval.
func (f *walFile) Close() error {
	f.fs.mu.Lock()
	delete(f.fs.open, f)
	f.fs.mu.Unlock()
	var err error
	if f.fs.mode == FsyncBatch {
		err = f.flush()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}
