package main

// Issue 10 item 1 through the CLI (and, at the end, issue 11's durable
// restart): `varbridge watch` on session r, the
// server SIGKILLed and restarted (in-memory store) on the same port, r
// created again and n written 0..5. The watch resumes with its old revision,
// which means nothing to the new session: it must print the RESYNC values
// (or end with a clear error), never stay silent or skip ahead unflagged.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// runMainEnv makes the test binary run the varbridge command (main) instead
// of the tests, so a test can start the real server as a process of its own
// and SIGKILL it.
const runMainEnv = "VARBRIDGE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serverProcess is `varbridge serve` running as a child process.
type serverProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startServerProcess runs `varbridge serve --listen listen` with more flags
// (--memory or --data-dir) and waits for it to listen.
func startServerProcess(t *testing.T, listen string, flags ...string) *serverProcess {
	t.Helper()
	args := append([]string{"serve", "--listen", listen, "--log-level", "warn", "--drain-timeout", "1s"}, flags...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd}
	t.Cleanup(func() { p.kill() })
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			p.addr = strings.TrimSpace(rest)
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return p
		}
	}
	t.Fatalf("varbridge serve printed no address: %v", sc.Err())
	return nil
}

func (p *serverProcess) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// writer writes to the server at addr, waiting for it to be up.
func writer(t *testing.T, addr string) (varbridgev1.BridgeServiceClient, func()) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	return varbridgev1.NewBridgeServiceClient(conn), func() { _ = conn.Close() }
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func intValue(i int64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_IntValue{IntValue: i}}
}

// createAndWrite creates session r with n and writes n = from..to.
func createAndWrite(ctx context.Context, t *testing.T, c varbridgev1.BridgeServiceClient, from, to int64) {
	t.Helper()
	_, err := c.InitializeSession(ctx, &varbridgev1.InitializeSessionRequest{SessionId: "r"})
	mustDo(t, err)
	_, err = c.RegisterVariable(ctx, &varbridgev1.RegisterVariableRequest{
		SessionId: "r", Name: "n", Type: varbridgev1.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intValue(from),
	})
	mustDo(t, err)
	for i := from + 1; i <= to; i++ {
		_, err := c.SetVariable(ctx, &varbridgev1.SetVariableRequest{SessionId: "r", VariableIdentifier: "n", Value: intValue(i)})
		mustDo(t, err)
	}
}

// watching is a server process with session r (n written 100..121) and
// `varbridge watch n -o json` running against it, its first line (the
// change to 121) read.
type watching struct {
	srv    *serverProcess
	addr   string
	out    *lineWriter
	done   chan error
	cancel context.CancelFunc
	ctx    context.Context // for the test's calls
}

func startWatching(t *testing.T, flags ...string) *watching {
	t.Helper()
	clearEnv(t)
	srv := startServerProcess(t, "127.0.0.1:0", flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	c, closeC := writer(t, srv.addr)
	createAndWrite(ctx, t, c, 100, 120)
	closeC()

	out := newLineWriter()
	root := newRootCmd()
	root.SetArgs([]string{"--addr", srv.addr, "--session", "r", "watch", "n", "-o", "json"})
	root.SetOut(out)
	root.SetErr(out)
	wctx, wcancel := context.WithCancel(context.Background())
	t.Cleanup(wcancel)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(wctx) }()

	// The watch is live (registered on the server): a write reaches it.
	c, closeC = writer(t, srv.addr)
	defer closeC()
	for {
		s, err := c.GetSession(ctx, &varbridgev1.GetSessionRequest{SessionId: "r"})
		mustDo(t, err)
		if s.GetSession().GetWatchCount() > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := c.SetVariable(ctx, &varbridgev1.SetVariableRequest{SessionId: "r", VariableIdentifier: "n", Value: intValue(121)})
	mustDo(t, err)
	var l watchLine
	mustDo(t, json.Unmarshal([]byte(out.next(t)), &l))
	if l.Update != "change" || l.New != 121.0 {
		t.Fatalf("first line %+v", l)
	}
	return &watching{srv: srv, addr: srv.addr, out: out, done: done, cancel: wcancel, ctx: ctx}
}

func TestWatchCommandAfterServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a server process and waits through the CLI's reconnect schedule")
	}
	r := startWatching(t, "--memory")
	srv, addr, out, done, wcancel, ctx := r.srv, r.addr, r.out, r.done, r.cancel, r.ctx
	srv.kill()
	startServerProcess(t, addr, "--memory") // same port, empty store
	c, closeC := writer(t, addr)
	defer closeC()
	createAndWrite(ctx, t, c, 0, 5)

	// Whatever the timing of its reconnect, the watch says what happened:
	// the current value flagged RESYNC, then the rest in order; or an error.
	var lines []watchLine
	deadline := time.After(60 * time.Second)
	for {
		select {
		case text := <-out.lines:
			var l watchLine
			if err := json.Unmarshal([]byte(text), &l); err != nil {
				t.Fatalf("watch printed %q", text)
			}
			if len(lines) == 0 && l.Update != "resync" {
				t.Fatalf("after the restart the watch printed %+v without a resync first", l)
			}
			lines = append(lines, l)
			if l.New == 5.0 {
				t.Logf("after the restart: %+v", lines)
				wcancel()
				if err := <-done; err != nil {
					t.Fatalf("watch ended with %v", err)
				}
				return
			}
		case err := <-done:
			if err == nil {
				t.Fatal("the watch ended without an error after the restart")
			}
			var msg strings.Builder
			printError(&msg, err)
			if !strings.Contains(msg.String(), `"r"`) && !strings.Contains(msg.String(), "revision") {
				t.Fatalf("the watch ended with an unclear error: %s", msg.String())
			}
			t.Logf("after the restart the watch ended with: %s", msg.String())
			return
		case <-deadline:
			t.Fatalf("silence: no line and no error within 60 s of the restart (lines so far: %s)", fmt.Sprint(lines))
		}
	}
}

// The durable default: the server SIGKILLed and restarted on the same data
// directory keeps session r in its incarnation, so the watch resumes from
// its revision and prints the writes after the restart, each once, with no
// RESYNC.
func TestWatchCommandResumesAfterDurableRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a server process and waits through the CLI's reconnect schedule")
	}
	data := "--data-dir=" + t.TempDir()
	r := startWatching(t, data)
	srv, addr, out, done, wcancel, ctx := r.srv, r.addr, r.out, r.done, r.cancel, r.ctx
	srv.kill()
	startServerProcess(t, addr, data)
	c, closeC := writer(t, addr)
	defer closeC()
	for i := int64(122); i <= 126; i++ {
		_, err := c.SetVariable(ctx, &varbridgev1.SetVariableRequest{SessionId: "r", VariableIdentifier: "n", Value: intValue(i)})
		mustDo(t, err)
	}
	for want := 122.0; want <= 126; want++ {
		select {
		case text := <-out.lines:
			var l watchLine
			if err := json.Unmarshal([]byte(text), &l); err != nil {
				t.Fatalf("watch printed %q", text)
			}
			if l.Update != "change" || l.New != want {
				t.Fatalf("after the durable restart the watch printed %+v, want the change to %v", l, want)
			}
		case err := <-done:
			t.Fatalf("the watch ended after the durable restart: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatalf("silence: no change to %v within 60 s of the restart", want)
		}
	}
	wcancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}
