package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/store"
)

func TestRecoverTurnsPanicIntoInternal(t *testing.T) {
	st := store.New(store.Options{})
	defer st.Close()
	var logs bytes.Buffer
	m := metrics.New()
	s := New(st, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), WithMetrics(m))

	_, err := s.recoverUnary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/varbridge.v1.BridgeService/GetVariable"},
		func(context.Context, any) (any, error) { panic("boom") })
	if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), PanicMessage) || !strings.Contains(st.Message(), "GetVariable") {
		t.Fatalf("unary panic: %v %q", st.Code(), st.Message())
	}
	err = s.recoverStream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/varbridge.v1.BridgeService/WatchVariables"},
		func(any, grpc.ServerStream) error { var m map[string]int; m["x"] = 1; return nil })
	if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "WatchVariables") {
		t.Fatalf("stream panic: %v %q", st.Code(), st.Message())
	}
	if got := gathered(t, m, metrics.PanicsRecovered); got != 2 {
		t.Fatalf("%s = %v, want 2", metrics.PanicsRecovered, got)
	}
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), "assignment to entry in nil map") || !strings.Contains(logs.String(), "stack=") {
		t.Fatalf("log lacks the panics and their stacks:\n%s", logs.String())
	}
	// Calls that do not panic pass through untouched.
	resp, err := s.recoverUnary(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return "ok", nil })
	if resp != "ok" || err != nil {
		t.Fatalf("no panic: %v, %v", resp, err)
	}
}

// gathered reads a counter without labels from m's registry.
func gathered(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
