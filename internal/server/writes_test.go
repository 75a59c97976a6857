package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/disk"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// startStore serves st (in memory, or durable with fsync always) on
// loopback and returns a client.
func startStore(t *testing.T, durable bool, opts ...server.Option) (pb.BridgeServiceClient, *store.Store) {
	t.Helper()
	var st *store.Store
	if durable {
		eng, err := disk.Open(t.TempDir(), disk.Options{Fsync: disk.FsyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		if st, _, err = store.Open(store.Options{Engine: eng}); err != nil {
			_ = eng.Close()
			t.Fatal(err)
		}
	} else {
		st = store.New(store.Options{})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := server.New(st, append([]server.Option{server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...).GRPCServer()
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		<-done
		st.Close()
	})
	return pb.NewBridgeServiceClient(conn), st
}

// writeCases are writes of every kind of outcome, each to run after the
// ones before it: successes, a no-op, a batch, and the failures the unary
// calls report (store errors, request limits, a bad message).
func writeCases() []*pb.WriteRequest {
	one := func(r *pb.SetVariableRequest) *pb.WriteRequest {
		return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariable{SetVariable: r}}
	}
	many := func(r *pb.SetVariablesRequest) *pb.WriteRequest {
		return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariables{SetVariables: r}}
	}
	v1 := int64(1)
	bigMeta := map[string]string{}
	for i := range server.DefaultMaxMetadataEntries + 1 {
		bigMeta[strings.Repeat("k", i+1)] = "v"
	}
	return []*pb.WriteRequest{
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(5), Metadata: map[string]string{"by": "t"}, Source: "w"}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(5)}), // no-op
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(6), ExpectedVersion: &v1}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(500)}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "nope", Value: intVal(1)}),
		one(&pb.SetVariableRequest{SessionId: "gone", VariableIdentifier: "x", Value: intVal(1)}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x"}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: strings.Repeat("n", server.MaxIdentifierBytes+1), Value: intVal(1)}),
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(7), Metadata: bigMeta}),
		many(&pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"x": intVal(8), "y": intVal(9)}}),
		many(&pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"x": intVal(10)}, ExpectedVersions: map[string]int64{"y": 1}}),
		many(&pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"x": intVal(11), "y": intVal(12)}, ExpectedVersions: map[string]int64{"x": 99}}),
		{}, // no write at all
		one(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "y", Value: intVal(13)}),
	}
}

func setUpWrites(t *testing.T, st *store.Store) {
	t.Helper()
	if _, _, err := st.CreateSession("s", 0, nil); err != nil {
		t.Fatal(err)
	}
	maxV := 100.0
	for _, name := range []string{"x", "y"} {
		if _, _, err := st.Register("s", store.Register{Name: name, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0), Constraints: &pb.Constraints{Max: &maxV}}); err != nil {
			t.Fatal(err)
		}
	}
}

// normalize clears what differs between two servers given the same writes
// (ids, times) so that their answers compare whole.
func normalize(m proto.Message) proto.Message {
	clear := func(v *pb.Variable) {
		if v != nil {
			v.Id, v.UpdatedAt, v.CreatedAt = "", nil, nil
		}
	}
	switch r := m.(type) {
	case *pb.SetVariableResponse:
		clear(r.Variable)
	case *pb.SetVariablesResponse:
		for _, v := range r.Variables {
			clear(v)
		}
		slices.Sort(r.Changed) // in the order of a map on the wire
	}
	return m
}

// recvAcks reads n acks, however they come grouped.
func recvAcks(t *testing.T, stream grpc.BidiStreamingClient[pb.WriteVariablesRequest, pb.WriteVariablesResponse], n int) []*pb.WriteResponse {
	t.Helper()
	var acks []*pb.WriteResponse
	for len(acks) < n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d acks of %d: %v", len(acks), n, err)
		}
		acks = append(acks, resp.GetAcks()...)
	}
	if len(acks) != n {
		t.Fatalf("%d acks, want %d", len(acks), n)
	}
	return acks
}

// sameStatus compares code, message and details (unpacked: an Any's bytes
// hold maps in any order).
func sameStatus(a, b *status.Status) bool {
	da, db := a.Details(), b.Details()
	if a.Code() != b.Code() || a.Message() != b.Message() || len(da) != len(db) {
		return false
	}
	for i := range da {
		ma, ok1 := da[i].(proto.Message)
		mb, ok2 := db[i].(proto.Message)
		if !ok1 || !ok2 || !proto.Equal(ma, mb) {
			return false
		}
	}
	return true
}

