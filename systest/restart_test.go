package systest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// binServer is the real varbridge binary serving an in-memory store on a
// fixed loopback port, which a test SIGKILLs and starts again: a crash
// that loses every session, as issue 10 item 1 describes.
type binServer struct {
	t    *testing.T
	bin  string
	addr string
	args []string
	cmd  *exec.Cmd
}

// buildServer builds cmd/varbridge from this tree into the test's temp dir
// (a binary left in .bin could be older than the code under test).
func buildServer(t *testing.T) string {
	t.Helper()
	const pkg = "github.com/varbridge/varbridge/cmd/varbridge"
	bin := filepath.Join(t.TempDir(), "varbridge")
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func startBinServer(t *testing.T) *binServer {
	t.Helper()
	s := &binServer{t: t, bin: serverBin(t), addr: freeAddr(t)}
	s.args = []string{"serve", "--listen", s.addr, "--log-level", "error"}
	help, _ := exec.Command(s.bin, "serve", "--help").CombinedOutput()
	if strings.Contains(string(help), "--memory") {
		s.args = append(s.args, "--memory")
	}
	if strings.Contains(string(help), "--http-listen") {
		s.args = append(s.args, "--http-listen", freeAddr(t))
	}
	s.start()
	t.Cleanup(s.kill)
	return s
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// start runs the binary and waits until it says it is listening.
func (s *binServer) start() {
	s.t.Helper()
	var last string
	for range 50 { // the port may be held for a moment after a kill
		cmd := exec.Command(s.bin, s.args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			s.t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "listening on ") {
				go func() { _, _ = io.Copy(io.Discard, out) }()
				s.cmd = cmd
				return
			}
		}
		_ = cmd.Wait()
		last = stderr.String()
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("varbridge %s did not start: %s", strings.Join(s.args, " "), last)
}

// kill SIGKILLs the server: no drain, no goodbye to any client.
func (s *binServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Issue 10 item 1, through the real binary: a watcher of session r resumes
// at revision 23 after a SIGKILL and restart, in which r was created again
// and written to only up to revision 6. The new session's incarnation
// differs, so the watcher gets a RESYNC of the current value and every
// change after it, never silence; and a watch that asks for a revision
// ahead of the new session fails with a RevisionOutOfRangeError.
func TestRestartedServerResyncsNewIncarnation(t *testing.T) {
	srv := startBinServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writer := dialBridged(t, srv.addr, varbridge.WithSessionID("r"))
	mustRegister(t, writer, "n", varbridge.TypeInteger, int64(0))
	for i := int64(1); i <= 21; i++ {
		if _, err := writer.Set(ctx, "n", i); err != nil {
			t.Fatal(err)
		}
	}
	watcher := dialBridged(t, srv.addr, varbridge.WithSessionID("r"))
	rec := newRecorder()
	errs := make(chan error, 1)
	// A 3 s backoff leaves the watcher asleep between its first failed
	// reconnect and the next one, while the server restarts and the
	// writer re-creates r: the resume then certainly meets the new session.
	ref := mustWatch(t, watcher, ctx, []string{"n"}, rec.watch,
		varbridge.WithBackoff(3*time.Second, 3*time.Second), varbridge.WithErrorHandler(func(err error) { errs <- err }))
	if _, err := writer.Set(ctx, "n", int64(22)); err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.New != int64(22) || u.Meta.Revision != 23 {
		t.Fatalf("before the crash: %+v", u)
	}
	oldInc := watchInfo(t, watcher, ref).Incarnation
	if oldInc == "" {
		t.Fatal("the watch has no session incarnation")
	}

	srv.kill()
	eventually(t, "the watcher's first reconnect to fail", func() bool { return watchInfo(t, watcher, ref).Errors >= 2 })
	srv.start()
	w2, err := varbridge.NewBridgedState(ctx, srv.addr, varbridge.WithSessionID("r"), varbridge.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	mustRegister(t, w2, "n", varbridge.TypeInteger, int64(0))
	for i := int64(1); i <= 5; i++ {
		if _, err := w2.Set(ctx, "n", i); err != nil {
			t.Fatal(err)
		}
	}
	if wi := watchInfo(t, watcher, ref); wi.Reconnects != 0 {
		t.Fatalf("the watcher reconnected before r was written again; the test's timing is off: %+v", wi)
	}

	select {
	case u := <-rec.ch:
		if !u.Meta.Resync || u.New != int64(5) || u.Meta.Revision != 6 || u.Meta.Incarnation == oldInc {
			t.Fatalf("first update after the restart: %+v, want a RESYNC of n=5 at revision 6 in a new incarnation", u)
		}
	case err := <-errs:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("silence after the restart: %+v", watchInfo(t, watcher, ref))
	}
	if _, err := w2.Set(ctx, "n", int64(6)); err != nil {
		t.Fatal(err)
	}
	if u := rec.next(t); u.Meta.Resync || u.New != int64(6) || u.Old != int64(5) || u.Meta.Revision != 7 {
		t.Fatalf("after the resync: %+v", u)
	}
	eventually(t, "the watch's last revision in the new incarnation", func() bool {
		wi := watchInfo(t, watcher, ref)
		return wi.LastRevision == 7 && wi.Incarnation != oldInc && wi.Alive
	})

	// A resume point ahead of the session, without an incarnation to say it
	// is from another history, is an error, not silence.
	_, err = w2.WatchVariables(ctx, []string{"n"}, func(string, any, any, varbridge.UpdateMeta) {}, varbridge.WithStartRevision(23))
	var oor *varbridge.RevisionOutOfRangeError
	if !errors.As(err, &oor) || !errors.Is(err, varbridge.ErrOutOfRange) || oor.StartRevision != 23 || oor.SessionRevision != 7 {
		t.Fatalf("watch at revision 23 of a session at 7: %v (%+v)", err, oor)
	}
}

// Resuming in another incarnation (the revision's history is not the
// session's) starts with RESYNC through both providers' one core; resuming
// ahead of the session in its own incarnation, or without one, fails with a
// RevisionOutOfRangeError.
func TestResumeIncarnation(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		ctx := context.Background()
		mustRegister(t, e.p, "a", varbridge.TypeInteger, int64(0))
		mustRegister(t, e.p, "b", varbridge.TypeInteger, int64(0))
		e.set(t, "a", int64(1), nil)
		rec := newRecorder()
		ref := mustWatch(t, e.p, ctx, []string{"a", "b"}, rec.watch)
		rev := e.set(t, "a", int64(2), nil)
		u := rec.next(t)
		inc := u.Meta.Incarnation
		if inc == "" || u.Meta.Revision != rev {
			t.Fatalf("update %+v has no incarnation", u)
		}
		if err := e.p.UnwatchVariables(ref); err != nil {
			t.Fatal(err)
		}

		for _, opts := range [][]varbridge.WatchOption{
			{varbridge.WithStartRevision(rev + 5)},
			{varbridge.WithStartRevision(rev + 5), varbridge.WithIncarnation(inc)},
		} {
			_, err := e.p.WatchVariables(ctx, []string{"a"}, rec.watch, opts...)
			var oor *varbridge.RevisionOutOfRangeError
			if !errors.As(err, &oor) || !errors.Is(err, varbridge.ErrOutOfRange) {
				t.Fatalf("resume ahead of the session: %v", err)
			}
			if oor.StartRevision != rev+5 || oor.SessionRevision != rev || oor.Incarnation != inc {
				t.Fatalf("out of range error %+v (%v)", oor, err)
			}
		}

		// Another incarnation: a resync of both, at the current revision,
		// whatever the resume point says.
		other := strings.Repeat("0", 16)
		ref = mustWatch(t, e.p, ctx, []string{"a", "b"}, rec.watch, varbridge.WithStartRevision(rev+5), varbridge.WithIncarnation(other))
		got := map[string]any{}
		for range 2 {
			u := rec.next(t)
			if !u.Meta.Resync || u.Meta.Revision != rev || u.Meta.Incarnation != inc {
				t.Fatalf("resume from another incarnation: %+v", u)
			}
			got[u.Identifier] = u.New
		}
		if got["a"] != int64(2) || got["b"] != int64(0) {
			t.Fatalf("resync values %v", got)
		}
		next := e.set(t, "b", int64(7), nil)
		if u := rec.next(t); u.Meta.Resync || u.Identifier != "b" || u.New != int64(7) || u.Meta.Revision != next {
			t.Fatalf("after the resync: %+v", u)
		}
		if err := e.p.UnwatchVariables(ref); err != nil {
			t.Fatal(err)
		}
	})
}

// Issue 10 item 7: NewBridgedState against a port whose server comes up a
// second later succeeds within its context's deadline (unary calls wait for
// the connection) instead of failing at once with "connection refused".
func TestNewBridgedStateWaitsForServer(t *testing.T) {
	addr := freeAddr(t)
	st := store.New(store.Options{})
	defer st.Close()
	g := server.New(st, server.WithLogger(quiet)).GRPCServer()
	served := make(chan struct{})
	go func() {
		defer close(served)
		time.Sleep(time.Second)
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen on %s: %v", addr, err)
			return
		}
		_ = g.Serve(lis)
	}()
	defer func() {
		g.Stop()
		<-served
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	t0 := time.Now()
	b, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID("late"), varbridge.WithLogger(quiet))
	if err != nil {
		t.Fatalf("NewBridgedState while the server starts: %v after %v", err, time.Since(t0))
	}
	defer b.Close()
	if _, err := b.Register(ctx, "x", varbridge.TypeInteger, int64(1)); err != nil {
		t.Fatal(err)
	}
	t.Logf("connected %v after the first attempt", time.Since(t0).Round(time.Millisecond))
}

// A deadline still bounds the wait: with no server at all, NewBridgedState
// fails when its context ends, saying so.
func TestNewBridgedStateDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := varbridge.NewBridgedState(ctx, freeAddr(t), varbridge.WithLogger(quiet))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no server: %v, want context.DeadlineExceeded", err)
	}
}

