package systest

// The HTTP face of the real binary (internal/httpapi): SSE watches through
// the cut proxy, resumed by Last-Event-ID exactly once; a resume across a
// restart into a re-created session; and the curl commands of the README.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varbridge/varbridge/internal/sse"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// httpAddr is the address the binary serves HTTP on (startBinServer picks
// one when the binary has --http-listen).
func httpAddr(t *testing.T, s *binServer) string {
	t.Helper()
	if i := slices.Index(s.args, "--http-listen"); i >= 0 && i+1 < len(s.args) {
		return s.args[i+1]
	}
	t.Fatal("the server was started without --http-listen")
	return ""
}

// httpClient is a client of its own, whose idle connections end with the test.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func fval(f float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}} }

// sseWatcher reads an SSE watch as a browser's EventSource does, reconnecting
// with Last-Event-ID after every break, and delivers each update once: the
// updates of a revision whose last event (the one with an id) it has not
// seen yet are resent after a reconnect, and it skips those it delivered
// already, by variable id, as the Go client does on gRPC.
type sseWatcher struct {
	t       *testing.T
	client  *http.Client
	url     string
	lastID  string
	partial int64           // revision whose last event has not arrived
	seen    map[string]bool // variable ids delivered at partial
	// cutEvery > 0 makes the watcher itself drop the connection after every
	// cutEvery-th update that does not complete its revision: a cut in the
	// middle of a revision, certainly, besides the proxy's random ones.
	cutEvery int

	mu         sync.Mutex
	delivered  []sseUpdate
	reconnects int
	midCuts    int // breaks while a revision was partly delivered
	skipped    int // resent updates skipped
}

type sseUpdate struct {
	Revision int64   `json:"revision"`
	Update   string  `json:"update"`
	Name     string  `json:"name"`
	ID       string  `json:"id"`
	New      float64 `json:"new"`
}

// run reads until ctx ends or the stream reports an error event (returned).
func (w *sseWatcher) run(ctx context.Context) error {
	partials := 0
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
		if err != nil {
			return err
		}
		if w.lastID != "" {
			req.Header.Set("Last-Event-ID", w.lastID)
		}
		resp, err := w.client.Do(req)
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return fmt.Errorf("watch refused: %s %s", resp.Status, body)
		}
		r := sse.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				break // a cut: reconnect
			}
			if ev.Name == "error" {
				resp.Body.Close()
				return fmt.Errorf("error event: %s", ev.Data)
			}
			if ev.Name == "heartbeat" {
				w.lastID, w.partial = ev.ID, 0
				continue
			}
			if ev.Name != "message" {
				continue
			}
			var u sseUpdate
			if err := json.Unmarshal([]byte(ev.Data), &u); err != nil {
				resp.Body.Close()
				return fmt.Errorf("update %s: %v", ev.Data, err)
			}
			w.mu.Lock()
			if u.Revision == w.partial && w.seen[u.ID] {
				w.skipped++
			} else {
				w.delivered = append(w.delivered, u)
			}
			w.mu.Unlock()
			if ev.HasID {
				w.lastID, w.partial = ev.ID, 0
				continue
			}
			if w.partial != u.Revision {
				w.partial, w.seen = u.Revision, map[string]bool{}
			}
			w.seen[u.ID] = true
			if partials++; w.cutEvery > 0 && partials%w.cutEvery == 0 {
				break
			}
		}
		resp.Body.Close()
		w.mu.Lock()
		w.reconnects++
		if w.partial != 0 {
			w.midCuts++
		}
		w.mu.Unlock()
	}
	return nil
}

func (w *sseWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.delivered)
}

