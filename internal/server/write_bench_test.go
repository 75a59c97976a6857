package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BenchmarkWritePath takes a write apart, one write at a time on an
// in-memory store: the store alone, the server's interceptors and handler
// without a transport (Server.Unary), a unary SetVariable over loopback,
// and the same write on an open WriteVariables stream. The differences are
// where a unary write's time goes (issue 15).
func BenchmarkWritePath(b *testing.B) {
	newStore := func(b *testing.B) *store.Store {
		st := store.New(store.Options{})
		b.Cleanup(st.Close)
		if _, _, err := st.CreateSession("s", 0, nil); err != nil {
			b.Fatal(err)
		}
		if _, _, err := st.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); err != nil {
			b.Fatal(err)
		}
		return st
	}
	b.Run("store", func(b *testing.B) {
		st := newStore(b)
		for i := range b.N {
			if _, err := st.Set("s", []store.Write{{Identifier: "x", Value: intVal(int64(i + 1))}}, nil, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("handler", func(b *testing.B) {
		st := newStore(b)
		s := server.New(st, server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		ctx := context.Background()
		call := func(ctx context.Context, req any) (any, error) {
			return s.SetVariable(ctx, req.(*pb.SetVariableRequest))
		}
		for i := range b.N {
			req := &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(int64(i + 1))}
			if _, err := s.Unary(ctx, pb.BridgeService_SetVariable_FullMethodName, server.Credentials{}, req, call); err != nil {
				b.Fatal(err)
			}
		}
	})
	client := func(b *testing.B) pb.BridgeServiceClient {
		srv := servertest.Start(b, store.Options{})
		if _, _, err := srv.Store.CreateSession("s", 0, nil); err != nil {
			b.Fatal(err)
		}
		if _, _, err := srv.Store.Register("s", store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); err != nil {
			b.Fatal(err)
		}
		conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return pb.NewBridgeServiceClient(conn)
	}
	b.Run("unary", func(b *testing.B) {
		c := client(b)
		ctx := context.Background()
		for i := range b.N {
			if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(int64(i + 1))}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		c := client(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := c.WriteVariables(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for i := range b.N {
			req := &pb.WriteRequest{Id: uint64(i), Write: &pb.WriteRequest_SetVariable{SetVariable: &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(int64(i + 1))}}}
			if err := stream.Send(&pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{req}}); err != nil {
				b.Fatal(err)
			}
			if resp, err := stream.Recv(); err != nil || len(resp.GetAcks()) != 1 || resp.GetAcks()[0].GetError() != nil {
				b.Fatal(err, resp)
			}
		}
	})
}
