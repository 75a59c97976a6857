package disk_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/varbridge/varbridge/internal/disk"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// smallDisk mounts a tmpfs of size bytes for the test (root only), and
// unmounts it at the end.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if os.Getenv("VARBRIDGE_REQUIRE_DISK_TESTS") != "" {
			t.Fatalf("mount a %s tmpfs: %v", size, err)
		}
		t.Skipf("cannot mount a tmpfs here (%v): the disk-full test needs root", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestFullDiskRefusesWritesThenRecovers(t *testing.T) {
	mnt := smallDisk(t, "64m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "data")
	do := disk.Options{Reserve: 16 << 20}
	st, _ := open(t, dir, store.Options{HistoryLimit: 1000, HistoryBytes: 1 << 30}, do)
	closed := false
	t.Cleanup(func() {
		if !closed {
			st.Close() // before the disk is unmounted
		}
	})
	st.CreateSession("s", 0, nil)
	if _, _, err := st.Register("s", store.Register{Name: "big", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, Value: randomTensor(1)}); err != nil {
		t.Fatal(err)
	}
	// Random, so that no compression makes it smaller than it is.
	big := func(int) *pb.Value { return randomTensor(1 << 20) }
	acked := 0
	var full *store.StorageFullError
	for i := range 200 {
		_, err := st.Set("s", []store.Write{{Identifier: "big", Value: big(i)}}, nil, "")
		if errors.As(err, &full) {
			break
		}
		if err != nil {
			t.Fatalf("write %d: %v, want success or StorageFullError", i, err)
		}
		acked++
	}
	if full == nil {
		t.Fatalf("%d writes of 1 MiB fitted on a 64 MiB disk", acked)
	}
	t.Logf("%d writes acknowledged, then: %v", acked, full)
	if full.Dir != dir || full.Reserve != 16<<20 {
		t.Errorf("error %+v does not name the directory and reserve", full)
	}
	// Reads go on. Later writes are refused, or accepted when Pebble's
	// flushes freed room: never anything else.
	v, _, err := st.Get("s", "big")
	if err != nil || v.Version != int64(acked+1) {
		t.Fatalf("read on a full disk: version %d, %v; want %d", v.GetVersion(), err, acked+1)
	}
	for i := range 5 {
		_, err := st.Set("s", []store.Write{{Identifier: "big", Value: big(i)}}, nil, "")
		switch {
		case err == nil:
			acked++
		case !errors.As(err, &full):
			t.Fatalf("write on a full disk: %v, want success or StorageFullError", err)
		}
	}
	// Space freed: writes succeed again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// A small value now: the refused writes must not have left the chunk
	// bookkeeping believing in chunks that were never written.
	if _, err := st.Set("s", []store.Write{{Identifier: "big", Value: randomTensor(10)}}, nil, ""); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	acked++
	st.Close()
	closed = true
	// Nothing corrupt: everything acknowledged is there after a restart.
	st, rec := open(t, dir, store.Options{HistoryLimit: 1000, HistoryBytes: 1 << 30}, do)
	defer st.Close()
	v, _, err = st.Get("s", "big")
	if err != nil || v.Version != int64(acked+1) {
		t.Fatalf("after restart: version %d, %v; want %d", v.GetVersion(), err, acked+1)
	}
	if rec.Changes != acked+1 {
		t.Errorf("history after restart holds %d changes, want %d", rec.Changes, acked+1)
	}
}

// With a reserve smaller than what Pebble's own files need, Pebble itself
// meets ENOSPC: the ballast it then gets keeps it going, writes are refused
// from then on, and nothing acknowledged is lost.
func TestFullDiskBallastKeepsPebbleGoing(t *testing.T) {
	mnt := smallDisk(t, "40m")
	dir := filepath.Join(mnt, "data")
	var logs servertest.SyncBuffer
	do := disk.Options{Reserve: 4 << 20, Fsync: disk.FsyncAlways, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	so := store.Options{HistoryLimit: 1000, HistoryBytes: 1 << 30}
	st, _ := open(t, dir, so, do)
	closed := false
	t.Cleanup(func() {
		if !closed {
			st.Close()
		}
	})
	st.CreateSession("s", 0, nil)
	if _, _, err := st.Register("s", store.Register{Name: "big", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, Value: randomTensor(1)}); err != nil {
		t.Fatal(err)
	}
	acked, refused := 0, 0
	for i := 0; i < 200 && refused < 20; i++ {
		_, err := st.Set("s", []store.Write{{Identifier: "big", Value: randomTensor(512 << 10)}}, nil, "")
		var full *store.StorageFullError
		switch {
		case err == nil:
			acked++
		case errors.As(err, &full):
			refused++
		default:
			t.Fatalf("write %d: %v, want success or StorageFullError", i, err)
		}
	}
	t.Logf("%d acknowledged, %d refused", acked, refused)
	if refused == 0 {
		t.Fatal("never refused on a 40 MiB disk")
	}
	if !strings.Contains(logs.String(), "released the ballast") {
		t.Errorf("Pebble never met ENOSPC, so the ballast went untested; logs:\n%s", logs.String())
	}
	st.Close()
	closed = true
	st, _ = open(t, dir, so, do)
	defer st.Close()
	v, _, err := st.Get("s", "big")
	if err != nil || v.Version != int64(acked+1) {
		t.Fatalf("after restart: version %d, %v; want %d", v.GetVersion(), err, acked+1)
	}
}
