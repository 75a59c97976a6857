package varbridge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/backend"
	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// fastRedial makes grpc-go retry a failed connect within milliseconds
// rather than its default of 1 s and more, so that tests that cut
// connections all the time do not wait on it.
var fastRedial = WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           grpcbackoff.Config{BaseDelay: 2 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 50 * time.Millisecond},
	MinConnectTimeout: 2 * time.Second,
}))

// newProxy is a cutting proxy in front of target. Given a cluster's server
// list (cluster mode), it stands in front of the first server only: its
// watches then see through the cuts the writes made through the second.
func newProxy(t testing.TB, target string) *cutproxy.Proxy {
	t.Helper()
	target, _, _ = strings.Cut(target, ",")
	p, err := cutproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// change is one variable's part of a committed write.
type change struct {
	rev int64
	id  string
}

// A proxy cuts the BridgedState's connection over and over while more than
// 10,000 updates flow (2,500 in cluster mode), single writes and batches mixed: the watcher gets
// every change exactly once, in commit order, each batch whole.
func TestBridgedCutConnectionsExactlyOnce(t *testing.T) {
	for _, rpc := range []string{"Watch", "WatchVariableBatches", "WatchVariables"} {
		t.Run(rpc, func(t *testing.T) {
			srv := StartServer(t, store.Options{HistoryLimit: 100_000})
			proxy := newProxy(t, srv.Addr)
			b := DialBridged(t, proxy.Addr(), fastRedial)
			ids := map[string]string{}
			var names []string
			var ref WatchRef
			for i := range 8 {
				n := fmt.Sprintf("x%d", i)
				names = append(names, n)
				ids[n] = MustRegister(t, b, n, TypeInteger, 0).ID
			}

			var got []change // only the watch goroutine appends until the end
			var resyncs atomic.Int64
			ref = MustWatch(t, b, context.Background(), names, func(ident string, _, _ any, m UpdateMeta) {
				if m.Resync {
					resyncs.Add(1)
				}
				got = append(got, change{m.Revision, m.VariableID})
			}, WithBackoff(time.Millisecond, 10*time.Millisecond), WithMaxFailures(1000), WithHeartbeat(20*time.Millisecond),
				WithBatchedStream(rpc == "WatchVariableBatches"), WithOwnStream(rpc != "Watch"))

			stopCuts := make(chan struct{})
			cutterDone := make(chan struct{})
			go func() { // cuts at random moments
				defer close(cutterDone)
				proxy.CutAtRandom(stopCuts, 4*time.Millisecond, func() bool { return true })
			}()

			var want []change
			counter := int64(0)
			sess := b.SessionID()
			for n := Size(10_500, 2_500); len(want) < n; {
				var ws []store.Write
				if rand.IntN(3) == 0 {
					for _, k := range rand.Perm(len(names))[:2+rand.IntN(4)] {
						counter++
						ws = append(ws, store.Write{Identifier: names[k], Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: counter}}})
					}
				} else {
					counter++
					ws = []store.Write{{Identifier: names[rand.IntN(len(names))], Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: counter}}}}
				}
				// The members of a batch reach watchers ordered by name.
				slices.SortFunc(ws, func(a, b store.Write) int { return strings.Compare(a.Identifier, b.Identifier) })
				res, err := srv.Store.Set(sess, ws, nil, "writer")
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range ws {
					want = append(want, change{res.Revision, ids[w.Identifier]})
				}
				if len(want)%100 < len(ws) {
					time.Sleep(time.Millisecond) // let the stream flow while the writes go on
				}
			}
			last := want[len(want)-1].rev
			deadline := time.Now().Add(20 * time.Second)
			for WatchInfoOf(t, b, ref).LastRevision < last {
				if time.Now().After(deadline) {
					t.Fatalf("the watch reached revision %d of %d: %+v; %d cuts", WatchInfoOf(t, b, ref).LastRevision, last, WatchInfoOf(t, b, ref), proxy.Cuts())
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(stopCuts)
			<-cutterDone
			wi := WatchInfoOf(t, b, ref)
			if err := b.UnwatchVariables(ref); err != nil {
				t.Fatal(err)
			}
			if resyncs.Load() != 0 {
				t.Fatalf("%d resyncs with history large enough", resyncs.Load())
			}
			if !slices.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("delivered %d changes, want %d; first difference at %d: got %v, want %v",
					len(got), len(want), i, got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
			}
			if proxy.Cuts() < 10 || wi.Reconnects < 10 {
				t.Fatalf("only %d cuts and %d reconnects", proxy.Cuts(), wi.Reconnects)
			}
			t.Logf("%d changes, %d cuts, %d reconnects, %d errors, %d duplicates skipped",
				len(got), proxy.Cuts(), wi.Reconnects, wi.Errors, wi.DuplicatesSkipped)
			Eventually(t, "the server's observers to go", func() bool { return srv.WatchCount() == 0 })
		})
	}
}

