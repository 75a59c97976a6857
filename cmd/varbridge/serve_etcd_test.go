package main

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/varbridge/varbridge/internal/etcdtest"
)

// Two serve commands on one etcd share sessions: what one is told, the
// other serves, and a client given both carries on at either.
func TestServeOnEtcd(t *testing.T) {
	clearEnv(t)
	etcd := etcdtest.Start(t, 1)
	eps := "--etcd-endpoints=" + strings.Join(etcd.Endpoints(), ",")
	a := startServe(t, eps, "--etcd-prefix", "/cli/")["listening on"]
	b := startServe(t, eps, "--etcd-prefix", "/cli/")["listening on"]
	mustCLI(t, a, "register", "lr", "float", "0.01", "--min", "0", "--max", "1")
	mustCLI(t, b, "set", "lr", "0.5")
	if out := mustCLI(t, a, "get", "lr"); !strings.Contains(out, "value=0.5") || !strings.Contains(out, "version=2") {
		t.Errorf("A reads B's write: %q", out)
	}
	failCLI(t, a, codes.InvalidArgument, "set", "lr", "2") // B's constraint, checked on A
	if out := mustCLI(t, a+","+b, "get", "lr"); !strings.Contains(out, "value=0.5") {
		t.Errorf("a client given both servers: %q", out)
	}
	// Another prefix is another cluster of servers.
	other := startServe(t, eps, "--etcd-prefix", "/other/")["listening on"]
	failCLI(t, other, codes.NotFound, "get", "lr")

	errText := failCLI(t, a, codes.FailedPrecondition, "snapshot", "save", filepath.Join(t.TempDir(), "x.vbsnap"))
	if !strings.Contains(errText, "etcdctl snapshot save") {
		t.Errorf("snapshot of an etcd server: %q, want the way to snapshot etcd", errText)
	}
}

// serve reaches an etcd that wants TLS with client certificates and a
// user and password (the password from the environment, never a flag).
func TestServeOnEtcdWithTLSAndAuth(t *testing.T) {
	clearEnv(t)
	etcd := etcdtest.Start(t, 1, etcdtest.WithTLS(), etcdtest.WithAuth("root", "s3cret"))
	files := etcd.TLS()
	base := []string{"--etcd-endpoints=" + strings.Join(etcd.Endpoints(), ","), "--etcd-timeout", "2s",
		"--etcd-cacert", files.CAFile, "--etcd-cert", files.CertFile, "--etcd-key", files.KeyFile, "--etcd-username", "root"}

	// Without the password etcd refuses, and serve says so.
	if err := serveErr(base...); err == nil {
		t.Fatal("serve without the etcd password started")
	}

	t.Setenv(envEtcdPassword, "s3cret")
	a := startServe(t, base...)["listening on"]
	mustCLI(t, a, "register", "n", "int", "1")
	if out := mustCLI(t, a, "get", "n"); !strings.Contains(out, "value=1") {
		t.Errorf("get over TLS and auth to etcd: %q", out)
	}
}
