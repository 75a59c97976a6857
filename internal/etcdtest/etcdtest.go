// Package etcdtest runs real etcd clusters on loopback for tests: each
// member is an etcd process (the binary pinned in tools/etcd, see Binary),
// so tests see etcd's own elections, limits and failures, and the main
// module needs no etcd server code.
//
// A cluster lives as long as its test. Members log to files in the test's
// temporary directory; when the test fails their tails are printed. A test
// uses it like this:
//
//	c := etcdtest.Start(t, 3)          // or 1; WithTLS, WithAuth, WithFlags
//	srv := startServer(c.Endpoints())  // "127.0.0.1:port" each
//	leader, err := c.Leader(ctx)
//	c.Kill(leader)                     // SIGKILL; another member is elected
//	c.Restart(leader)                  // same data and ports; waits until it serves
package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Election settings for every member. Killing a leader stops writes for
// about one election timeout (followers wait a random 1-2 timeouts), so it
// is short to keep failover tests quick; it stays 10 heartbeats, as etcd
// advises, so that a member starved of CPU for a few heartbeats by a busy
// test machine does not start an election. Loopback round trips are far
// below the heartbeat.
const (
	heartbeatMs = 50
	electionMs  = 500
)

// readyTimeout bounds the wait for members to serve after they start:
// seconds on a quiet machine, more under go test -race ./... on two cores.
const readyTimeout = 60 * time.Second

// logTailLines is how much of each member's log a failed test prints.
const logTailLines = 100

// Option changes how Start runs the members.
type Option func(*config)

type config struct {
	flags          []string
	tls            bool
	user, password string
}

// WithFlags adds etcd flags to every member's command line, after the
// package's own, so that they win when they name the same flag: for
// example "--max-txn-ops=256", "--max-request-bytes=65536" or
// "--auto-compaction-retention=1".
func WithFlags(flags ...string) Option {
	return func(c *config) { c.flags = append(c.flags, flags...) }
}

// WithAuth turns etcd's authentication on once the members serve: Start
// makes user, with password and the root role, and Client and Leader log in
// as that user. etcd turns authentication on only with a user named root:
// when user is another, Start makes root too, with the same password.
func WithAuth(user, password string) Option {
	return func(c *config) { c.user, c.password = user, password }
}

// Cluster is a running etcd cluster. Endpoints, Leader, Kill and Stop may be
// called from any goroutine; Client and Restart fail the test when they
// fail, so, like Start, they belong to the test's goroutine.
type Cluster struct {
	tb  testing.TB
	bin string
	dir string
	cfg config

	scheme    string       // of the client URLs: http, or https WithTLS
	tlsFiles  *TLSFiles    // WithTLS
	tlsConfig *tls.Config  // of a client, WithTLS
	http      *http.Client // asks members whether they serve

	mu      sync.Mutex // guards members' processes
	members []*member
}

// Start starts an n-member cluster (n is usually 1 or 3) on 127.0.0.1 with
// data in tb.TempDir() and waits until every member serves. It stops the
// cluster when the test ends, and fails the test if a member exited by
// itself before then.
func Start(tb testing.TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("etcdtest.Start: %d members", n)
	}
	c := newCluster(tb, opts)
	tb.Cleanup(c.cleanup)
	// Ports are free when picked, but another process may bind one before
	// etcd does; such a start is retried on other ports.
	for attempt := 1; ; attempt++ {
		c.setup(n, attempt)
		err := c.run(allIndexes(n))
		if err == nil {
			if c.cfg.user != "" {
				if err := c.enableAuth(); err != nil {
					tb.Fatalf("etcdtest.Start: turning authentication on: %v", err)
				}
			}
			return c
		}
		taken := c.portTaken()
		c.Stop()
		if attempt == 3 || !taken {
			tb.Fatalf("etcdtest.Start: %v", err)
		}
		tb.Logf("etcdtest.Start: %v; trying other ports", err)
	}
}

// newCluster applies the options and makes the TLS files; it starts no
// member.
func newCluster(tb testing.TB, opts []Option) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, bin: Binary(tb), dir: tb.TempDir(), scheme: "http"}
	for _, o := range opts {
		o(&c.cfg)
	}
	if c.cfg.tls {
		var err error
		if c.tlsFiles, c.tlsConfig, err = makeTLS(c.dir); err != nil {
			tb.Fatalf("etcdtest: %v", err)
		}
		c.scheme = "https"
	}
	// Without keep-alives no connection, and no goroutine of its, outlives
	// a request.
	c.http = &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: c.tlsConfig},
	}
	return c
}

