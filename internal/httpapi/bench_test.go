package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BenchmarkHTTPJSONSet: SetVariable as Connect JSON over one keep-alive
// HTTP/1.1 connection, one call at a time (curl's shape, without curl).
func BenchmarkHTTPJSONSet(b *testing.B) {
	ts := start(b, httpapi.Options{})
	ts.newSession(b, "s1")
	url := ts.url + "/varbridge.v1.BridgeService/SetVariable"
	b.ReportAllocs()
	b.ResetTimer()
	begin := time.Now()
	for i := range b.N {
		body := fmt.Appendf(nil, `{"sessionId":"s1","variableIdentifier":"x","value":{"floatValue":%d}}`, i+1)
		resp, err := ts.client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("HTTP %d", resp.StatusCode)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "sets/s")
}

// BenchmarkSSESetToWatcher: from a write in the store to its event read
// by an HTTP client from the SSE watch; p50 and p99 of the latency.
func BenchmarkSSESetToWatcher(b *testing.B) {
	ts := start(b, httpapi.Options{})
	ts.newSession(b, "s1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, code, body := ts.openSSE(b, ctx, "/v1/sessions/s1/watch?var=x", nil)
	if s == nil {
		b.Fatal(code, body)
	}
	defer s.close()
	watching(b, s)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := ts.store.Set("s1", []store.Write{write("x", float64(i+1))}, nil, "bench"); err != nil {
			b.Fatal(err)
		}
		if ev := s.mustNext(b); ev.Name != "message" {
			b.Fatalf("event %q", ev.Name)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
}

func write(id string, f float64) store.Write {
	return store.Write{Identifier: id, Value: &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}}}
}
