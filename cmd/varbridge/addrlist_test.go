package main

// --addr (and $VARBRIDGE_ADDR) with several servers: host:port,host:port.

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCLIAddressListErrors(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:1,", "has an empty address"},
		{"127.0.0.1:1,,127.0.0.1:2", "has an empty address"},
		{"127.0.0.1:1,nonsense", `"nonsense" (--addr or $VARBRIDGE_ADDR): the port is missing`},
		{"ipv4:127.0.0.1:1,127.0.0.1:99999", "is not a number from 1 to 65535"},
	} {
		for _, args := range [][]string{{"get", "x"}, {"watch", "x"}, {"sessions"}} {
			_, errText, err := run(t, append([]string{"--addr", tc.addr}, args...)...)
			if err == nil || !strings.Contains(errText, tc.want) || !strings.Contains(errText, "host:port") {
				t.Errorf("--addr %s %v: %v %q, want %q", tc.addr, args, err, errText, tc.want)
			}
		}
	}
}

// freeLoopback returns a loopback address nothing listens on right now.
func freeLoopback(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// `varbridge watch` and `varbridge set` given two servers, through
// $VARBRIDGE_ADDR: the durable server on the first is SIGKILLed and a server
// on the same data directory starts on the second (until servers share
// sessions through etcd, the way to have a live server with the session
// elsewhere). The watch carries on there from its revision, with no RESYNC,
// printing each later change once, and set writes through the list.
func TestWatchCommandFailsOverAddressList(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a server process and waits through the CLI's reconnect schedule")
	}
	clearEnv(t)
	data := "--data-dir=" + t.TempDir()
	first, second := freeLoopback(t), freeLoopback(t)
	srv := startServerProcess(t, first, data)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, closeC := writer(t, first)
	createAndWrite(ctx, t, c, 100, 120)
	closeC()
	t.Setenv(envAddr, first+","+second)
	t.Setenv(envSession, "r")

	out := newLineWriter()
	root := newRootCmd()
	root.SetArgs([]string{"watch", "n", "-o", "json"})
	root.SetOut(out)
	root.SetErr(out)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(wctx) }()
	// Once the watch is registered, a write reaches it.
	for !strings.Contains(mustRun(t, "session", "get", "r"), " watches=1 ") {
		time.Sleep(10 * time.Millisecond)
	}
	mustRun(t, "set", "n", "121")
	var l watchLine
	mustDo(t, json.Unmarshal([]byte(out.next(t)), &l))
	if l.Update != "change" || l.New != 121.0 {
		t.Fatalf("first line %+v", l)
	}

	srv.kill()
	killed := time.Now()
	startServerProcess(t, second, data)
	for i, want := range []string{"122", "123", "124"} {
		mustRun(t, "set", "n", want)
		select {
		case text := <-out.lines:
			var l watchLine
			if err := json.Unmarshal([]byte(text), &l); err != nil {
				t.Fatalf("watch printed %q", text)
			}
			if l.Update != "change" || l.New != float64(122+i) {
				t.Fatalf("after the failover the watch printed %+v, want the change to %s", l, want)
			}
			if i == 0 {
				t.Logf("the watch printed its first change %v after the kill", time.Since(killed))
			}
		case err := <-done:
			t.Fatalf("the watch ended after the failover: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatalf("silence: no change to %s within 60 s of the failover", want)
		}
	}
	wcancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}