// enableAuth makes the users WithAuth asks for and turns authentication on.
func (c *Cluster) enableAuth() error {
	cli, err := c.newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	users := []string{c.cfg.user}
	if c.cfg.user != "root" {
		users = append(users, "root")
	}
	for _, u := range users {
		if _, err := cli.UserAdd(ctx, u, c.cfg.password); err != nil {
			return err
		}
		if _, err := cli.UserGrantRole(ctx, u, "root"); err != nil {
			return err
		}
	}
	_, err = cli.AuthEnable(ctx)
	return err
}

// setup makes n member slots on fresh ports and directories.
func (c *Cluster) setup(n, attempt int) {
	ports, err := freePorts(2 * n)
	if err != nil {
		c.tb.Fatalf("etcdtest.Start: %v", err)
	}
	members := make([]*member, n)
	initial := make([]string, n)
	for i := range members {
		name := "m" + strconv.Itoa(i)
		members[i] = &member{
			clientAddr: "127.0.0.1:" + strconv.Itoa(ports[2*i]),
			peerAddr:   "127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
			logPath:    filepath.Join(c.dir, fmt.Sprintf("%s-try%d.log", name, attempt)),
		}
		initial[i] = name + "=http://" + members[i].peerAddr
	}
	// A token of its own keeps a member of another test's cluster that
	// reaches these ports out of this one.
	token := fmt.Sprintf("etcdtest-%016x", rand.Uint64())
	for i, m := range members {
		name := "m" + strconv.Itoa(i)
		m.args = append([]string{
			"--name", name,
			"--data-dir", filepath.Join(c.dir, fmt.Sprintf("%s-try%d.etcd", name, attempt)),
			"--listen-client-urls", c.scheme + "://" + m.clientAddr,
			"--advertise-client-urls", c.scheme + "://" + m.clientAddr,
			"--listen-peer-urls", "http://" + m.peerAddr,
			"--initial-advertise-peer-urls", "http://" + m.peerAddr,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--heartbeat-interval", strconv.Itoa(heartbeatMs),
			"--election-timeout", strconv.Itoa(electionMs),
			"--log-format", "console",
		}, c.cfg.flags...)
		if c.cfg.tls {
			m.args = append(m.args, "--cert-file", serverCertFile(c.dir), "--key-file", serverKeyFile(c.dir),
				"--client-cert-auth", "--trusted-ca-file", c.tlsFiles.CAFile)
		}
	}
	c.mu.Lock()
	c.members = members
	c.mu.Unlock()
}

// Endpoints returns every member's client address, "127.0.0.1:port", in
// member order, whether the member runs or not. WithTLS, they speak TLS
// only (see TLS).
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientAddr
	}
	return eps
}

// Client returns a client of all the members, closed when the test ends.
func (c *Cluster) Client() *clientv3.Client {
	c.tb.Helper()
	cli, err := c.newClient()
	if err != nil {
		c.tb.Fatalf("etcdtest: client: %v", err)
	}
	c.tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

func (c *Cluster) newClient() (*clientv3.Client, error) {
	var tc *tls.Config
	if c.tlsConfig != nil {
		tc = c.tlsConfig.Clone()
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		TLS:         tc,
		Username:    c.cfg.user,
		Password:    c.cfg.password,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(), // its retries would flood the test output
	})
}

// Leader returns the index of the member that is leader by its own account.
// While there is none (an election after the leader was killed), it asks
// again until there is one or ctx ends; give ctx a deadline.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	cli, err := c.newClient()
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	last := errors.New("no member runs")
	for {
		for i, addr := range c.running() {
			if addr == "" {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cli.Status(sctx, addr)
			cancel()
			switch {
			case err != nil:
				last = fmt.Errorf("member %d: %w", i, err)
			case st.Leader != 0 && st.Leader == st.Header.MemberId:
				return i, nil
			default:
				last = fmt.Errorf("member %d: leader is %x", i, st.Leader)
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcdtest: no leader (%v): %w", last, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// running returns the client address of each running member, "" for the
// others.
func (c *Cluster) running() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs := make([]string, len(c.members))
	for i, m := range c.members {
		if m.alive() {
			addrs[i] = m.clientAddr
		}
	}
	return addrs
}

// Kill SIGKILLs member i, as a crash would, and waits until it has exited.
// Killing a member that is not running does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[i].kill()
}

// Stop kills every member. The data stays: Restart brings members back.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		m.kill()
		m.killed = true // not expected to run, even if it had exited by itself
	}
}

// Restart starts the given members again, on their data and ports, and
// waits until each serves clients. etcd serves none before a majority of
// the members runs: after losing a majority, restart enough members in one
// call. Restarting a running member fails the test.
func (c *Cluster) Restart(members ...int) {
	c.tb.Helper()
	if err := c.run(members); err != nil {
		c.tb.Fatalf("etcdtest.Restart: %v", err)
	}
}

