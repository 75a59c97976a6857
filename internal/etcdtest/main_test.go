package etcdtest

import (
	"os"
	"strings"
	"testing"
)

// TestStartMain checks a cluster started without a test: its members serve,
// stop kills them and removes their data, and a member that exited by
// itself is reported by stop.
func TestStartMain(t *testing.T) {
	c, stop, err := StartMain(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := timeout(t)
	cli := memberClient(t, c, 0)
	mustPut(ctx, t, cli, "k", "v")
	if got := get(ctx, t, cli, "k"); got != "v" {
		t.Fatalf("k = %q, want v", got)
	}
	dir := c.dir
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the data directory after stop: %v", err)
	}
	if c.get200("http://" + c.Endpoints()[0] + "/readyz") {
		t.Fatal("the member still serves after stop")
	}

	c, stop, err = StartMain(1)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	m := c.members[0]
	_ = m.proc.Process.Kill() // as if it crashed: not through Kill
	<-m.done
	c.mu.Unlock()
	if err := stop(); err == nil || !strings.Contains(err.Error(), "exited by itself") {
		t.Fatalf("stop after a member died: %v, want it reported", err)
	}
}

// TestStartMainFails checks that a cluster that cannot start is an error,
// with nothing left behind.
func TestStartMainFails(t *testing.T) {
	if _, _, err := StartMain(0); err == nil || !strings.Contains(err.Error(), "0 members") {
		t.Fatalf("StartMain(0): %v, want an error", err)
	}
}
