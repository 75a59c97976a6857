package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/varbridge/varbridge/internal/codec"
	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// floorServer is the least a gRPC server can do to carry a write to a
// watcher: SetVariable stamps the value and hands it over a channel to each
// WatchVariables handler, which sends it. No store, no history, no
// interceptors. It runs with varbridge's own server options (floorOptions:
// stream workers, codec, keepalive, receive limit), so the gap between the
// two is varbridge's work, not a different transport set-up. Its latency is
// the floor of the transport on this machine, measured by the same client as
// varbridge's.
type floorServer struct {
	pb.UnimplementedBridgeServiceServer
	mu      sync.Mutex
	watches map[chan *pb.VariableUpdate]struct{}
}

func (s *floorServer) InitializeSession(context.Context, *pb.InitializeSessionRequest) (*pb.InitializeSessionResponse, error) {
	return &pb.InitializeSessionResponse{}, nil
}

func (s *floorServer) RegisterVariable(context.Context, *pb.RegisterVariableRequest) (*pb.RegisterVariableResponse, error) {
	return &pb.RegisterVariableResponse{}, nil
}

func (s *floorServer) CleanupSession(context.Context, *pb.CleanupSessionRequest) (*pb.CleanupSessionResponse, error) {
	return &pb.CleanupSessionResponse{}, nil
}

func (s *floorServer) SetVariable(_ context.Context, req *pb.SetVariableRequest) (*pb.SetVariableResponse, error) {
	u := &pb.VariableUpdate{
		UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, Timestamp: timestamppb.Now(),
		Variable: &pb.Variable{Value: req.GetValue()}, LastInRevision: true,
	}
	s.mu.Lock()
	for ch := range s.watches {
		select {
		case ch <- u:
		default: // a watcher this far behind loses the value; the harness counts it as missed
		}
	}
	s.mu.Unlock()
	return &pb.SetVariableResponse{}, nil
}

func (s *floorServer) WatchVariables(_ *pb.WatchVariablesRequest, stream grpc.ServerStreamingServer[pb.VariableUpdate]) error {
	ch := make(chan *pb.VariableUpdate, 1024)
	s.mu.Lock()
	s.watches[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watches, ch)
		s.mu.Unlock()
	}()
	if err := stream.Send(&pb.VariableUpdate{UpdateType: pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE, LastInRevision: true}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case u := <-ch:
			if err := stream.Send(u); err != nil {
				return err
			}
		}
	}
}

// floorServe runs floorServer on a free loopback port until stdin closes.
func floorServe() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	g := grpc.NewServer(floorOptions()...)
	pb.RegisterBridgeServiceServer(g, &floorServer{watches: map[chan *pb.VariableUpdate]struct{}{}})
	go func() { _ = g.Serve(lis) }()
	fmt.Printf("listening on %s\n", lis.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	g.Stop()
	return nil
}

// floorOptions are the server options internal/server.GRPCServer gives
// varbridge, less its interceptors (metrics, logging, recovery, auth,
// limits: the varbridge work the floor leaves out). The keepalive
// parameters are that server's defaults (unexported there).
func floorOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: server.ClientPingInterval, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(server.DefaultMaxRecvMsgBytes),
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.ForceServerCodecV2(codec.Server),
	}
}

// floorServerDesc says in params how the floor server runs.
const floorServerDesc = "bench's floor server (vbbench floor-serve): SetVariable hands the value over a channel to each WatchVariables handler, which sends it; no store, no interceptors; varbridge's server options: grpc.NumStreamWorkers(GOMAXPROCS), internal/codec's Server codec, the same keepalive and receive limit"

func startFloor(self string) (*proc, error) {
	return startListener("grpc floor server", self, "floor-serve")
}
