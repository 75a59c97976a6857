package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestConnectStreams watches through each protocol of the connect handler:
// Connect (HTTP/1.1, JSON), gRPC-Web and gRPC (h2c).
func TestConnectStreams(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithAuth())
	tok := ts.newSession(t, "s1")
	protocols := []struct {
		name string
		c    *http.Client
		opts []connect.ClientOption
	}{
		{"connect+json", ts.client, []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc-web", ts.client, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc", h2cClient(t), []connect.ClientOption{connect.WithGRPC()}},
	}
	for i, p := range protocols {
		want := float64(40 + i) // a new value each time, so each set is a change
		t.Run(p.name, func(t *testing.T) {
			c := varbridgev1connect.NewBridgeServiceClient(p.c, ts.url, p.opts...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := connect.NewRequest(&pb.WatchVariablesRequest{SessionId: "s1", VariableIdentifiers: []string{"x"}})
			req.Header().Set("Authorization", "Bearer "+tok)
			stream, err := c.WatchVariables(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			// The revision header arrives before any update (it is what a
			// client waits for before writing).
			if stream.ResponseHeader().Get(server.RevisionHeader) == "" && stream.Receive() {
				t.Fatalf("an update before the header: %v", stream.Msg())
			}
			after, _ := strconv.ParseInt(stream.ResponseHeader().Get(server.RevisionHeader), 10, 64)
			if stream.ResponseHeader().Get(server.IncarnationHeader) == "" {
				t.Error("no incarnation header")
			}
			set := connect.NewRequest(&pb.SetVariableRequest{SessionId: "s1", VariableIdentifier: "x",
				Value: &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: want}}})
			set.Header().Set("Authorization", "Bearer "+tok)
			res, err := c.SetVariable(ctx, set)
			if err != nil {
				t.Fatal(err)
			}
			if res.Msg.GetRevision() <= after {
				t.Fatalf("set at revision %d, watch after %d", res.Msg.GetRevision(), after)
			}
			for stream.Receive() {
				u := stream.Msg()
				if u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
					continue
				}
				if u.GetRevision() != res.Msg.GetRevision() || u.GetVariable().GetValue().GetFloatValue() != want {
					t.Errorf("update %v", u)
				}
				return
			}
			t.Fatalf("stream ended: %v", stream.Err())
		})
	}

	// Errors carry the server's details through the client.
	c := varbridgev1connect.NewBridgeServiceClient(ts.client, ts.url)
	stream, err := c.WatchVariableBatches(context.Background(), connect.NewRequest(&pb.WatchVariablesRequest{SessionId: "s1"}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
		stream.Close()
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("watch without token: %v", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || len(ce.Details()) == 0 {
		t.Fatalf("no details in %v", err)
	}
	d, err := ce.Details()[0].Value()
	if info, ok := d.(*errdetails.ErrorInfo); !ok || err != nil || info.GetReason() != "TOKEN_REQUIRED" || info.GetDomain() != server.ErrorDomain {
		t.Errorf("first detail %v (%v)", d, err)
	}
}

// TestConnectBatches: WatchVariableBatches on the connect handler batches
// as the gRPC server does.
func TestConnectBatches(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	c := varbridgev1connect.NewBridgeServiceClient(ts.client, ts.url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.WatchVariableBatches(ctx, connect.NewRequest(&pb.WatchVariablesRequest{SessionId: "s1", IncludeInitialValues: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	if us := stream.Msg().GetUpdates(); len(us) != 2 || !us[1].GetLastInRevision() {
		t.Errorf("initial batch %v", us)
	}
}
