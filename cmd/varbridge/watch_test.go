package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// lineWriter hands each complete line written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
	n     atomic.Int64
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 100_000)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line) // an incomplete line: keep it
			return len(p), nil
		}
		w.lines <- strings.TrimSuffix(line, "\n")
		w.n.Add(1)
	}
}

func (w *lineWriter) next(t *testing.T) string {
	t.Helper()
	return w.nextWithin(t, 10*time.Second, func() string { return "" })
}

// nextWithin waits up to d for a line; on timeout the test fails with what
// state says.
func (w *lineWriter) nextWithin(t *testing.T, d time.Duration, state func() string) string {
	t.Helper()
	select {
	case l := <-w.lines:
		return l
	case <-time.After(d):
		t.Fatalf("no line within %s after %d lines %s", d, w.n.Load(), state())
		return ""
	}
}

// startWatch runs `varbridge watch` with args until the returned stop is
// called; stop returns the command's error.
func startWatch(t *testing.T, addr, session string, args ...string) (*lineWriter, func() error) {
	t.Helper()
	out := newLineWriter()
	root := newRootCmd()
	root.SetArgs(append([]string{"--addr", addr, "--session", session, "watch"}, args...))
	root.SetOut(out)
	root.SetErr(out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not stop on interrupt")
			return nil
		}
	}
}

// noLeaks checks, after the test's other cleanups, that it left no goroutine.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func setup(t *testing.T, st *store.Store, session string, vars map[string]*varbridgev1.Value) {
	t.Helper()
	if _, _, err := st.CreateSession(session, 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedKeys(vars) {
		v := vars[name]
		typ := varbridgev1.VariableType_VARIABLE_TYPE_INTEGER
		if _, ok := v.Kind.(*varbridgev1.Value_FloatValue); ok {
			typ = varbridgev1.VariableType_VARIABLE_TYPE_FLOAT
		}
		if _, _, err := st.Register(session, store.Register{Name: name, Type: typ, Value: v}); err != nil {
			t.Fatal(err)
		}
	}
}

func fv(f float64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_FloatValue{FloatValue: f}}
}
func iv(i int64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_IntValue{IntValue: i}}
}

func TestWatchCommandLines(t *testing.T) {
	noLeaks(t)
	srv := servertest.Start(t, store.Options{})
	setup(t, srv.Store, "w1", map[string]*varbridgev1.Value{"temperature": fv(0.7), "steps": iv(1)})

	out, stop := startWatch(t, srv.Addr, "w1", "temperature", "--initial")
	if l := out.next(t); l != `revision=2 update=initial name=temperature old=- new=0.7 type=float source=""` {
		t.Fatalf("initial line %q", l)
	}
	if _, err := srv.Store.Set("w1", []store.Write{{Identifier: "temperature", Value: fv(0.9)}},
		map[string]string{"source": "tuner", "why": "test"}, ""); err != nil {
		t.Fatal(err)
	}
	if l := out.next(t); l != "revision=3 update=change name=temperature old=0.7 new=0.9 type=float source=tuner meta.why=test" {
		t.Fatalf("change line %q", l)
	}
	if _, _, err := srv.Store.Delete("w1", "temperature", nil, "cleaner"); err != nil {
		t.Fatal(err)
	}
	if l := out.next(t); l != "revision=4 update=deleted name=temperature old=0.9 new=- type=float source=cleaner" {
		t.Fatalf("delete line %q", l)
	}
	if err := stop(); err != nil {
		t.Fatalf("watch ended with %v", err)
	}
}

