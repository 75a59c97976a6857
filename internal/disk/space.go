package disk

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/varbridge/varbridge/internal/store"
)

// spaceCheckEvery bounds how long a write trusts the last statfs.
const spaceCheckEvery = 250 * time.Millisecond

// ballastSize is the emergency room a released ballast gives Pebble.
func (e *Engine) ballastSize() int64 { return int64(e.opts.Reserve / 2) }

// checkSpace refuses a write of n bytes when the disk is nearly full. It
// costs a statfs only every spaceCheckEvery, or sooner as free space runs
// low.
func (e *Engine) checkSpace(n int) error {
	if !e.full.Load() && time.Now().UnixNano() < e.nextCheck.Load() && e.budget.Add(-int64(n)) > 0 {
		return nil
	}
	e.spaceMu.Lock()
	defer e.spaceMu.Unlock()
	u, err := vfs.Default.GetDiskUsage(e.dir)
	if err != nil {
		return nil // cannot tell: let the write meet the disk
	}
	avail := u.AvailBytes
	if e.full.Load() {
		// Back to normal only with room for the ballast and the reserve.
		if avail < e.opts.Reserve+uint64(e.ballastSize())*2 {
			return &store.StorageFullError{Dir: e.dir, Available: avail, Reserve: e.opts.Reserve}
		}
		e.ensureBallast()
		e.full.Store(false)
		e.log.Info("disk space is back: accepting writes", "dir", e.dir, "available_bytes", avail)
	}
	if avail < e.opts.Reserve+uint64(n) {
		e.nextCheck.Store(0)
		return &store.StorageFullError{Dir: e.dir, Available: avail, Reserve: e.opts.Reserve}
	}
	e.nextCheck.Store(time.Now().Add(spaceCheckEvery).UnixNano())
	// Check again before the writes could have eaten half of the margin.
	e.budget.Store(int64(avail-e.opts.Reserve) / 2)
	return nil
}

// ensureBallast creates the ballast file if it is missing. Without room
// for it the engine starts in the full state.
func (e *Engine) ensureBallast() {
	path := filepath.Join(e.dir, ballastName)
	if st, err := os.Stat(path); err == nil && st.Size() == e.ballastSize() {
		return
	}
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err == nil {
		err = f.Preallocate(0, e.ballastSize())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = os.Remove(path)
		e.full.Store(true)
		e.log.Warn("no room for the disk-full ballast: refusing writes until space is freed", "dir", e.dir, "err", err)
	}
}

// releaseBallast runs when a write of Pebble's met ENOSPC (vfs.OnDiskFull):
// the ballast's room lets that write, which Pebble retries, succeed, and
// every later write is refused until space is freed.
func (e *Engine) releaseBallast() {
	e.full.Store(true)
	err := os.Remove(filepath.Join(e.dir, ballastName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.log.Error("disk full and the ballast cannot be removed", "dir", e.dir, "err", err)
		return
	}
	e.log.Warn("disk full: released the ballast; refusing writes until space is freed", "dir", e.dir)
}
