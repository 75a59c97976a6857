package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/sse"
)

// runServeHTTP runs "varbridge serve args..." and returns the lines it printed
// up to "listening on" (by prefix), a function that stops it and returns its
// error, and the error it returned at once if it failed to start.
func runServeHTTP(t *testing.T, args ...string) (lines map[string]string, stop func() error, startErr error) {
	t.Helper()
	pr, pw := io.Pipe()
	root := newRootCmd()
	root.SetArgs(append([]string{"serve", "--memory", "--listen", "127.0.0.1:0", "--log-level", "error"}, args...))
	root.SetOut(pw)
	root.SetErr(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("serve did not stop within 15s of cancel")
			return nil
		}
	}
	lines = map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if p, rest, ok := strings.Cut(sc.Text(), " on "); ok {
			lines[p] = rest
		}
		if _, ok := lines["listening"]; ok {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return lines, stop, nil
		}
	}
	cancel()
	return nil, nil, <-done
}

func TestServeHTTPListen(t *testing.T) {
	lines, stop, err := runServeHTTP(t, "--http-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url, ok := lines["http"]
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no http line before listening: %v", lines)
	}
	resp, err := http.Post(url+"/varbridge.v1.BridgeService/InitializeSession", "application/json", strings.NewReader(`{"sessionId":"s"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("InitializeSession over HTTP: %s", resp.Status)
	}
	// The dashboard is at "/".
	resp, err = http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	// An open watch does not hold the server up when it stops: the stream
	// ends, and a client resumes when the server is back.
	resp, err = http.Get(url + "/v1/sessions/s/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := sse.NewReader(resp.Body)
	if ev, err := r.Next(); err != nil || ev.Name != "watching" {
		t.Fatalf("watch: %+v %v", ev, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	for {
		if _, err := r.Next(); err != nil {
			break // the stream ended
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestServeHTTPAddressTaken(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	// Given explicitly, an address that cannot be bound is an error.
	if _, _, err := runServeHTTP(t, "--http-listen", lis.Addr().String()); err == nil || !strings.Contains(err.Error(), "--http-listen") {
		t.Fatalf("serve on a taken --http-listen: %v", err)
	}
	// Off: no HTTP line.
	lines, stop, err := runServeHTTP(t, "--http-listen", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lines["http"]; ok {
		t.Errorf("--http-listen \"\" served HTTP: %v", lines)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The default taken (by this test, or by another server): serve goes on
	// without HTTP. When the default is free, serve takes it and says so.
	held, herr := net.Listen("tcp", defaultHTTPListen)
	if herr == nil {
		defer held.Close()
	}
	lines, stop, err = runServeHTTP(t)
	if err != nil {
		t.Fatalf("serve with the default HTTP address taken: %v", err)
	}
	if _, ok := lines["http"]; ok {
		t.Errorf("serve claims HTTP on a taken default address: %v", lines)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