// A consumer whose connection stays down gives up after N consecutive
// failures, says why, calls the error handler and shows as not alive.
func TestBridgedGivesUpAfterMaxFailures(t *testing.T) {
	srv := StartServer(t, store.Options{})
	proxy := newProxy(t, srv.Addr)
	b := DialBridged(t, proxy.Addr(), fastRedial)
	MustRegister(t, b, "v", TypeInteger, 0)
	errc := make(chan error, 1)
	ref := MustWatch(t, b, context.Background(), []string{"v"}, func(string, any, any, UpdateMeta) {},
		WithMaxFailures(3), WithBackoff(time.Millisecond, 5*time.Millisecond), WithErrorHandler(func(err error) { errc <- err }))
	proxy.SetRefuse(true)
	proxy.Cut()
	var err error
	select {
	case err = <-errc:
	case <-time.After(WaitTimeout):
		t.Fatal("the consumer did not give up")
	}
	var gu *GaveUpError
	if !errors.Is(err, ErrGaveUp) || !errors.Is(err, ErrUnavailable) || !errors.As(err, &gu) || gu.Attempts != 3 ||
		!regexp.MustCompile(`^gave up after 3 attempts over \d+\.\ds: last error: unavailable: `).MatchString(err.Error()) {
		t.Fatalf("error = %v", err)
	}
	wi := WatchInfoOf(t, b, ref)
	if wi.Alive || !strings.Contains(wi.Reason, "gave up") || wi.Errors != 3 || !errors.Is(wi.LastError, ErrGaveUp) {
		t.Fatalf("watch info %+v", wi)
	}
	Eventually(t, "the server's observer to go", func() bool { return srv.WatchCount() == 0 })
}

// A watch that loses its connection for a while resumes without loss once
// it is back, and a received message resets the failure count.
func TestBridgedResumesAfterOutage(t *testing.T) {
	srv := StartServer(t, store.Options{})
	proxy := newProxy(t, srv.Addr)
	b := DialBridged(t, proxy.Addr(), fastRedial)
	MustRegister(t, b, "v", TypeInteger, 0)
	set := func(v int64) { // through the server's store, while the watch may be cut off
		t.Helper()
		w := store.Write{Identifier: "v", Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: v}}}
		if _, err := srv.Store.Set(b.SessionID(), []store.Write{w}, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	rec := NewRecorder()
	ref := MustWatch(t, b, context.Background(), []string{"v"}, rec.Watch,
		WithMaxFailures(1000), WithBackoff(time.Millisecond, 5*time.Millisecond))
	for round := range 3 {
		proxy.SetRefuse(true)
		proxy.Cut()
		before := WatchInfoOf(t, b, ref).Errors
		Eventually(t, "failed reconnects", func() bool { return WatchInfoOf(t, b, ref).Errors >= before+2 })
		base := int64(round * 10)
		for i := int64(1); i <= 5; i++ { // written while the watch is cut off
			set(base + i)
		}
		proxy.SetRefuse(false)
		for i := int64(1); i <= 5; i++ {
			if u := rec.Next(t); u.New != base+i || u.Old != base+i-1 {
				t.Fatalf("round %d: got %+v, want %d", round, u, base+i)
			}
		}
		set(base + 10)
		if u := rec.Next(t); u.New != base+10 {
			t.Fatalf("round %d: after resume %+v", round, u)
		}
	}
	if wi := WatchInfoOf(t, b, ref); !wi.Alive || wi.Reconnects < 3 {
		t.Fatalf("after outages %+v", wi)
	}
}

