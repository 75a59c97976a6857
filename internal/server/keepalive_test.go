package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge/internal/cutproxy"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// A client that vanishes without closing its connection has its watch
// observer removed by keepalive within keepalive time + timeout.
func TestKeepaliveRemovesBlackholedWatcher(t *testing.T) {
	const kaTime, kaTimeout = time.Second, 500 * time.Millisecond // grpc-go's minimum time is 1s
	m := metrics.New()
	srv := servertest.Start(t, store.Options{}, server.WithKeepalive(kaTime, kaTimeout), server.WithMetrics(m))
	sc := startMetrics(t, m)
	// Blackhole keeps both sockets open but forwards nothing: to the server
	// the client has vanished without closing, like a peer whose machine
	// lost power.
	proxy, err := cutproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	conn, err := grpc.NewClient(proxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(1)}); err != nil {
		t.Fatal(err)
	}
	// Two watches: a busy one (heartbeats every 20 ms keep the server writing
	// into the hole) and a quiet one.
	for _, hb := range []int64{20, 3_600_000} {
		ws, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", IncludeInitialValues: true, HeartbeatIntervalMs: hb})
		if err != nil {
			t.Fatal(err)
		}
		recvUpdates(t, ws, 1)
	}
	if n := srv.Store.WatchCount(); n != 2 {
		t.Fatalf("%d watches before the blackhole, want 2", n)
	}
	// Writes keep flowing into the hole while keepalive works.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := int64(2); ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_, _ = srv.Store.Set("s", []store.Write{{Identifier: "x", Value: intVal(i)}}, nil, "writer")
		}
	}()

	t0 := time.Now()
	proxy.Blackhole()
	for srv.Store.WatchCount() > 0 {
		if time.Since(t0) > 10*(kaTime+kaTimeout) {
			t.Fatalf("watches still registered %v after the client vanished", time.Since(t0))
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	t.Logf("observers removed %v after the blackhole (keepalive time %v + timeout %v)", elapsed.Round(time.Millisecond), kaTime, kaTimeout)
	if limit := kaTime + kaTimeout + 500*time.Millisecond; elapsed > limit {
		t.Fatalf("observers removed after %v; want within keepalive time+timeout (+0.5 s slack) = %v", elapsed, limit)
	}
	sc.await(map[string]float64{closedBy(metrics.ClosedCancelled): 2, "varbridge_watches_open": 0})
}