func TestWatchCommandJSONWhereAndResume(t *testing.T) {
	noLeaks(t)
	srv := servertest.Start(t, store.Options{})
	setup(t, srv.Store, "w2", map[string]*varbridgev1.Value{"steps": iv(0)})
	for i := int64(1); i <= 3; i++ {
		if _, err := srv.Store.Set("w2", []store.Write{{Identifier: "steps", Value: iv(i)}}, nil, "go"); err != nil {
			t.Fatal(err)
		}
	}
	// Revisions 2..4 hold steps=1..3; resume from 3 with a filter that drops 2.
	out, stop := startWatch(t, srv.Addr, "w2", "steps", "--json", "--from-revision", "3", "--where", "new != 2")
	var l watchLine
	if err := json.Unmarshal([]byte(out.next(t)), &l); err != nil {
		t.Fatal(err)
	}
	if l.Revision != 4 || l.Update != "change" || l.Name != "steps" || l.Old != 2.0 || l.New != 3.0 ||
		l.Type != "integer" || l.Source != "go" || l.Version != 4 || !strings.HasPrefix(l.ID, "var_") {
		t.Fatalf("json line %+v", l)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Errors from the server reach the user with their code.
	_, errText, err := cli(t, srv.Addr, "--session", "w2", "watch", "steps", "nope")
	if err == nil || !strings.Contains(errText, `has no variable "nope"`) {
		t.Fatalf("watch of a missing variable: %v %q", err, errText)
	}
	_, errText, err = cli(t, srv.Addr, "--session", "w2", "watch", "--where", "new >")
	if err == nil || !strings.Contains(errText, "InvalidArgument") {
		t.Fatalf("bad where: %v %q", err, errText)
	}
}

// The CLI's client path under a proxy that cuts its connection 12 times:
// every change of 10,000 and more, mixed single writes and batches, is
// printed exactly once, in order.
func TestWatchCommandSurvivesCuts(t *testing.T) {
	noLeaks(t)
	srv := servertest.Start(t, store.Options{HistoryLimit: 100_000})
	proxy, err := cutproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	names := []string{"a", "b", "c", "d", "e"}
	vars := map[string]*varbridgev1.Value{}
	for _, n := range names {
		vars[n] = iv(0)
	}
	setup(t, srv.Store, "w3", vars)

	out, stop := startWatch(t, proxy.Addr(), "w3", append([]string{"--json", "--initial"}, names...)...)
	// The watch is in place, client side too, once its initial values are
	// out: a cut before that fails the command (it is setting up, not
	// resuming), which is not what this test is about.
	for range names {
		var l watchLine
		if err := json.Unmarshal([]byte(out.next(t)), &l); err != nil || l.Update != "initial" {
			t.Fatalf("initial line: %+v, %v", l, err)
		}
	}

	stopCuts := make(chan struct{})
	cutterDone := make(chan struct{})
	go func() { // cut at random moments; each reconnect waits up to 100 ms (the first backoff)
		defer close(cutterDone)
		proxy.CutAtRandom(stopCuts, 4*time.Millisecond, func() bool { return proxy.Cuts() < 12 })
	}()

	var want []string
	counter := int64(0)
	// Write at least 10,200 changes, and on until the proxy has cut 12
	// times: a fast machine writes them all before the reconnects (each up
	// to 100 ms) let the cutter reach 12.
	writeUntil := time.Now().Add(60 * time.Second)
	for len(want) < 10_200 || (proxy.Cuts() < 12 && time.Now().Before(writeUntil)) {
		var ws []store.Write
		k := 1
		if rand.IntN(3) == 0 {
			k = 2 + rand.IntN(4)
		}
		for _, i := range rand.Perm(len(names))[:k] {
			counter++
			ws = append(ws, store.Write{Identifier: names[i], Value: iv(counter)})
		}
		res, err := srv.Store.Set("w3", ws, nil, "writer")
		if err != nil {
			t.Fatal(err)
		}
		// The members of a batch reach watchers ordered by name.
		slices.SortFunc(ws, func(a, b store.Write) int { return strings.Compare(a.Identifier, b.Identifier) })
		for _, w := range ws {
			want = append(want, fmt.Sprintf("%d/%s/%d", res.Revision, w.Identifier, w.Value.GetIntValue()))
		}
		if len(want)%100 < len(ws) {
			time.Sleep(time.Millisecond)
		}
	}
	got := make([]string, 0, len(want))
	// The CLI reconnects on the library's default schedule (1 s, doubling
	// after the second consecutive failure), so on a loaded machine a few
	// failed attempts in a row can hold the output for several seconds.
	state := func() string {
		return fmt.Sprintf("(proxy: %d accepted, %d cuts, %d open, %d bytes forwarded; server: %d watches)",
			proxy.Accepted(), proxy.Cuts(), proxy.Open(), proxy.Forwarded(), srv.Store.WatchCount())
	}
	for len(got) < len(want) {
		var l watchLine
		if err := json.Unmarshal([]byte(out.nextWithin(t, 40*time.Second, state)), &l); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%s/%v", l.Revision, l.Name, l.New))
	}
	close(stopCuts)
	<-cutterDone
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-out.lines:
		t.Fatalf("an extra line %q", l)
	default:
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d: got %s, want %s", i, got[i], want[i])
		}
	}
	if proxy.Cuts() < 10 {
		t.Fatalf("only %d cuts", proxy.Cuts())
	}
	t.Logf("%d lines through %d cuts", len(got), proxy.Cuts())
}