// Resume bookkeeping, update by update: a cut in the middle of a batch
// resumes at that revision and skips the members already delivered.
func TestConsumerResumesMidBatch(t *testing.T) {
	var got []string
	w := newWatch([]string{"a", "b", "c"}, func(id string, _, _ any, m UpdateMeta) {
		got = append(got, fmt.Sprintf("%d%s", m.Revision, id))
	}, newWatchConfig(nil), Quiet, backend.Start{IdentOf: func(id string) (string, bool) { return id, true }, StartsAfter: 4})
	c := newStreamConsumer(streamConn{session: "s"}, w, nil, 0, "")
	up := func(rev int64, id string, last bool) *pb.VariableUpdate {
		return &pb.VariableUpdate{VariableId: id, UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE,
			Revision: rev, LastInRevision: last, Variable: &pb.Variable{Id: id, Name: id}}
	}
	c.process(up(5, "a", true))
	c.process(up(6, "a", false))
	c.process(up(6, "b", false))
	// Cut: the next stream (open arms the skip set) resumes at 6.
	c.armSkip()
	if r := c.request(); r.StartRevision != 6 {
		t.Fatalf("resume at %d, want 6", r.StartRevision)
	}
	c.process(up(6, "a", false)) // sent again: skipped
	c.process(up(6, "b", false))
	c.process(up(6, "c", true))
	c.process(heartbeatUpdate(9))
	if r := c.request(); r.StartRevision != 10 {
		t.Fatalf("resume at %d after a heartbeat, want 10", r.StartRevision)
	}
	c.process(up(8, "a", true)) // older than the resume point: skipped
	c.process(up(10, "b", true))
	want := []string{"5a", "6a", "6b", "6c", "10b"}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if w.duplicates.Load() != 3 || w.lastRev.Load() != 10 {
		t.Fatalf("duplicates %d, last revision %d", w.duplicates.Load(), w.lastRev.Load())
	}
	// A deleted variable leaves the resume request.
	del := up(11, "b", true)
	del.UpdateType = pb.UpdateType_UPDATE_TYPE_DELETED
	c.process(del)
	if r := c.request(); !slices.Equal(r.VariableIdentifiers, []string{"a", "c"}) || r.StartRevision != 12 {
		t.Fatalf("request after a delete %v", r)
	}
}

func TestBackoff(t *testing.T) {
	for f, want := range map[int]time.Duration{2: time.Second, 3: 2 * time.Second, 4: 4 * time.Second, 7: 30 * time.Second, 40: 30 * time.Second} {
		d := backoff(time.Second, 30*time.Second, f)
		if d < want*9/10 || d > want*11/10 {
			t.Errorf("backoff after %d failures = %v, want %v +-10%%", f, d, want)
		}
	}
	if d := backoff(time.Second, 30*time.Second, 1); d < 0 || d > 100*time.Millisecond {
		t.Errorf("first reconnect after %v, want at most 10%% of the base", d)
	}
}

// Watches share a target's connections, and the pool adds one past the
// streams-per-connection limit and drops it when its streams end.
func TestBridgedConnectionPool(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr, WithStreamsPerConn(2))
	b2 := DialBridged(t, srv.Addr, WithSessionID(b.SessionID()))
	if b.rb.pool != b2.rb.pool {
		t.Fatal("two states on one target do not share the pool")
	}
	MustRegister(t, b, "v", TypeInteger, 0)
	var refs []WatchRef
	var n atomic.Int64
	got := make(chan struct{}, 10)
	for range 5 {
		refs = append(refs, MustWatch(t, b, context.Background(), []string{"v"}, func(string, any, any, UpdateMeta) {
			n.Add(1)
			got <- struct{}{}
		}))
	}
	if c := b.rb.pool.connCount(); c != 3 {
		t.Fatalf("%d connections for 5 watches at 2 per connection, want 3", c)
	}
	if _, err := b2.Set(context.Background(), "v", 1); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		select {
		case <-got:
		case <-time.After(WaitTimeout):
			t.Fatalf("only %d of 5 watches got the update", n.Load())
		}
	}
	for _, r := range refs {
		if err := b.UnwatchVariables(r); err != nil {
			t.Fatal(err)
		}
	}
	if c := b.rb.pool.connCount(); c != 1 {
		t.Fatalf("%d connections after unwatching, want 1", c)
	}
	key := b.rb.pool.key
	_ = b.Close()
	if _, err := b2.Get(context.Background(), "v"); err != nil {
		t.Fatalf("the other state lost its connection: %v", err)
	}
	_ = b2.Close()
	pools.Lock()
	_, still := pools.m[key]
	pools.Unlock()
	if still {
		t.Fatal("the pool outlived its last state")
	}
	if _, err := b.Get(context.Background(), "v"); !errors.Is(err, ErrClosed) {
		t.Fatalf("get on a closed state: %v", err)
	}
}

