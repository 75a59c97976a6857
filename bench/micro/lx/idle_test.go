package lx

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestIdleHeap(t *testing.T) {
	srv := servertest.Start(t, store.Options{MaxWatches: 1 << 20})
	ctx := context.Background()
	var ccs []*grpc.ClientConn
	var cs []pb.BridgeServiceClient
	for range 10 {
		cc, _ := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		ccs = append(ccs, cc)
		cs = append(cs, pb.NewBridgeServiceClient(cc))
	}
	_, err := cs[0].InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"})
	if err != nil { t.Fatal(err) }
	cs[0].RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 1}}})
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const n = 10000
	var sts []grpc.ServerStreamingClient[pb.VariableUpdate]
	for i := range n {
		st, err := cs[i%10].WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"x"}, IncludeInitialValues: true})
		if err != nil { t.Fatal(err) }
		if _, err := st.Recv(); err != nil { t.Fatal(err) }
		sts = append(sts, st)
	}
	runtime.GC(); runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("per watch (client+server in process): heap %d B, stack %d B, goroutines %d",
		(m1.HeapAlloc-m0.HeapAlloc)/n, (m1.StackInuse-m0.StackInuse)/n, runtime.NumGoroutine())
	f, _ := os.Create("/tmp/idle.heap")
	pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	_ = sts
}
