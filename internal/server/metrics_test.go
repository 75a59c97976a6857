package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// scraper reads /metrics over loopback.
type scraper struct {
	t   *testing.T
	url string
}

func startMetrics(t *testing.T, m *metrics.Metrics) *scraper {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := m.NewHTTPServer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(lis)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
		http.DefaultClient.CloseIdleConnections()
	})
	return &scraper{t: t, url: "http://" + lis.Addr().String() + "/metrics"}
}

// scrape returns every series as printed ("name{a="x",b="y"}") -> value.
func (s *scraper) scrape() map[string]float64 {
	s.t.Helper()
	resp, err := http.Get(s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			s.t.Fatalf("bad metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// await scrapes until every wanted series has its value.
func (s *scraper) await(want map[string]float64) map[string]float64 {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.scrape()
		var diff []string
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				diff = append(diff, fmt.Sprintf("%s = %v (present %v), want %v", k, g, ok, v))
			}
		}
		if len(diff) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("metrics never matched:\n  %s", strings.Join(diff, "\n  "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func handled(method, code string) string {
	typ := "unary"
	if strings.HasPrefix(method, "Watch") {
		typ = "server_stream"
	}
	return fmt.Sprintf(`grpc_server_handled_total{grpc_code=%q,grpc_method=%q,grpc_service="varbridge.v1.BridgeService",grpc_type=%q}`, code, method, typ)
}

func delivered(typ string) string {
	return fmt.Sprintf(`varbridge_updates_delivered_total{update_type=%q}`, typ)
}

func closedBy(reason string) string {
	return fmt.Sprintf(`varbridge_watches_closed_total{reason=%q}`, reason)
}

func TestMetricsScrapeCountsMove(t *testing.T) {
	m := metrics.New()
	srv := servertest.Start(t, store.Options{HistoryLimit: 4}, server.WithMetrics(m))
	sc := startMetrics(t, m)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first := sc.await(map[string]float64{
		"varbridge_sessions_open": 0, "varbridge_watches_open": 0, "varbridge_panics_recovered_total": 0,
		handled("SetVariable", "OK"): 0,
	})
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_memstats_heap_alloc_bytes"} {
		if _, ok := first[name]; !ok {
			t.Errorf("no %s: the Go runtime and process collectors are missing", name)
		}
	}

	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*pb.RegisterVariableRequest{
		{SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(0)},
		{SessionId: "s", Name: "y", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("a")},
	} {
		if _, err := c.RegisterVariable(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	const quiet = 3_600_000 // no heartbeats during the test
	w1ctx, cancelW1 := context.WithCancel(ctx)
	defer cancelW1()
	w1, err := c.WatchVariables(w1ctx, &pb.WatchVariablesRequest{SessionId: "s", IncludeInitialValues: true, HeartbeatIntervalMs: quiet})
	if err != nil {
		t.Fatal(err)
	}
	recvUpdates(t, w1, 2)
	sc.await(map[string]float64{
		"varbridge_sessions_open": 1, "varbridge_watches_open": 1, "varbridge_watches_opened_total": 1,
		delivered("initial_value"): 2,
	})

	for i := int64(1); i <= 3; i++ {
		if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(i)}); err != nil {
			t.Fatal(err)
		}
	}
	recvUpdates(t, w1, 3)
	sc.await(map[string]float64{delivered("value_change"): 3, handled("SetVariable", "OK"): 3})

	// A where filter that fails on a string lets the update through and counts.
	w2, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"y"}, Where: "new > 5", HeartbeatIntervalMs: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Header(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "y", Value: str("b")}); err != nil {
		t.Fatal(err)
	}
	recvUpdates(t, w2, 1)
	recvUpdates(t, w1, 1)
	sc.await(map[string]float64{"varbridge_watch_filter_errors_total": 1, delivered("value_change"): 5, "varbridge_watches_open": 2})

	// Resuming from a revision history no longer holds gets RESYNC.
	for i := int64(10); i < 20; i++ {
		if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(i)}); err != nil {
			t.Fatal(err)
		}
	}
	recvUpdates(t, w1, 10)
	w3, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 1, HeartbeatIntervalMs: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if u := recvUpdates(t, w3, 1)[0]; u.UpdateType != pb.UpdateType_UPDATE_TYPE_RESYNC {
		t.Fatalf("resume from 1 got %v, want RESYNC", u.UpdateType)
	}
	sc.await(map[string]float64{"varbridge_watch_resyncs_total": 1, "varbridge_watches_open": 3, "varbridge_watches_opened_total": 3})

	// A failed call is counted with its code.
	_, err = c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}

	// Watches close by reason: one cancelled, two ended with their session.
	cancelW1()
	sc.await(map[string]float64{closedBy(metrics.ClosedCancelled): 1, "varbridge_watches_open": 2})
	if _, err := c.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []grpc.ServerStreamingClient[pb.VariableUpdate]{w2, w3} {
		for {
			if _, err := w.Recv(); err != nil {
				break
			}
		}
	}
	sc.await(map[string]float64{
		closedBy(metrics.ClosedSessionEnded): 2, closedBy(metrics.ClosedCancelled): 1, closedBy(metrics.ClosedSendFailed): 0,
		"varbridge_watches_open": 0, "varbridge_sessions_open": 0, "varbridge_watches_opened_total": 3,
		handled("GetVariable", "NotFound"): 1, handled("RegisterVariable", "OK"): 2, handled("WatchVariables", "Canceled"): 1,
		handled("WatchVariables", "NotFound"): 2, "varbridge_panics_recovered_total": 0,
	})
}

// A watcher that stops reading shows in varbridge_watch_sends_in_flight
// until it goes away.
func TestMetricsStalledWatcherInFlight(t *testing.T) {
	m := metrics.New()
	srv := servertest.Start(t, store.Options{HistoryLimit: 100}, server.WithMetrics(m))
	sc := startMetrics(t, m)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 16<<10)
	if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "blob", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str(big)}); err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ws, err := c.WatchVariables(wctx, &pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: 3_600_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Header(); err != nil {
		t.Fatal(err)
	}
	// Never read: writes fill the flow-control windows and the sender blocks.
	stalled := false
	for i := 0; i < 5000 && !stalled; i++ {
		v := fmt.Sprintf("%s%08d", big[:len(big)-8], i)
		if _, err := srv.Store.Set("s", []store.Write{{Identifier: "blob", Value: str(v)}}, nil, "w"); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(10 * time.Millisecond)
			stalled = sc.scrape()[metrics.WatchSending] == 1
		}
	}
	if !stalled {
		t.Fatalf("%s never showed the stalled watcher", metrics.WatchSending)
	}
	stopWatch()
	sc.await(map[string]float64{metrics.WatchSending: 0, closedBy(metrics.ClosedCancelled): 1, "varbridge_watches_open": 0})
}
