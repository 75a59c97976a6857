package disk

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
)

// A snapshot is a tar archive of a Pebble checkpoint (a consistent copy of
// the database at one moment, made of hard links where it can) with the
// directory's marker first: restoring it gives a data directory.
const (
	snapshotTmp  = ".snapshot-tmp"
	restoredName = "RESTORED"
)

// SnapshotInfo describes a snapshot written.
type SnapshotInfo struct {
	Files int
	Bytes int64
}

// Snapshot writes a consistent copy of the data, taken while writes go on,
// to w.
func (e *Engine) Snapshot(w io.Writer) (SnapshotInfo, error) {
	var info SnapshotInfo
	tmp := filepath.Join(e.dir, snapshotTmp, fmt.Sprintf("%d", time.Now().UnixNano()))
	if err := os.MkdirAll(filepath.Dir(tmp), 0o700); err != nil {
		return info, err
	}
	defer os.RemoveAll(tmp)
	if err := e.db.Checkpoint(tmp, pebble.WithFlushedWAL()); err != nil {
		return info, fmt.Errorf("checkpoint: %w", err)
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	hdr := &tar.Header{Name: markerName, Mode: 0o600, Size: int64(len(markerText)), ModTime: now, Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return info, err
	}
	if _, err := io.WriteString(tw, markerText); err != nil {
		return info, err
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return info, err
	}
	for _, en := range entries {
		if !en.Type().IsRegular() {
			return info, fmt.Errorf("checkpoint holds %s, which is not a regular file", en.Name())
		}
		n, err := addFile(tw, filepath.Join(tmp, en.Name()), en.Name())
		if err != nil {
			return info, err
		}
		info.Files++
		info.Bytes += n
	}
	return info, tw.Close()
}

func addFile(tw *tar.Writer, path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return 0, err
	}
	return io.Copy(tw, f)
}

// Restore makes dir, which must not exist or be empty, a data directory
// holding the snapshot read from r. Sessions restored get new
// incarnations when the engine opens it: clients that saw revisions the
// snapshot does not hold get a RESYNC, never silence. The marker is
// written last, so a restore cut short leaves a directory Open refuses.
func Restore(r io.Reader, dir string) (SnapshotInfo, error) {
	var info SnapshotInfo
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return info, err
	}
	if len(entries) > 0 {
		return info, fmt.Errorf("restore into %s: the directory is not empty; give a new --data-dir", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return info, err
	}
	tr := tar.NewReader(r)
	first := true
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, fmt.Errorf("reading the snapshot: %w", err)
		}
		if first {
			first = false
			if hdr.Name != markerName {
				return info, errors.New("this file is not a varbridge snapshot (it does not start with the data directory's marker)")
			}
			b, err := io.ReadAll(io.LimitReader(tr, 1<<10))
			if err != nil {
				return info, err
			}
			if string(b) != markerText {
				return info, fmt.Errorf("the snapshot has layout %q, which this version does not read", b)
			}
			continue
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Name != filepath.Base(hdr.Name) || hdr.Name == "." || hdr.Name == ".." ||
			hdr.Name == markerName || hdr.Name == restoredName {
			return info, fmt.Errorf("the snapshot holds an unexpected entry %q", hdr.Name)
		}
		n, err := writeFrom(filepath.Join(dir, hdr.Name), tr)
		if err != nil {
			return info, err
		}
		info.Files++
		info.Bytes += n
	}
	if first {
		return info, errors.New("the snapshot is empty")
	}
	if err := syncDir(dir); err != nil {
		return info, err
	}
	if err := writeFileSync(filepath.Join(dir, restoredName), nil); err != nil {
		return info, err
	}
	return info, writeFileSync(filepath.Join(dir, markerName), []byte(markerText))
}

func writeFrom(path string, r io.Reader) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// finishRestore gives every session of a restored directory a new
// incarnation and a full TTL, once, and forgets the directory was restored. Leftovers of
// a snapshot cut short by a crash go too.
func (e *Engine) finishRestore() error {
	_ = os.RemoveAll(filepath.Join(e.dir, snapshotTmp))
	flag := filepath.Join(e.dir, restoredName)
	if _, err := os.Stat(flag); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	b := e.db.NewBatch()
	defer b.Close()
	err := e.scan(func(sv *store.Saved) error {
		r := sv.Session
		r.Incarnation = store.NewIncarnation()
		_ = b.Set(sessionKey(r.ID, kindHeader), record.EncodeHeader(&r), nil)
		// A restore counts as use: a snapshot restored days later would
		// otherwise come back with every session expired.
		_ = b.Set(sessionKey(r.ID, kindExpiry), record.EncodeExpiry(r.Incarnation, &store.Expiry{Deadline: time.Now().Add(r.TTL)}), nil)
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return &OpenError{Dir: e.dir, Err: err}
	}
	if err := os.Remove(flag); err != nil {
		return &OpenError{Dir: e.dir, File: restoredName, Err: err}
	}
	return syncDir(e.dir)
}
