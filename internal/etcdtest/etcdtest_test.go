package etcdtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSingleMember(t *testing.T) {
	c := Start(t, 1)
	if eps := c.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "127.0.0.1:") {
		t.Fatalf("Endpoints() = %v, want one 127.0.0.1 address", eps)
	}
	ctx := timeout(t)
	cli := c.Client()
	mustPut(ctx, t, cli, "k", "v")
	if got := get(ctx, t, cli, "k"); got != "v" {
		t.Fatalf("k = %q, want v", got)
	}
	if i, err := c.Leader(ctx); err != nil || i != 0 {
		t.Fatalf("Leader() = %d, %v; want 0", i, err)
	}
}

// TestWithFlags checks that a flag given to Start overrides etcd's default:
// here the number of operations one transaction may hold.
func TestWithFlags(t *testing.T) {
	c := Start(t, 1, WithFlags("--max-txn-ops=2"))
	ctx := timeout(t)
	ops := []clientv3.Op{clientv3.OpPut("a", "1"), clientv3.OpPut("b", "2"), clientv3.OpPut("c", "3")}
	_, err := c.Client().Txn(ctx).Then(ops...).Commit()
	if err == nil || !strings.Contains(err.Error(), "too many operations") {
		t.Fatalf("a transaction of 3 operations with --max-txn-ops=2: %v, want too many operations", err)
	}
	if _, err := c.Client().Txn(ctx).Then(ops[:2]...).Commit(); err != nil {
		t.Fatalf("a transaction of 2 operations: %v", err)
	}
}

// TestTLS checks that members started WithTLS serve the client that has
// the cluster's files and refuse one without a client certificate.
func TestTLS(t *testing.T) {
	c := Start(t, 1, WithTLS())
	ctx := timeout(t)
	mustPut(ctx, t, c.Client(), "k", "v")
	if i, err := c.Leader(ctx); err != nil || i != 0 {
		t.Fatalf("Leader() = %d, %v; want 0", i, err)
	}

	files := c.TLS()
	caPEM, err := os.ReadFile(files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the CA file")
	}
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + c.Endpoints()[0] + "/version"
	for _, tc := range []struct {
		name   string
		config *tls.Config
		ok     bool
	}{
		{"with the client certificate", &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, true},
		{"without a client certificate", &tls.Config{RootCAs: pool}, false},
	} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.config, DisableKeepAlives: true}}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		if ok := err == nil && resp.StatusCode == http.StatusOK; ok != tc.ok {
			t.Errorf("GET %s %s: %v, want success %v", url, tc.name, err, tc.ok)
		}
	}
}

// TestAuth checks that a cluster started WithAuth refuses a client without
// credentials, while Client and Leader, which have them, work on after a
// member restarts.
func TestAuth(t *testing.T) {
	c := Start(t, 3, WithAuth("varbridge", "secret"))
	ctx := timeout(t)
	mustPut(ctx, t, c.Client(), "k", "v")
	anon := memberClient(t, c, 0)
	if _, err := anon.Put(ctx, "k", "anonymous"); err == nil || !strings.Contains(err.Error(), "user name is empty") {
		t.Fatalf("a write without credentials: %v, want user name is empty", err)
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	c.Restart(leader)
	if _, err := c.Leader(ctx); err != nil {
		t.Fatal(err)
	}
	mustPut(ctx, t, c.Client(), "k", "v2")
}

// TestFailover kills the leader of three members: another is elected and
// writes go on; the killed member, restarted, has the writes it missed.
// Then all three are killed and restarted together on their data.
func TestFailover(t *testing.T) {
	c := Start(t, 3)
	ctx := timeout(t)
	cli := c.Client()
	mustPut(ctx, t, cli, "k", "v1")

	old, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(old)
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leader == old {
		t.Fatalf("member %d still leads after it was killed", old)
	}
	mustPut(ctx, t, cli, "k", "v2")

	c.Restart(old)
	// Restart returned once the member read linearizably, so it has
	// applied v2: a read of its own data alone must see it.
	if got := get(ctx, t, memberClient(t, c, old), "k", clientv3.WithSerializable()); got != "v2" {
		t.Fatalf("restarted member %d: k = %q, want v2", old, got)
	}

	c.Stop()
	c.Restart(0, 1, 2)
	mustPut(ctx, t, cli, "k2", "v3")
	for i := range 3 {
		if got := get(ctx, t, memberClient(t, c, i), "k", clientv3.WithSerializable()); got != "v2" {
			t.Fatalf("member %d after a full restart: k = %q, want v2", i, got)
		}
	}
}

// TestNoProcessLeftBehind checks that the members of a finished test, a
// killed and restarted one included, are gone.
func TestNoProcessLeftBehind(t *testing.T) {
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := Start(t, 3)
		pids = append(pids, c.pid(1))
		c.Kill(1)
		c.Restart(1)
		for i := range 3 {
			pids = append(pids, c.pid(i))
		}
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("etcd pid %d: kill(0) = %v, want ESRCH (no such process)", pid, err)
		}
	}
}

// TestMemberThatExits checks that a member that cannot start ends the wait
// for readiness at once, with an error saying so.
func TestMemberThatExits(t *testing.T) {
	c := newCluster(t, []Option{WithFlags("--no-such-flag")})
	c.setup(1, 1)
	defer c.Stop()
	err := c.run([]int{0})
	if err == nil || !strings.Contains(err.Error(), "exited by itself") {
		t.Fatalf("run with a bad flag: %v, want an error saying the member exited", err)
	}
}

func (c *Cluster) pid(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].proc.Process.Pid
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// memberClient is a client of member i alone.
func memberClient(t *testing.T, c *Cluster, i int) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints()[i : i+1], Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// mustPut writes until etcd acknowledges: a write sent to a member just
// killed fails and is sent again.
func mustPut(ctx context.Context, t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	for {
		_, err := cli.Put(ctx, k, v)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func get(ctx context.Context, t *testing.T, cli *clientv3.Client, k string, opts ...clientv3.OpOption) string {
	t.Helper()
	resp, err := cli.Get(ctx, k, opts...)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}