// run starts the members and waits until they serve clients.
//
// It starts them one after the other, each once the previous one answers
// its peers: a member of a new cluster first asks the others whether it is
// already a member, and a peer that listens but does not answer yet costs
// it a second (etcd's bootstrap timeout, which no flag sets), while one
// that does not listen yet costs nothing.
func (c *Cluster) run(indexes []int) error {
	deadline := time.Now().Add(readyTimeout)
	urls := make([]string, len(indexes))
	dones := make([]chan struct{}, len(indexes))
	for k, i := range indexes {
		c.mu.Lock()
		m := c.members[i]
		var err error
		if m.alive() {
			err = errors.New("running already")
		} else {
			err = m.launch(c.bin)
		}
		dones[k] = m.done
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
		if err := c.poll(deadline, indexes[k:k+1], dones[k:k+1], []string{"http://" + m.peerAddr + "/version"}); err != nil {
			return err
		}
		urls[k] = c.scheme + "://" + m.clientAddr + "/readyz"
	}
	return c.poll(deadline, indexes, dones, urls)
}

// poll waits until each url answers 200 (/readyz: the member serves
// clients, has a leader and reads linearizably) or until the member it
// belongs to exits or the deadline passes. Its members' processes are
// polled together, since one may not get ready before another does.
func (c *Cluster) poll(deadline time.Time, members []int, dones []chan struct{}, urls []string) error {
	ok := make([]bool, len(urls))
	for {
		var pending []int
		for k, url := range urls {
			if ok[k] {
				continue
			}
			select {
			case <-dones[k]:
				return fmt.Errorf("member %d exited by itself", members[k])
			default:
			}
			if ok[k] = c.get200(url); !ok[k] {
				pending = append(pending, members[k])
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("members %v not ready after %v", pending, readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanup runs when the test ends: it reports members that exited by
// themselves, stops the rest, and prints the logs of a failed test.
func (c *Cluster) cleanup() {
	c.mu.Lock()
	for i, m := range c.members {
		if m.proc != nil && !m.killed && !m.alive() {
			c.tb.Errorf("etcdtest: member %d exited by itself: %v", i, m.err)
		}
	}
	c.mu.Unlock()
	c.Stop()
	if c.tb.Failed() {
		c.printLogs()
	}
}

// portTaken reports whether a member's log says that it could not listen.
func (c *Cluster) portTaken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if b, err := os.ReadFile(m.logPath); err == nil && bytes.Contains(b, []byte("address already in use")) {
			return true
		}
	}
	return false
}

func (c *Cluster) printLogs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		b, err := os.ReadFile(m.logPath)
		if err != nil {
			continue
		}
		lines := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > logTailLines {
			lines = lines[len(lines)-logTailLines:]
		}
		c.tb.Logf("etcd member %d (%s), last %d lines of %s:\n%s", i, m.clientAddr, len(lines), m.logPath, strings.Join(lines, ""))
	}
}

// member is one etcd process slot: its ports, data and log outlive the
// process, so that Restart brings back the same member. The Cluster's mu
// guards it.
type member struct {
	clientAddr string // 127.0.0.1:port
	peerAddr   string
	logPath    string
	args       []string

	proc   *exec.Cmd     // nil before the first start
	done   chan struct{} // closed once proc has exited
	err    error         // proc's exit, valid once done is closed
	killed bool          // by Kill or Stop, as opposed to exiting by itself
}

func (m *member) alive() bool {
	if m.proc == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// launch starts the process, appending its output to the member's log. A
// goroutine waits for it, so that its exit is known and it leaves no zombie;
// the goroutine ends with the process.
func (m *member) launch(bin string) error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = etcdEnv()
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	m.proc, m.done, m.killed = cmd, done, false
	go func() {
		m.err = cmd.Wait()
		close(done)
	}()
	return nil
}

func (m *member) kill() {
	if !m.alive() {
		return
	}
	m.killed = true
	_ = m.proc.Process.Kill()
	<-m.done
}

// get200 reports whether a GET of url answers 200.
func (c *Cluster) get200(url string) bool {
	resp, err := c.http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// etcdEnv is this process's environment without ETCD_ variables, which etcd
// would take as flags.
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePorts returns n distinct ports that 127.0.0.1 can listen on, below
// the kernel's ephemeral range: Restart binds a killed member's ports again,
// and a port in that range could meanwhile be the local end of some
// outgoing connection.
func freePorts(n int) ([]int, error) {
	lo, hi := 20000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 10000, 20000
	}
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("no %d free ports in [%d, %d)", n, lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		_ = ln.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil {
				return lo
			}
		}
	}
	return 32768 // Linux's default
}

func allIndexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
