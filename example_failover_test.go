package varbridge_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/varbridge/varbridge"
)

// Several servers that share their sessions are one comma-separated target
// (or a DNS name with a record per server, "dns:///varbridge.internal:50051").
// Calls go to the servers that are up; here the second address has no
// server at all, and nothing notices.
func ExampleNewBridgedState_severalServers() {
	addr, stop := startServer()
	defer stop()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	down := lis.Addr().String()
	_ = lis.Close() // a server that is down

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state, err := varbridge.NewBridgedState(ctx, addr+","+down, varbridge.WithSessionID("pipeline"))
	if err != nil {
		panic(err)
	}
	defer state.Close()
	if _, err := state.Register(ctx, "epoch", varbridge.TypeInteger, int64(0)); err != nil {
		panic(err)
	}
	if _, err := state.Set(ctx, "epoch", int64(3)); err != nil {
		panic(err)
	}
	v, err := state.Get(ctx, "epoch")
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Value)
	// Output: 3
}