// A thousand concurrent watches on one BridgedState all get a change, and
// closing the state leaves no observer on the server.
func TestBridgedThousandWatches(t *testing.T) {
	srv := StartServer(t, store.Options{})
	b := DialBridged(t, srv.Addr)
	MustRegister(t, b, "v", TypeInteger, 0)
	const n = 1000
	var wg sync.WaitGroup
	wg.Add(n)
	var got atomic.Int64
	sem := make(chan struct{}, 32)
	var setup sync.WaitGroup
	for range n {
		setup.Add(1)
		sem <- struct{}{}
		go func() {
			defer setup.Done()
			defer func() { <-sem }()
			MustWatch(t, b, context.Background(), []string{"v"}, func(_ string, _, new any, _ UpdateMeta) {
				if new == int64(1) {
					got.Add(1)
					wg.Done()
				}
			})
		}()
	}
	setup.Wait()
	if c := srv.WatchCount(); c != n {
		t.Fatalf("server has %d watches, want %d", c, n)
	}
	if c := b.rb.pool.connCount(); c != n/DefaultStreamsPerConn {
		t.Fatalf("%d connections, want %d", c, n/DefaultStreamsPerConn)
	}
	if _, err := b.Set(context.Background(), "v", 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(WaitTimeout):
		t.Fatalf("%d of %d watches got the update", got.Load(), n)
	}
	_ = b.Close()
	Eventually(t, "the server's observers to go", func() bool { return srv.WatchCount() == 0 })
}

// With auth on, the creator's state carries the issued token on every call,
// watches included; another client joins with it and is refused without it.
func TestBridgedAuth(t *testing.T) {
	srv := StartServer(t, store.Options{}, server.WithAuth())
	owner := DialBridged(t, srv.Addr)
	if owner.Token() == "" {
		t.Fatal("no session token from a server with auth")
	}
	MustRegister(t, owner, "v", TypeInteger, 0)
	if _, err := NewBridgedState(context.Background(), srv.Addr, WithSessionID(owner.SessionID())); !errors.Is(err, ErrAlreadyExists) ||
		!errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("joining without the token: %v", err)
	}
	other := DialBridged(t, srv.Addr, WithSessionID(owner.SessionID()), WithToken(owner.Token()))
	rec := NewRecorder()
	MustWatch(t, other, context.Background(), []string{"v"}, rec.Watch)
	if _, err := owner.Set(context.Background(), "v", 1); err != nil {
		t.Fatal(err)
	}
	if u := rec.Next(t); u.New != int64(1) {
		t.Fatalf("update %+v", u)
	}
	// A state that sends a wrong token for the session is refused, watches too.
	forged := &remote{session: owner.SessionID(), token: "forged", pool: owner.rb.pool}
	bad := &BridgedState{provider: provider{be: forged, session: owner.SessionID(), log: Quiet}, rb: forged}
	if _, err := bad.Get(context.Background(), "v"); !errors.Is(err, ErrPermissionDenied) && !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("forged token: %v", err)
	}
	if _, err := bad.WatchVariables(context.Background(), []string{"v"}, rec.Watch); !errors.Is(err, ErrPermissionDenied) && !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("watch with a forged token: %v", err)
	}
}