// TestWriteStreamAnswersAsUnary sends writeCases pipelined on one stream
// (every write before the first ack is read) to one server, and as unary
// calls to another set up alike: every ack is the unary call's response,
// or its error with the same code, message and details, in order; the
// stream ends cleanly when the client closes it. On a durable store too,
// where acks wait for their fsync.
func TestWriteStreamAnswersAsUnary(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := "memory"
		if durable {
			name = "durable"
		}
		t.Run(name, func(t *testing.T) {
			sc, sst := startStore(t, durable)
			uc, ust := startStore(t, durable)
			setUpWrites(t, sst)
			setUpWrites(t, ust)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stream, err := sc.WriteVariables(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cases := writeCases()
			for i, req := range cases {
				req.Id = uint64(100 + i)
				if err := stream.Send(&pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{req}}); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			acks := recvAcks(t, stream, len(cases))
			for i, req := range cases {
				ack := acks[i]
				if ack.GetId() != req.GetId() {
					t.Fatalf("ack %d has id %d, want %d (acks come in order)", i, ack.GetId(), req.GetId())
				}
				var want proto.Message
				var uerr error
				switch w := req.GetWrite().(type) {
				case *pb.WriteRequest_SetVariable:
					want, uerr = uc.SetVariable(ctx, w.SetVariable)
				case *pb.WriteRequest_SetVariables:
					want, uerr = uc.SetVariables(ctx, w.SetVariables)
				}
				switch {
				case req.GetWrite() == nil:
					if ack.GetError().GetCode() != int32(codes.InvalidArgument) {
						t.Errorf("ack %d (no write) = %v, want INVALID_ARGUMENT", i, ack)
					}
				case uerr != nil:
					e := ack.GetError()
					got := &spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()}
					if !sameStatus(status.FromProto(got), status.Convert(uerr)) {
						t.Errorf("ack %d = %v\nunary error %v", i, ack, status.Convert(uerr).Proto())
					}
					if len(status.Convert(uerr).Details()) == 0 {
						t.Errorf("write %d: unary error %v has no details", i, uerr)
					}
				default:
					var got proto.Message = ack.GetSetVariable()
					if _, ok := req.GetWrite().(*pb.WriteRequest_SetVariables); ok {
						got = ack.GetSetVariables()
					}
					if !proto.Equal(normalize(got), normalize(want)) {
						t.Errorf("ack %d = %v\nunary response %v", i, got, want)
					}
				}
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the last ack: %v, want the stream's clean end (io.EOF)", err)
			}
		})
	}
}

// TestWriteStreamPipelinedOrder: many writes sent before any ack is read
// apply in the order sent, one revision each, and their acks carry those
// revisions in order; durable too (the acks wait for fsyncs, shared).
func TestWriteStreamPipelinedOrder(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "durable"}[durable], func(t *testing.T) {
			c, st := startStore(t, durable)
			setUpWrites(t, st)
			info, err := st.GetSession("s")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stream, err := c.WriteVariables(ctx)
			if err != nil {
				t.Fatal(err)
			}
			const n = 2000
			sent := make(chan error, 1)
			go func() { // messages of 1, 2, 3... writes
				for i, k := 0, 1; i < n; i, k = i+k, k+1 {
					msg := &pb.WriteVariablesRequest{}
					for j := i; j < min(i+k, n); j++ {
						msg.Writes = append(msg.Writes, &pb.WriteRequest{Id: uint64(j), Write: &pb.WriteRequest_SetVariable{SetVariable: &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: intVal(int64(j%90 + 1))}}})
					}
					if err := stream.Send(msg); err != nil {
						sent <- err
						return
					}
				}
				sent <- stream.CloseSend()
			}()
			for i, ack := range recvAcks(t, stream, n) {
				r := ack.GetSetVariable()
				if ack.GetId() != uint64(i) || r.GetRevision() != info.Revision+int64(i)+1 || r.GetVariable().GetValue().GetIntValue() != int64(i%90+1) {
					t.Fatalf("ack %d = %v; want id %d at revision %d", i, ack, i, info.Revision+int64(i)+1)
				}
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("end: %v", err)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			v, _, err := st.Get("s", "x")
			if err != nil || v.GetVersion() != n+1 {
				t.Fatalf("x = %v, %v; want version %d", v, err, n+1)
			}
		})
	}
}

// TestWriteStreamAuth: the stream's token is checked against each write's
// session, as for unary calls; a refused write ends nothing.
func TestWriteStreamAuth(t *testing.T) {
	e := startSecure(t, true)
	tokA := e.create("a")
	e.create("b")
	for _, sess := range []string{"a", "b"} {
		if _, _, err := e.srv.Store.Register(sess, store.Register{Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(0)}); err != nil {
			t.Fatal(err)
		}
	}
	write := func(sess string) *pb.WriteRequest {
		return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariable{SetVariable: &pb.SetVariableRequest{SessionId: sess, VariableIdentifier: "x", Value: intVal(1)}}}
	}
	run := func(ctx context.Context, sessions ...string) []*pb.WriteResponse {
		t.Helper()
		stream, err := e.c.WriteVariables(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var acks []*pb.WriteResponse
		for _, s := range sessions {
			if err := stream.Send(&pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{write(s)}}); err != nil {
				t.Fatal(err)
			}
			acks = append(acks, recvAcks(t, stream, 1)...)
		}
		_ = stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end: %v", err)
		}
		return acks
	}
	acks := run(bearerCtx(e.ctx, tokA), "a", "b", "a")
	if acks[0].GetSetVariable() == nil || acks[2].GetSetVariable() == nil {
		t.Errorf("writes to the token's session: %v, %v", acks[0], acks[2])
	}
	if c := codes.Code(acks[1].GetError().GetCode()); c != codes.PermissionDenied {
		t.Errorf("write to another session = %v, want PERMISSION_DENIED", acks[1])
	}
	acks = run(e.ctx, "a")
	if c := codes.Code(acks[0].GetError().GetCode()); c != codes.Unauthenticated {
		t.Errorf("write without a token = %v, want UNAUTHENTICATED", acks[0])
	}
}
