package systest

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/varbridge/varbridge"
)

// The dashboard in a real browser: Debian's chromium, headless, driven over
// the DevTools protocol by chromedp, against the varbridge binary built from
// this tree serving gRPC and HTTP on loopback. The page's JavaScript talks to
// the server's Connect JSON calls and its SSE watch as a user's browser
// would; the test reads the DOM (polling, bounded) and writes and watches
// through the Go client.
//
// Chromium comes from apt (.ci/run installs it). The test skips only when no
// Chromium is found and VARBRIDGE_REQUIRE_BROWSER is unset; CI sets it.

// findChromium returns the browser's path, or skips (fails, with
// VARBRIDGE_REQUIRE_BROWSER set) when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VARBRIDGE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("VARBRIDGE_REQUIRE_BROWSER") != "" {
		t.Fatal("no chromium on PATH and VARBRIDGE_REQUIRE_BROWSER is set (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium; VARBRIDGE_REQUIRE_BROWSER=1 makes this a failure)")
	return ""
}

// dashServer is the varbridge binary with its HTTP face on httpAddr.
type dashServer struct {
	*binServer
	httpAddr string
}

func startDashServer(t *testing.T, bin string, extra ...string) *dashServer {
	t.Helper()
	s := &dashServer{binServer: &binServer{t: t, bin: bin, addr: freeAddr(t)}, httpAddr: freeAddr(t)}
	s.args = append([]string{"serve", "--memory", "--listen", s.addr, "--http-listen", s.httpAddr, "--log-level", "error"}, extra...)
	s.start()
	t.Cleanup(s.kill)
	// "listening on" speaks for the gRPC listener; wait for the HTTP one too.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + s.httpAddr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
			err = fmt.Errorf("GET /: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard at http://%s/ did not answer: %v", s.httpAddr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// browser is one headless Chromium tab. JavaScript exceptions and console
// errors on the page are collected and fail the test at its end.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := findChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it
		cancel()
		cancelAlloc()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("page: %s", p)
		}
	})
	if err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			p = fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, d.Text)
			if d.Exception != nil {
				p += " " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			p = "console.error: " + strings.Join(args, " ")
		default:
			return
		}
		b.mu.Lock()
		b.problems = append(b.problems, p)
		b.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// do runs actions, failing the test with the page's text when one fails.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage text:\n%s", what, err, b.text())
	}
}

