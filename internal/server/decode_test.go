package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
)

// Bytes that are no message (truncated, or a string field that is not
// UTF-8) are the client's fault: INVALID_ARGUMENT with an ErrorInfo, on
// unary calls and on watches alike, where grpc-go by itself says INTERNAL.
func TestUndecodableRequestIsInvalidArgument(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	bodies := map[string][]byte{
		"truncated":        {0x0a, 0x05, 'a', 'b'},         // field 1 says 5 bytes, 2 follow
		"invalid UTF-8":    {0x0a, 0x02, 0xff, 0xfe},       // session_id "\xff\xfe"
		"truncated varint": {0x12, 0x80, 0x80, 0x80, 0x80}, // no end to the length
	}
	for name, body := range bodies {
		for _, method := range []string{"GetSession", "SetVariable", "ListSessions"} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := conn.Invoke(ctx, "/varbridge.v1.BridgeService/"+method, &rawMsg{body}, new(rawMsg))
			cancel()
			checkUndecodable(t, name+" "+method, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/varbridge.v1.BridgeService/WatchVariables")
		if err == nil {
			if err = s.SendMsg(&rawMsg{body}); err == nil {
				_ = s.CloseSend()
				err = s.RecvMsg(new(rawMsg))
			}
		}
		cancel()
		checkUndecodable(t, name+" WatchVariables", err)
	}
}

func checkUndecodable(t *testing.T, what string, err error) {
	t.Helper()
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("%s: %v; want INVALID_ARGUMENT", what, err)
		return
	}
	if ei := errorInfo(t, err); ei.GetReason() != "INVALID_ARGUMENT" || ei.GetMetadata()["field"] != "request" {
		t.Errorf("%s: ErrorInfo %v", what, ei)
	}
}
