package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// A snapshot of a running durable server restores to a server with the
// same sessions and values; a memory server has nothing to snapshot.
func TestSnapshotSaveAndRestore(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	addr := startServe(t, "--data-dir", filepath.Join(dir, "a"))["listening on"]
	mustCLI(t, addr, "register", "lr", "float", "0.01", "--min", "0", "--max", "1")
	mustCLI(t, addr, "register", "mode", "string", "fast")
	mustCLI(t, addr, "set", "lr", "0.02")
	mustCLI(t, addr, "set", "lr", "0.03")
	file := filepath.Join(dir, "backup.vbsnap")
	out := mustCLI(t, addr, "snapshot", "save", file)
	if !strings.Contains(out, file) {
		t.Errorf("snapshot save printed %q", out)
	}
	if _, err := os.Stat(file + ".part"); !os.IsNotExist(err) {
		t.Errorf("%s.part left behind: %v", file, err)
	}
	before := mustCLI(t, addr, "list", "-o", "json")

	restored := startServe(t, "--data-dir", filepath.Join(dir, "b"), "--restore", file)["listening on"]
	after := mustCLI(t, restored, "list", "-o", "json")
	if before != after {
		t.Errorf("restored variables differ:\nbefore %s\nafter  %s", before, after)
	}
	// The constraint came back too.
	failCLI(t, restored, codes.InvalidArgument, "set", "lr", "2")

	// Restoring over data is refused, whatever the snapshot.
	if err := serveErr("--data-dir", filepath.Join(dir, "a"), "--restore", file); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore into a data directory in use: %v", err)
	}

	mem := startServe(t)["listening on"]
	failCLI(t, mem, codes.FailedPrecondition, "snapshot", "save", filepath.Join(dir, "mem.vbsnap"))
}

func TestServeDataFlagErrors(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--memory", "--data-dir", dir}, "--memory"},
		{[]string{"--memory", "--fsync", "never"}, "--memory"},
		{[]string{"--data-dir", dir, "--fsync", "sometimes"}, "--fsync"},
		{[]string{"--data-dir", foreign}, "not a varbridge data directory"},
		{[]string{"--data-dir", filepath.Join(dir, "new"), "--restore", filepath.Join(dir, "missing.vbsnap")}, "--restore"},
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--memory"}, "--memory"},
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--data-dir", dir}, "--data-dir"},
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--fsync", "never"}, "--fsync"},
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--etcd-cert", "c.pem"}, "--etcd-key"},
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--etcd-cacert", filepath.Join(dir, "none.pem")}, "--etcd-cacert"},
		// Nothing listens there: refused within --etcd-timeout, naming it.
		{[]string{"--etcd-endpoints", "127.0.0.1:1", "--etcd-timeout", "500ms"}, "127.0.0.1:1"},
	} {
		if err := serveErr(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