// Issue 10 item 7: gRPC's own retry (the service config) repeats the
// idempotent reads that fail UNAVAILABLE, and never a write, which could
// apply twice. The real server fails the first calls of each method here.
func TestReadsRetryUnavailable(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	failFirst := map[string]int{"/varbridge.v1.BridgeService/GetVariable": 2, "/varbridge.v1.BridgeService/SetVariable": 1}
	inject := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		calls[info.FullMethod]++
		n := calls[info.FullMethod]
		mu.Unlock()
		if n <= failFirst[info.FullMethod] {
			return nil, status.Error(codes.Unavailable, "injected")
		}
		return h(ctx, req)
	}
	srv := servertest.Start(t, store.Options{}, server.WithGRPCOptions(grpc.ChainUnaryInterceptor(inject)))
	b := dialBridged(t, srv.Addr)
	mustRegister(t, b, "r", varbridge.TypeInteger, int64(4))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if v, err := b.Get(ctx, "r"); err != nil || v.Value != int64(4) {
		t.Fatalf("Get after two UNAVAILABLE: %+v, %v", v, err)
	}
	if _, err := b.Set(ctx, "r", int64(5)); !errors.Is(err, varbridge.ErrUnavailable) {
		t.Fatalf("Set after one UNAVAILABLE: %v, want ErrUnavailable (writes are not retried)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if g, s := calls["/varbridge.v1.BridgeService/GetVariable"], calls["/varbridge.v1.BridgeService/SetVariable"]; g != 3 || s != 1 {
		t.Fatalf("the server saw %d GetVariable and %d SetVariable calls, want 3 and 1", g, s)
	}
}
