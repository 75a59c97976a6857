package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BenchmarkCommitToWatcher measures a write committed in the server's store
// reaching a gRPC watcher on loopback, one write at a time, and reports p50
// and p99 in microseconds.
func BenchmarkCommitToWatcher(b *testing.B) {
	srv := servertest.Start(b, store.Options{})
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := srv.Store.CreateSession("s", 0, nil); err != nil {
		b.Fatal(err)
	}
	if _, _, err := srv.Store.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); err != nil {
		b.Fatal(err)
	}
	s, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"x"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Header(); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := srv.Store.Set("s", []store.Write{{Identifier: "x", Value: intVal(int64(i + 1))}}, nil, "bench"); err != nil {
			b.Fatal(err)
		}
		for {
			u, err := s.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if u.UpdateType == pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
