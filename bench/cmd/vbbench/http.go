package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/varbridge/varbridge/internal/sse"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// benchHTTP measures the HTTP face (issue 13): a Go writer's SetVariable to
// a watcher reading the SSE watch, beside the raw gRPC watcher in the same
// run on the same server; and Connect JSON SetVariable calls per second.
func benchHTTP(ctx context.Context, c *config, col *collector) error {
	srv, stopSrv, err := startServer(c, "http", "--http-listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer stopSrv()
	if srv.http == "" {
		return fmt.Errorf("the server announced no HTTP address (want a line \"http on URL\")")
	}
	n := c.latN + c.latWarm
	record := func(prefix string, ls latSamples, params map[string]any) {
		sp50, sp99, _ := latencyStats(withMissed(ls.send, c.latWarm, c.latN))
		col.add(prefix+"_p50_us", "us", sp50, params)
		col.add(prefix+"_p99_us", "us", sp99, params)
		col.add(prefix+"_missed", "updates", float64(ls.missed), params)
		fmt.Fprintf(os.Stderr, "   %-34s from send p50 %7.1f us  p99 %7.1f us | missed %d\n", prefix, sp50, sp99, ls.missed)
	}
	for r := range c.runs {
		// Interleaved: the SSE watcher and the gRPC one, each run.
		ls, err := sseLatency(ctx, srv.addr, srv.http, sessionName("http-sse"), n, c.rate)
		if err != nil {
			return fmt.Errorf("sse run %d: %w", r, err)
		}
		record("sse_set_to_watcher", ls, map[string]any{
			"rate_per_s": c.rate, "samples_per_run": c.latN,
			"client":    "Go net/http reading GET /v1/sessions/{s}/watch (text/event-stream, internal/sse); writer: generated grpc-go SetVariable on its own connection",
			"time_from": "writer's SetVariable start, CLOCK_MONOTONIC",
		})
		ls, err = grpcLatencyRaw(ctx, srv.addr, sessionName("http-grpc"), n, c.rate)
		if err != nil {
			return fmt.Errorf("grpc run %d: %w", r, err)
		}
		record("sse_run_grpc_set_to_watcher", ls, map[string]any{
			"rate_per_s": c.rate, "samples_per_run": c.latN,
			"client":    "as rawgrpc_set_to_go_watcher, in the same run and on the same server as sse_set_to_watcher",
			"time_from": "writer's SetVariable start, CLOCK_MONOTONIC",
		})
		rate, err := httpJSONSets(ctx, srv.addr, srv.http, sessionName("http-json"), 3*time.Second)
		if err != nil {
			return fmt.Errorf("http json run %d: %w", r, err)
		}
		col.add("http_json_set_per_s", "sets/s", rate, map[string]any{
			"how": "one Go net/http client, one call at a time on a kept-alive HTTP/1.1 connection: POST /varbridge.v1.BridgeService/SetVariable with a JSON body (Connect protocol), for 3 s",
		})
		fmt.Fprintf(os.Stderr, "   http_json_set              %10.0f sets/s\n", rate)
	}
	return nil
}

// sseLatency measures a raw gRPC SetVariable -> an SSE watcher of x.
func sseLatency(ctx context.Context, grpcAddr, base, session string, n, rate int) (latSamples, error) {
	var ls latSamples
	wcc, wc, err := dial(grpcAddr)
	if err != nil {
		return ls, err
	}
	defer wcc.Close()
	if err := newSession(ctx, wc, session, "x"); err != nil {
		return ls, err
	}
	defer func() { _, _ = wc.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: session}) }()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := base + "/v1/sessions/" + url.PathEscape(session) + "/watch?var=x&initial=true"
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, u, nil)
	if err != nil {
		return ls, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ls, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return ls, fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	events := sse.NewReader(resp.Body)
	type update struct {
		Update    string      `json:"update"`
		New       json.Number `json:"new"`
		Timestamp string      `json:"timestamp"`
	}
	next := func() (update, error) {
		for {
			ev, err := events.Next()
			if err != nil {
				return update{}, err
			}
			if ev.Name != "message" {
				continue // watching, heartbeat
			}
			var up update
			dec := json.NewDecoder(bytes.NewReader([]byte(ev.Data)))
			dec.UseNumber()
			if err := dec.Decode(&up); err != nil {
				return update{}, fmt.Errorf("event %q: %w", ev.Data, err)
			}
			return up, nil
		}
	}
	if _, err := next(); err != nil { // the initial value: the watch is live
		return ls, fmt.Errorf("initial value: %w", err)
	}
	ls.send = make([]int64, 0, n)
	ls.commit = make([]int64, 0, n)
	recvErr := make(chan error, 1)
	go func() {
		for {
			up, err := next()
			if err != nil {
				recvErr <- err
				return
			}
			now, wall := mono(), time.Now().UnixNano()
			if up.Update != "change" {
				continue
			}
			v, err := strconv.ParseInt(string(up.New), 10, 64)
			if err != nil {
				recvErr <- fmt.Errorf("value %q: %w", up.New, err)
				return
			}
			if v < 0 {
				recvErr <- nil
				return
			}
			ls.send = append(ls.send, now-v)
			if ts, err := time.Parse(time.RFC3339Nano, up.Timestamp); err == nil {
				ls.commit = append(ls.commit, wall-ts.UnixNano())
			}
		}
	}()
	if err := pacedWriter(ctx, n, rate, func(v int64) error {
		_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: session, VariableIdentifier: "x", Value: intValue(v)})
		return err
	}); err != nil {
		return ls, err
	}
	if err := awaitStop(recvErr, "SSE watcher"); err != nil {
		return ls, err
	}
	ls.missed = n - len(ls.send)
	return ls, nil
}

// httpJSONSets calls SetVariable as Connect JSON, one call at a time, for
// d, and returns the calls per second.
func httpJSONSets(ctx context.Context, grpcAddr, base, session string, d time.Duration) (float64, error) {
	wcc, wc, err := dial(grpcAddr)
	if err != nil {
		return 0, err
	}
	defer wcc.Close()
	if err := newSession(ctx, wc, session, "x"); err != nil {
		return 0, err
	}
	defer func() { _, _ = wc.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: session}) }()
	u := base + "/varbridge.v1.BridgeService/SetVariable"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	start := time.Now()
	calls := 0
	for time.Since(start) < d {
		body := fmt.Sprintf(`{"sessionId":%q,"variableIdentifier":"x","value":{"intValue":"%d"}}`, session, calls+1)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte(body)))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("POST %s: %s: %s", u, resp.Status, b)
		}
		calls++
	}
	return float64(calls) / time.Since(start).Seconds(), nil
}