// Issue 10 item 8: BridgedState maps errors from the ErrorInfo reason the
// server attaches (domain varbridge.dev), then from the code; the message
// text decides nothing. The statuses are built here as the server sends
// them, with messages that would mislead a text match.
func TestErrorsFromErrorInfo(t *testing.T) {
	withInfo := func(c codes.Code, msg, reason string, md map[string]string) error {
		st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: "varbridge.dev", Reason: reason, Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	closed := fromStatus(withInfo(codes.NotFound, `session "s" ended because it expired`, "SESSION_CLOSED",
		map[string]string{"session_id": "s", "cause": "expired"}))
	if !errors.Is(closed, ErrSessionClosed) || errors.Is(closed, ErrSessionNotFound) {
		t.Errorf("SESSION_CLOSED: %v", closed)
	}
	notFound := fromStatus(withInfo(codes.NotFound, "session closed? no: not found", "SESSION_NOT_FOUND", map[string]string{"session_id": "s"}))
	if !errors.Is(notFound, ErrSessionNotFound) || errors.Is(notFound, ErrSessionClosed) {
		t.Errorf("SESSION_NOT_FOUND: %v", notFound)
	}
	var nf *NotFoundError
	err := fromStatus(withInfo(codes.NotFound, "no such things", "VARIABLE_NOT_FOUND",
		map[string]string{"session_id": "s", "identifiers": "a, b\nc"}))
	if !errors.As(err, &nf) || nf.Session != "s" || !slices.Equal(nf.Identifiers, []string{"a, b", "c"}) {
		t.Errorf("VARIABLE_NOT_FOUND: %v %+v", err, nf)
	}
	var ce *ConstraintError
	err = fromStatus(withInfo(codes.InvalidArgument, `variable "decoy": bad`, "CONSTRAINT_VIOLATION",
		map[string]string{"variable": "t", "constraint": "max", "value": "3"}))
	if !errors.As(err, &ce) || ce.Variable != "t" || ce.Constraint != "max" || !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("CONSTRAINT_VIOLATION: %v %+v", err, ce)
	}
	var vc *VersionConflictError
	err = fromStatus(withInfo(codes.FailedPrecondition, "conflict", "VERSION_CONFLICT",
		map[string]string{"variable": "v", "expected_version": "4", "actual_version": "9"}))
	if !errors.As(err, &vc) || vc.Variable != "v" || vc.Expected != 4 || vc.Actual != 9 || !errors.Is(err, ErrVersionConflict) {
		t.Errorf("VERSION_CONFLICT: %v %+v", err, vc)
	}
	var oor *RevisionOutOfRangeError
	err = fromStatus(withInfo(codes.OutOfRange, "ahead", "REVISION_OUT_OF_RANGE",
		map[string]string{"session_id": "s", "start_revision": "23", "session_revision": "6", "incarnation": "0123456789abcdef"}))
	if !errors.As(err, &oor) || oor.StartRevision != 23 || oor.SessionRevision != 6 || oor.Incarnation != "0123456789abcdef" ||
		!errors.Is(err, ErrOutOfRange) {
		t.Errorf("REVISION_OUT_OF_RANGE: %v %+v", err, oor)
	}
	var le *LimitError
	err = fromStatus(withInfo(codes.ResourceExhausted, "too costly", "FILTER_TOO_COSTLY", map[string]string{"limit": "where_cost"}))
	if !errors.As(err, &le) || le.Limit != "where_cost" || !errors.Is(err, ErrLimit) {
		t.Errorf("FILTER_TOO_COSTLY: %v", err)
	}
	if err := fromStatus(withInfo(codes.Unauthenticated, "x", "TOKEN_REQUIRED", nil)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("TOKEN_REQUIRED: %v", err)
	}
	if err := fromStatus(withInfo(codes.PermissionDenied, "x", "TOKEN_INVALID", nil)); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("TOKEN_INVALID: %v", err)
	}
	// The session exists and joining it needs its token: both kinds match.
	joined := fromStatus(withInfo(codes.AlreadyExists, "x", "TOKEN_REQUIRED", map[string]string{"session_id": "s"}))
	if !errors.Is(joined, ErrUnauthenticated) || !errors.Is(joined, ErrAlreadyExists) {
		t.Errorf("ALREADY_EXISTS with TOKEN_REQUIRED: %v", joined)
	}
	// Without varbridge's ErrorInfo (another domain, or none): the code.
	st, _ := status.New(codes.NotFound, "session closed").WithDetails(&errdetails.ErrorInfo{Domain: "example.com", Reason: "SESSION_CLOSED"})
	if err := fromStatus(st.Err()); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("NOT_FOUND without varbridge's ErrorInfo: %v", err)
	}
	if err := fromStatus(status.Error(codes.OutOfRange, "x")); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("OUT_OF_RANGE without details: %v", err)
	}
	if err := fromStatus(status.Error(codes.Unavailable, "x")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("UNAVAILABLE: %v", err)
	}
}

// Issue 10 item 8: with the defaults a watch gives up after 10 consecutive
// failures, having waited backoff(1) .. backoff(9): about 121 s (1 s base
// doubling to the 30 s cap, +-10 %), the budget the Python client shares.
func TestDefaultGiveUpBudget(t *testing.T) {
	cfg := newWatchConfig(nil)
	if cfg.maxFailures != 10 || cfg.backoffBase != time.Second || cfg.backoffCap != 30*time.Second {
		t.Fatalf("defaults %d, %v, %v", cfg.maxFailures, cfg.backoffBase, cfg.backoffCap)
	}
	var sum time.Duration
	for range 1000 {
		var total time.Duration
		for n := 1; n < cfg.maxFailures; n++ {
			total += backoff(cfg.backoffBase, cfg.backoffCap, n)
		}
		if total < 108*time.Second || total > 134*time.Second {
			t.Fatalf("a give-up after %v", total)
		}
		sum += total
	}
	if mean := sum / 1000; mean < 119*time.Second || mean > 123*time.Second {
		t.Fatalf("mean time to give up %v, want about 121 s", mean)
	}
}