// text is the page's visible text, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// waitFor polls a JavaScript expression until it is truthy and returns its
// value (as text). The bound is generous: it is a hang guard, not a
// timing assertion.
func (b *browser) waitFor(what, expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Poll[any](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, b.text())
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// cellText is a JavaScript expression: the trimmed text (a row's cells
// separated by tabs) of the first element matching a CSS selector, or ""
// when there is none.
func cellText(selector string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.innerText ?? "").trim()`, selector)
}

// TestDashboardBrowser runs the page's scenarios on one build of the binary.
func TestDashboardBrowser(t *testing.T) {
	findChromium(t)
	bin := serverBin(t)
	t.Run("LiveSession", func(t *testing.T) { testDashboardLive(t, bin) })
	t.Run("Auth", func(t *testing.T) { testDashboardAuth(t, bin) })
}

// testDashboardLive: the sessions list, a session's live variables, a
// plot, the tensor summary, the session's watches, a write through the
// form that a Go watcher receives, and a constraint violation shown as the
// server stated it.
func testDashboardLive(t *testing.T, bin string) {
	b := newBrowser(t)
	srv := startDashServer(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	state, err := varbridge.NewBridgedState(ctx, srv.addr, varbridge.WithSessionID("lab"))
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	mustRegister(t, state, "temperature", varbridge.TypeFloat, 20.5,
		varbridge.WithConstraints(varbridge.Constraints{Min: varbridge.Ptr(-40.0), Max: varbridge.Ptr(60.0)}))
	mustRegister(t, state, "steps", varbridge.TypeInteger, int64(1))
	mustRegister(t, state, "mode", varbridge.TypeString, "auto")
	mustRegister(t, state, "direction", varbridge.TypeEmbedding, []float64{3, 4})
	mustRegister(t, state, "weights", varbridge.TypeTensor, varbridge.TensorFromFloat32([]int64{2, 2}, []float32{1, 2, 2, 4}))

	// A Go watcher of temperature: the form's write must reach it.
	fromForm := make(chan varbridge.Update, 64)
	ref, err := state.WatchVariables(ctx, []string{"temperature"}, func(id string, old, new any, meta varbridge.UpdateMeta) {
		select {
		case fromForm <- varbridge.Update{Identifier: id, Old: old, New: new, Meta: meta}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = state.UnwatchVariables(ref) }()

	base := "http://" + srv.httpAddr + "/"
	b.do("open the dashboard", chromedp.Navigate(base))
	row := `#sessions tr[data-session="lab"]`
	got := b.waitFor("the sessions list to show lab", fmt.Sprintf(
		`(() => { const r = document.querySelector(%q); return r && r.cells[1].textContent === "5" ? r.innerText : ""; })()`, row))
	t.Logf("sessions list row: %q", got)
	if cells := strings.Split(got, "\t"); len(cells) != 5 || cells[0] != "lab" || cells[1] != "5" || !strings.HasPrefix(cells[4], "in ") {
		t.Errorf("sessions row %q: want lab, 5 variables, watches, revision, expiry in the future", got)
	}

	b.do("open the session", chromedp.Click(chromedp.CSS(row+" a")))
	b.waitFor("temperature's initial value", cellText(`#variables tr[data-name="temperature"] td.value`)+` === "20.5"`)
	b.waitFor("the stream to be live", cellText(`#stream-state`)+` === "live"`)
	if v := b.waitFor("mode's row", cellText(`#variables tr[data-name="mode"]`)); !strings.Contains(v, `"auto"`) || !strings.Contains(v, "string") {
		t.Errorf("mode row %q: want type string and value \"auto\"", v)
	}

	// Values written from Go appear live, in order; the page plots them.
	// For the README's picture the writes are spread out so that the plot
	// has a shape; the test itself waits for nothing but the page.
	shotPath := os.Getenv("VARBRIDGE_DASHBOARD_SCREENSHOT")
	last, writes := 20.5, 0
	for i := range 24 {
		if shotPath != "" {
			time.Sleep(100 * time.Millisecond)
		}
		v := math.Round((20+8*math.Sin(float64(i)/3))*100) / 100
		if v == last {
			continue // an unchanged value is no write
		}
		last, writes = v, writes+1
		start := time.Now()
		if _, err := state.Set(ctx, "temperature", v, varbridge.WithSource("go-test")); err != nil {
			t.Fatal(err)
		}
		b.waitFor(fmt.Sprintf("temperature = %v", v), cellText(`#variables tr[data-name="temperature"] td.value`)+fmt.Sprintf(` === %q`, fmt.Sprint(v)))
		if i%8 == 0 {
			t.Logf("write %d: the page showed %v %v after the Go Set began", i, v, time.Since(start).Round(time.Millisecond))
		}
	}
	// Every value is a point: the initial one and each write.
	b.waitFor("every temperature on the plot", fmt.Sprintf(
		`document.querySelector('#plots figure[data-name="temperature"]')?.dataset.points === "%d"`, writes+1))
	if v := b.waitFor("temperature's version and source", cellText(`#variables tr[data-name="temperature"]`)); !strings.Contains(v, "go-test") || !strings.Contains(v, fmt.Sprintf("\t%d\t", writes+1)) {
		t.Errorf("temperature row %q: want version %d, source go-test", v, writes+1)
	}
	if _, err := state.Set(ctx, "steps", int64(7)); err != nil {
		t.Fatal(err)
	}
	b.waitFor("steps = 7", cellText(`#variables tr[data-name="steps"] td.value`)+` === "7"`)
	b.waitFor("a plot canvas for temperature",
		`(() => { const c = document.querySelector('#plots figure[data-name="temperature"] canvas'); return c && c.width > 0 && c.height > 0; })()`)
	b.waitFor("a plot canvas for steps", `!!document.querySelector('#plots figure[data-name="steps"] canvas')`)
	if n := b.waitFor("no plot for non-numeric variables", `String(document.querySelectorAll("#plots figure").length)`); n != "2" {
		t.Errorf("%s plots; want 2 (temperature, steps)", n)
	}

	// The tensor summary: shape, dtype, L2 norm (sqrt(1+4+4+16) = 5).
	tensor := b.waitFor("the tensor summary", cellText(`#tensors tr[data-name="weights"]`))
	if !strings.Contains(tensor, "[2, 2]") || !strings.Contains(tensor, "float32") || !strings.Contains(tensor, "\t5") {
		t.Errorf("tensor summary %q: want shape [2, 2], dtype float32, norm 5", tensor)
	}
	emb := b.waitFor("the embedding summary", cellText(`#tensors tr[data-name="direction"]`))
	if !strings.Contains(emb, "[2]") || !strings.Contains(emb, "float64") || !strings.Contains(emb, "\t5") {
		t.Errorf("embedding summary %q: want shape [2], dtype float64, norm 5", emb)
	}
	if _, err := state.Set(ctx, "direction", []float64{6, 8}); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the embedding's new norm", cellText(`#tensors tr[data-name="direction"] td:last-child`)+` === "10"`)

	// The session's watches (ListWatches): the Go watcher of temperature
	// and the page's own SSE stream of every variable, both caught up.
	b.waitFor("the session's watch count", cellText(`#watch-count`)+` === "2"`)
	watches := b.waitFor("both watches caught up", `(() => {
		const rows = [...document.querySelectorAll("#watches tbody tr")].map((r) => r.innerText);
		return rows.length === 2 && rows.every((r) => r.endsWith("up to date")) ? rows.join("\n") : "";
	})()`)
	if !strings.Contains(watches, "temperature\t") || !strings.Contains(watches, "every variable\t") {
		t.Errorf("the watches table reads:\n%s\nwant a watch of temperature and one of every variable", watches)
	}

	// The form: a value within the constraints reaches the Go watcher...
	for len(fromForm) > 0 {
		<-fromForm
	}
	b.do("set temperature through the form",
		chromedp.SetValue(chromedp.CSS("#set-name"), "temperature"),
		chromedp.SetValue(chromedp.CSS("#set-value"), "33.5"),
		chromedp.Click(chromedp.CSS(`#set-form button[type="submit"]`)))
	b.waitFor("the form's confirmation", cellText(`#set-result .ok`))
	deadline := time.After(20 * time.Second)
	for got := false; !got; {
		select {
		case u := <-fromForm:
			got = u.New == 33.5
			if got && u.Meta.Source != "dashboard" {
				t.Errorf("the form's write came with source %q; want dashboard", u.Meta.Source)
			}
		case <-deadline:
			t.Fatal("the Go watcher did not receive the value set through the form")
		}
	}
	b.waitFor("the page to show its own write", cellText(`#variables tr[data-name="temperature"] td.value`)+` === "33.5"`)

	// ... and one past max is refused, the server's error shown as it said it.
	b.do("set an out-of-range temperature",
		chromedp.SetValue(chromedp.CSS("#set-value"), "99"),
		chromedp.Click(chromedp.CSS(`#set-form button[type="submit"]`)))
	msg := b.waitFor("the constraint error", cellText(`#set-result .error`))
	t.Logf("the form shows: %q", msg)
	for _, want := range []string{"invalid_argument", "CONSTRAINT_VIOLATION", "constraint=max"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the form's error %q lacks %q", msg, want)
		}
	}
	// VARBRIDGE_DASHBOARD_SCREENSHOT=docs/dashboard.png (an absolute path:
	// tests run in systest/) takes the README's picture.
	if shotPath != "" {
		shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Clean(shotPath), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := state.Get(ctx, "temperature"); err != nil || v.Value != 33.5 {
		t.Errorf("after the refused write temperature is %v (%v); want 33.5", v, err)
	}
	// A value the form cannot read is explained before anything is sent.
	b.do("type a non-number",
		chromedp.SetValue(chromedp.CSS("#set-value"), "warm"),
		chromedp.Click(chromedp.CSS(`#set-form button[type="submit"]`)))
	if msg := b.waitFor("the parse error", cellText(`#set-result .error`)); !strings.Contains(msg, "a float is a number") {
		t.Errorf("the form's error for %q is %q", "warm", msg)
	}

	// Deleting a variable removes its row, plot and all.
	if err := state.Delete(ctx, "steps"); err != nil {
		t.Fatal(err)
	}
	b.waitFor("steps to go", `!document.querySelector('#variables tr[data-name="steps"]') && !document.querySelector('#plots figure[data-name="steps"]')`)

}

