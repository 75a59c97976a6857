package httpapi_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// TestConnectWriteStream: WriteVariables over the HTTP port (gRPC and the
// Connect protocol, both on HTTP/2 as bidirectional streams need): writes
// pipelined and acknowledged in order, the stream's token checked against
// each write's session, errors with their details, a clean end.
func TestConnectWriteStream(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithAuth())
	tok := ts.newSession(t, "s1")
	ts.newSession(t, "s2")
	for _, p := range []struct {
		name string
		opts []connect.ClientOption
	}{{"grpc", []connect.ClientOption{connect.WithGRPC()}}, {"connect", nil}} {
		t.Run(p.name, func(t *testing.T) {
			c := varbridgev1connect.NewBridgeServiceClient(h2cClient(t), ts.url, p.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stream := c.WriteVariables(ctx)
			stream.RequestHeader().Set("Authorization", "Bearer "+tok)
			set := func(sess, ident string, v int64) *pb.WriteRequest {
				return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariable{SetVariable: &pb.SetVariableRequest{
					SessionId: sess, VariableIdentifier: ident, Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: v}},
				}}}
			}
			writes := []*pb.WriteRequest{set("s1", "n", 10), set("s1", "n", 101), set("s2", "n", 5), set("s1", "n", 11)}
			for i, w := range writes {
				w.Id = uint64(i + 1)
				if err := stream.Send(&pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{w}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := stream.CloseRequest(); err != nil {
				t.Fatal(err)
			}
			var acks []*pb.WriteResponse
			for len(acks) < len(writes) {
				resp, err := stream.Receive()
				if err != nil {
					t.Fatalf("after %d acks: %v", len(acks), err)
				}
				acks = append(acks, resp.GetAcks()...)
			}
			if _, err := stream.Receive(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the acks: %v, want the stream's clean end", err)
			}
			_ = stream.CloseResponse()
			for i, a := range acks {
				if a.GetId() != uint64(i+1) {
					t.Fatalf("ack %d has id %d", i, a.GetId())
				}
			}
			if got := acks[0].GetSetVariable().GetVariable().GetValue().GetIntValue(); got != 10 {
				t.Errorf("first write: %v", acks[0])
			}
			e := acks[1].GetError()
			st := status.FromProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if ei, ok := d.(*errdetails.ErrorInfo); ok {
					info = ei
				}
			}
			if st.Code() != codes.InvalidArgument || info.GetReason() != "CONSTRAINT_VIOLATION" || info.GetMetadata()["constraint"] != "max" {
				t.Errorf("constraint violation: %v, details %v", st, info)
			}
			if acks[2].GetError().GetCode() != int32(connect.CodePermissionDenied) {
				t.Errorf("write to another session's variable: %v", acks[2])
			}
			if got := acks[3].GetSetVariable().GetRevision(); got != acks[0].GetSetVariable().GetRevision()+1 {
				t.Errorf("last write at revision %d, want the one after the first's", got)
			}
		})
	}
}
