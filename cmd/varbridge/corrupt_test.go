package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// A damaged table in the data directory: serve refuses to start, naming
// the file and what to do, and never serves (or starts empty over it).
func TestServeRefusesCorruptDataDir(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	data := "--data-dir=" + dir
	srv := startServerProcess(t, "127.0.0.1:0", data, "--fsync=never")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, closeC := writer(t, srv.addr)
	tensor := func(n int) *varbridgev1.Value {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return &varbridgev1.Value{Kind: &varbridgev1.Value_TensorValue{TensorValue: &varbridgev1.Tensor{Shape: []int64{int64(n)}, Dtype: "uint8", Data: b}}}
	}
	_, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "r"})
	mustDo(t, err)
	_, err = c.RegisterVariable(ctx, &varbridgev1.RegisterVariableRequest{SessionId: "r", Name: "w", Type: varbridgev1.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: tensor(1)})
	mustDo(t, err)
	// More than a memtable's worth (4 MiB), so that Pebble writes a table.
	for range 6 {
		_, err := c.SetVariable(ctx, &varbridgev1.SetVariableRequest{SessionId: "r", VariableIdentifier: "w", Value: tensor(1 << 20)})
		mustDo(t, err)
	}
	closeC()
	// Stopped cleanly: the table is complete before it is damaged.
	_ = srv.cmd.Process.Signal(os.Interrupt)
	_ = srv.cmd.Wait()

	victim := ""
	var size int64
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if info, err := en.Info(); err == nil && strings.HasSuffix(en.Name(), ".sst") && info.Size() > size {
			victim, size = en.Name(), info.Size()
		}
	}
	if victim == "" {
		t.Fatal("no table in the data directory")
	}
	b, err := os.ReadFile(filepath.Join(dir, victim))
	mustDo(t, err)
	for i := len(b) / 4; i < len(b)/2; i++ {
		b[i] ^= 0x5a
	}
	mustDo(t, os.WriteFile(filepath.Join(dir, victim), b, 0o600))

	cmd := exec.CommandContext(ctx, os.Args[0], "serve", "--listen", "127.0.0.1:0", "--log-level", "warn", data)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("serve on a damaged data directory: %v (stdout %q, stderr %q)", err, stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String(), "listening on") {
		t.Errorf("serve listened on a damaged data directory: %s", stdout.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, victim) || !strings.Contains(msg, "--restore") {
		t.Errorf("serve's refusal does not name %s and what to do:\n%s", victim, msg)
	}
}