// TestHTTPSSEThroughCutsExactlyOnce: thousands of updates, single ones and
// revisions of four, reach an SSE watcher through a proxy that cuts its
// connection at random moments and a watcher that breaks off in the middle
// of revisions: every update once, in revision order, none lost.
func TestHTTPSSEThroughCutsExactlyOnce(t *testing.T) {
	writes := envInt("VARBRIDGE_SSE_WRITES", 3000)
	srv := startBinServer(t)
	haddr := httpAddr(t, srv)
	client := httpClient(t)
	api := varbridgev1connect.NewBridgeServiceClient(client, "http://"+haddr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const session = "sse-cuts"
	names := []string{"a", "b", "c", "d"}
	if _, err := api.InitializeSession(ctx, connect.NewRequest(&pb.InitializeSessionRequest{SessionId: session})); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := api.RegisterVariable(ctx, connect.NewRequest(&pb.RegisterVariableRequest{
			SessionId: session, Name: n, Type: pb.VariableType_VARIABLE_TYPE_FLOAT, InitialValue: fval(0),
		})); err != nil {
			t.Fatal(err)
		}
	}
	proxy := newProxy(t, haddr)
	w := &sseWatcher{t: t, client: httpClient(t), cutEvery: 97,
		url: "http://" + proxy.Addr() + "/v1/sessions/" + session + "/watch?heartbeat=50ms"}
	// The watch starts from the session's revision now (4): resume from
	// there, as a watcher that had seen it would.
	w.lastID = startID(t, client, "http://"+haddr+"/v1/sessions/"+session+"/watch")
	wctx, wcancel := context.WithCancel(ctx)
	watchErr := make(chan error, 1)
	go func() { watchErr <- w.run(wctx) }()
	stopCuts := make(chan struct{})
	cutsDone := make(chan struct{})
	go func() {
		defer close(cutsDone)
		proxy.CutAtRandom(stopCuts, 30*time.Millisecond, func() bool { return true })
	}()

	// want: revision -> the values written at it.
	want := map[int64]map[string]float64{}
	total := 0
	for i := 1; i <= writes; i++ {
		v := float64(i)
		if i%3 == 0 {
			up := map[string]*pb.Value{}
			for _, n := range names {
				up[n] = fval(v)
			}
			res, err := api.SetVariables(ctx, connect.NewRequest(&pb.SetVariablesRequest{SessionId: session, Updates: up}))
			if err != nil {
				t.Fatal(err)
			}
			want[res.Msg.GetRevision()] = map[string]float64{"a": v, "b": v, "c": v, "d": v}
			total += 4
			continue
		}
		n := names[i%4]
		res, err := api.SetVariable(ctx, connect.NewRequest(&pb.SetVariableRequest{SessionId: session, VariableIdentifier: n, Value: fval(v)}))
		if err != nil {
			t.Fatal(err)
		}
		want[res.Msg.GetRevision()] = map[string]float64{n: v}
		total++
	}
	deadline := time.Now().Add(2 * time.Minute)
	for w.count() < total && time.Now().Before(deadline) {
		select {
		case err := <-watchErr:
			t.Fatalf("the watch ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stopCuts)
	<-cutsDone
	// Let anything extra (a duplicate) arrive before judging.
	time.Sleep(200 * time.Millisecond)
	wcancel()
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}

	lost, dup, disorder := 0, 0, 0
	got := map[int64]map[string]float64{}
	var last int64
	for _, u := range w.delivered {
		if u.Revision < last {
			disorder++
		}
		last = u.Revision
		if got[u.Revision] == nil {
			got[u.Revision] = map[string]float64{}
		}
		if _, ok := got[u.Revision][u.Name]; ok {
			dup++
		}
		got[u.Revision][u.Name] = u.New
		if wv, ok := want[u.Revision][u.Name]; !ok || wv != u.New || u.Update != "change" {
			t.Errorf("an update nobody wrote: %+v", u)
		}
	}
	for rev, vs := range want {
		for n := range vs {
			if _, ok := got[rev][n]; !ok {
				lost++
			}
		}
	}
	t.Logf("%d writes, %d updates: %d delivered, %d lost, %d duplicated, %d out of order; %d reconnects (%d proxy cuts, %d inside a revision), %d resent updates skipped",
		writes, total, len(w.delivered), lost, dup, disorder, w.reconnects, proxy.Cuts(), w.midCuts, w.skipped)
	if lost != 0 || dup != 0 || disorder != 0 || len(w.delivered) != total {
		t.Fatalf("not exactly once in order: %d lost, %d duplicated, %d out of order", lost, dup, disorder)
	}
	if w.midCuts == 0 || proxy.Cuts() == 0 {
		t.Fatalf("the stream was never cut inside a revision (%d) or by the proxy (%d)", w.midCuts, proxy.Cuts())
	}
}

// startID opens the watch and returns the id that resumes right after the
// revision it starts from, read from its "watching" event.
func startID(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ev, err := sse.NewReader(resp.Body).Next()
	if err != nil || ev.Name != "watching" {
		t.Fatalf("first event %+v: %v", ev, err)
	}
	var p struct {
		Revision    int64  `json:"revision"`
		Incarnation string `json:"incarnation"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		t.Fatal(err)
	}
	return p.Incarnation + ":" + strconv.FormatInt(p.Revision, 10)
}

// TestHTTPSSEResumeAfterRestart: a watcher resumes by Last-Event-ID on a
// server that was SIGKILLed, restarted, and whose session was created again
// and written to: it gets a resync of the current value in the new
// incarnation, then the changes after it.
func TestHTTPSSEResumeAfterRestart(t *testing.T) {
	srv := startBinServer(t)
	haddr := httpAddr(t, srv)
	client := httpClient(t)
	base := "http://" + haddr
	api := varbridgev1connect.NewBridgeServiceClient(client, base)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const session = "sse-restart"
	setup := func(values ...float64) int64 {
		t.Helper()
		if _, err := api.InitializeSession(ctx, connect.NewRequest(&pb.InitializeSessionRequest{SessionId: session})); err != nil {
			t.Fatal(err)
		}
		res, err := api.RegisterVariable(ctx, connect.NewRequest(&pb.RegisterVariableRequest{
			SessionId: session, Name: "n", Type: pb.VariableType_VARIABLE_TYPE_FLOAT, InitialValue: fval(0),
		}))
		if err != nil {
			t.Fatal(err)
		}
		rev := res.Msg.GetRevision()
		for _, v := range values {
			r, err := api.SetVariable(ctx, connect.NewRequest(&pb.SetVariableRequest{SessionId: session, VariableIdentifier: "n", Value: fval(v)}))
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Msg.GetRevision()
		}
		return rev
	}
	setup(1, 2, 3, 4, 5, 6, 7, 8)
	url := base + "/v1/sessions/" + session + "/watch?var=n&initial=true"
	open := func(lastID string) (*sse.Reader, func()) {
		t.Helper()
		rctx, rcancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			rcancel()
			t.Fatalf("watch: %v %v", resp, err)
		}
		return sse.NewReader(resp.Body), func() { rcancel(); resp.Body.Close() }
	}
	next := func(r *sse.Reader) (sse.Event, sseUpdate) {
		t.Helper()
		for {
			ev, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.Name == "message" {
				var u sseUpdate
				if err := json.Unmarshal([]byte(ev.Data), &u); err != nil {
					t.Fatal(err)
				}
				return ev, u
			}
		}
	}
	r, closeWatch := open("")
	ev, u := next(r)
	if u.Update != "initial" || u.New != 8 || !ev.HasID {
		t.Fatalf("initial: %+v (%+v)", u, ev)
	}
	oldID := ev.ID
	closeWatch()

	srv.kill()
	srv.start()
	rev := setup(1, 2) // the session again, at a lower revision
	r, closeWatch = open(oldID)
	defer closeWatch()
	ev, u = next(r)
	if u.Update != "resync" || u.New != 2 || u.Revision != rev || !ev.HasID || ev.ID == oldID ||
		strings.Split(ev.ID, ":")[0] == strings.Split(oldID, ":")[0] {
		t.Fatalf("after the restart: %+v id %q (before: %q), want a resync of n=2 at revision %d in a new incarnation", u, ev.ID, oldID, rev)
	}
	if _, err := api.SetVariable(ctx, connect.NewRequest(&pb.SetVariableRequest{SessionId: session, VariableIdentifier: "n", Value: fval(3)})); err != nil {
		t.Fatal(err)
	}
	if _, u = next(r); u.Update != "change" || u.New != 3 || u.Revision != rev+1 {
		t.Fatalf("after the resync: %+v", u)
	}
}

// TestHTTPCurl runs the README's curl commands against the binary: unary
// JSON calls, an error with its code and details, and an SSE watch.
func TestHTTPCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl on PATH")
	}
	srv := startBinServer(t)
	base := "http://" + httpAddr(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := func(method, body string) (int, map[string]any) {
		t.Helper()
		out, err := exec.CommandContext(ctx, curl, "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
			"-d", body, base+"/varbridge.v1.BridgeService/"+method).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", method, err)
		}
		i := strings.LastIndexByte(string(out), '\n')
		code, _ := strconv.Atoi(string(out[i+1:]))
		var m map[string]any
		if err := json.Unmarshal(out[:i], &m); err != nil {
			t.Fatalf("curl %s: %v\n%s", method, err, out)
		}
		return code, m
	}
	if code, m := call("InitializeSession", `{"sessionId": "demo"}`); code != 200 || m["created"] != true {
		t.Fatalf("InitializeSession: %d %v", code, m)
	}
	if code, m := call("RegisterVariable", `{"sessionId": "demo", "name": "temperature", "type": "VARIABLE_TYPE_FLOAT",
		"initialValue": {"floatValue": 20.5}, "constraints": {"min": -50, "max": 60}}`); code != 200 {
		t.Fatalf("RegisterVariable: %d %v", code, m)
	}
	code, m := call("SetVariable", `{"sessionId": "demo", "variableIdentifier": "temperature", "value": {"floatValue": 99}}`)
	if code != 400 || m["code"] != "invalid_argument" || !strings.Contains(fmt.Sprint(m["details"]), "CONSTRAINT_VIOLATION") {
		t.Fatalf("SetVariable out of range: %d %v", code, m)
	}

	// curl -N reads the watch as it streams.
	watch := exec.CommandContext(ctx, curl, "-sSN", base+"/v1/sessions/demo/watch?var=temperature&initial=true")
	out, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	sc := bufio.NewScanner(out)
	var lines []string
	wrote := false
	for sc.Scan() {
		line := sc.Text()
		lines = append(lines, line)
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"update":"initial"`) && !wrote {
			wrote = true
			if code, m := call("SetVariable", `{"sessionId": "demo", "variableIdentifier": "temperature", "value": {"floatValue": 21.5}}`); code != 200 {
				t.Fatalf("SetVariable: %d %v", code, m)
			}
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"update":"change"`) {
			var u sseUpdate
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &u); err != nil || u.New != 21.5 || u.Name != "temperature" {
				t.Fatalf("change line %q: %v", line, err)
			}
			if prev := lines[len(lines)-2]; !strings.HasPrefix(prev, "id: ") {
				t.Errorf("the change has no id line before it: %q", prev)
			}
			return
		}
	}
	t.Fatalf("curl's stream ended before the change: %v\n%s", errors.Join(sc.Err()), strings.Join(lines, "\n"))
}