// testDashboardAuth: with --require-auth the page asks for the operator
// token to list sessions and for a session's token to open it, refuses a
// wrong one with the server's error, and works once given the right one.
func testDashboardAuth(t *testing.T, bin string) {
	b := newBrowser(t)
	const operator = "op-secret-token"
	srv := startDashServer(t, bin, "--require-auth", "--operator-token", operator)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	state, err := varbridge.NewBridgedState(ctx, srv.addr, varbridge.WithSessionID("secured"))
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	mustRegister(t, state, "level", varbridge.TypeInteger, int64(3))

	b.do("open the dashboard", chromedp.Navigate("http://"+srv.httpAddr+"/"))
	ask := b.waitFor("the operator token prompt",
		`document.querySelector("#token-dialog").open ? document.querySelector("#token-dialog").innerText : ""`)
	if !strings.Contains(ask, "operator token") {
		t.Errorf("the prompt says %q; want it to ask for the operator token", ask)
	}
	if err := b.waitFor("the refusal shown under the prompt", cellText(`.token-needed .error`)); !strings.Contains(err, "unauthenticated") {
		t.Errorf("the page shows %q; want the server's unauthenticated error", err)
	}
	b.do("enter the operator token (Enter in the field saves)",
		chromedp.SendKeys(chromedp.CSS("#token-input"), operator+"\r"))
	b.waitFor("the sessions list", `!!document.querySelector('#sessions tr[data-session="secured"]')`)

	b.do("open the session", chromedp.Click(chromedp.CSS(`#sessions tr[data-session="secured"] a`)))
	ask = b.waitFor("the session token prompt",
		`document.querySelector("#token-dialog").open ? document.querySelector("#token-dialog").innerText : ""`)
	if !strings.Contains(ask, "session secured") {
		t.Errorf("the prompt says %q; want it to ask for the token of session secured", ask)
	}
	// Cancel leaves a button that asks again.
	b.do("cancel the prompt", chromedp.Click(chromedp.CSS("#token-cancel")))
	b.waitFor("the prompt to close", `!document.querySelector("#token-dialog").open`)
	if v := b.text(); !strings.Contains(v, "unauthenticated") {
		t.Errorf("after cancel the page shows:\n%s\nwant the server's unauthenticated error", v)
	}
	b.do("ask again", chromedp.Click(chromedp.CSS(".token-needed button")))
	b.waitFor("the prompt again", `document.querySelector("#token-dialog").open`)
	b.do("enter a wrong token",
		chromedp.SetValue(chromedp.CSS("#token-input"), "wrong"),
		chromedp.Click(chromedp.CSS(`#token-dialog button[value="save"]`)))
	b.waitFor("the prompt again after a wrong token", `document.querySelector("#token-dialog").open`)
	if msg := b.text(); !strings.Contains(msg, "permission_denied") {
		t.Errorf("after a wrong token the page shows:\n%s\nwant the server's permission_denied", msg)
	}
	b.do("enter the session token",
		chromedp.SetValue(chromedp.CSS("#token-input"), state.Token()),
		chromedp.Click(chromedp.CSS(`#token-dialog button[value="save"]`)))
	b.waitFor("level's value", cellText(`#variables tr[data-name="level"] td.value`)+` === "3"`)
	if _, err := state.Set(ctx, "level", int64(4)); err != nil {
		t.Fatal(err)
	}
	b.waitFor("level's live value", cellText(`#variables tr[data-name="level"] td.value`)+` === "4"`)
	if v := b.waitFor("the token kept in sessionStorage", `sessionStorage.getItem("varbridge.token.session:secured") ?? ""`); v != state.Token() {
		t.Errorf("sessionStorage holds %q for the session", v)
	}
}
