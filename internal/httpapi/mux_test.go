package httpapi_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// TestConnectMuxWatch: the multiplexed Watch stream over the connect
// handler (HTTP/2, Connect and gRPC protocols) is the server's: auth per
// create from the stream's header, created, updates and ended with the
// server's ErrorInfo.
func TestConnectMuxWatch(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithAuth())
	tok := ts.newSession(t, "s1")
	for i, opts := range [][]connect.ClientOption{nil, {connect.WithGRPC()}} {
		c := varbridgev1connect.NewBridgeServiceClient(h2cClient(t), ts.url, opts...)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream := c.Watch(ctx)
		stream.RequestHeader().Set("Authorization", "Bearer "+tok)
		create := func(id int64, sess string) {
			t.Helper()
			if err := stream.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreateRequest{
				WatchId: id, Watch: &pb.WatchVariablesRequest{SessionId: sess, VariableIdentifiers: []string{"x"}},
			}}}); err != nil {
				t.Fatal(err)
			}
		}
		create(1, "s1")
		r, err := stream.Receive()
		if err != nil || r.GetWatchId() != 1 || r.GetCreated() == nil {
			t.Fatalf("protocol %d: first response %v, %v; want created", i, r, err)
		}
		want := float64(10 + i)
		set := connect.NewRequest(&pb.SetVariableRequest{SessionId: "s1", VariableIdentifier: "x", Value: &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: want}}})
		set.Header().Set("Authorization", "Bearer "+tok)
		if _, err := c.SetVariable(ctx, set); err != nil {
			t.Fatal(err)
		}
		r, err = stream.Receive()
		if err != nil || r.GetUpdates().GetUpdates()[0].GetVariable().GetValue().GetFloatValue() != want {
			t.Fatalf("protocol %d: update %v, %v", i, r, err)
		}
		// Another session's token is not this stream's: that watch ends alone.
		ts.newSession(t, "other"+string(rune('a'+i)))
		create(2, "other"+string(rune('a'+i)))
		r, err = stream.Receive()
		if err != nil || r.GetEnded() == nil {
			t.Fatalf("protocol %d: response %v, %v; want ended", i, r, err)
		}
		var sp spb.Status
		if err := proto.Unmarshal(r.GetEnded().GetStatus(), &sp); err != nil {
			t.Fatal(err)
		}
		if connect.Code(sp.GetCode()) != connect.CodePermissionDenied || len(sp.GetDetails()) == 0 {
			t.Fatalf("protocol %d: ended with %v", i, &sp)
		}
		if err := stream.CloseRequest(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Receive(); err == nil {
			t.Fatalf("protocol %d: a response after the client closed", i)
		}
		_ = stream.CloseResponse()
	}
}
