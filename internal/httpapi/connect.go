package httpapi

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/grpc/metadata"

	"github.com/varbridge/varbridge/internal/server"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// bridgeService is the BridgeService for connect-go: each method hands its
// request to the gRPC server's method of the same name through
// Server.Unary, so both ports share one implementation and one set of rules.
// A method added to the proto answers UNIMPLEMENTED here until it gets its
// line below (TestEveryMethodServed fails meanwhile), so that adding one
// never breaks the build of this package.
type bridgeService struct {
	varbridgev1connect.UnimplementedBridgeServiceHandler
	s *server.Server
}

var _ varbridgev1connect.BridgeServiceHandler = (*bridgeService)(nil)

// unary runs one call: credentials from the request's headers, the server's
// method h, and its status error as a Connect error.
func unary[Req, Resp any](b *bridgeService, ctx context.Context, req *connect.Request[Req],
	h func(context.Context, *Req) (*Resp, error)) (*connect.Response[Resp], error) {
	resp, err := b.s.Unary(ctx, req.Spec().Procedure, requestCredentials(req.Header(), req.Peer()), req.Msg,
		func(ctx context.Context, r any) (any, error) { return h(ctx, r.(*Req)) })
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(resp.(*Resp)), nil
}

func requestCredentials(h http.Header, p connect.Peer) server.Credentials {
	return credentials(h.Values("Authorization"), p.Addr)
}

func (b *bridgeService) InitializeSession(ctx context.Context, r *connect.Request[pb.InitializeSessionRequest]) (*connect.Response[pb.InitializeSessionResponse], error) {
	return unary(b, ctx, r, b.s.InitializeSession)
}

func (b *bridgeService) GetSession(ctx context.Context, r *connect.Request[pb.GetSessionRequest]) (*connect.Response[pb.GetSessionResponse], error) {
	return unary(b, ctx, r, b.s.GetSession)
}

func (b *bridgeService) Heartbeat(ctx context.Context, r *connect.Request[pb.HeartbeatRequest]) (*connect.Response[pb.HeartbeatResponse], error) {
	return unary(b, ctx, r, b.s.Heartbeat)
}

func (b *bridgeService) CleanupSession(ctx context.Context, r *connect.Request[pb.CleanupSessionRequest]) (*connect.Response[pb.CleanupSessionResponse], error) {
	return unary(b, ctx, r, b.s.CleanupSession)
}

func (b *bridgeService) ListSessions(ctx context.Context, r *connect.Request[pb.ListSessionsRequest]) (*connect.Response[pb.ListSessionsResponse], error) {
	return unary(b, ctx, r, b.s.ListSessions)
}

func (b *bridgeService) RegisterVariable(ctx context.Context, r *connect.Request[pb.RegisterVariableRequest]) (*connect.Response[pb.RegisterVariableResponse], error) {
	return unary(b, ctx, r, b.s.RegisterVariable)
}

func (b *bridgeService) GetVariable(ctx context.Context, r *connect.Request[pb.GetVariableRequest]) (*connect.Response[pb.GetVariableResponse], error) {
	return unary(b, ctx, r, b.s.GetVariable)
}

func (b *bridgeService) GetVariables(ctx context.Context, r *connect.Request[pb.GetVariablesRequest]) (*connect.Response[pb.GetVariablesResponse], error) {
	return unary(b, ctx, r, b.s.GetVariables)
}

func (b *bridgeService) SetVariable(ctx context.Context, r *connect.Request[pb.SetVariableRequest]) (*connect.Response[pb.SetVariableResponse], error) {
	return unary(b, ctx, r, b.s.SetVariable)
}

func (b *bridgeService) SetVariables(ctx context.Context, r *connect.Request[pb.SetVariablesRequest]) (*connect.Response[pb.SetVariablesResponse], error) {
	return unary(b, ctx, r, b.s.SetVariables)
}

func (b *bridgeService) ListWatches(ctx context.Context, r *connect.Request[pb.ListWatchesRequest]) (*connect.Response[pb.ListWatchesResponse], error) {
	return unary(b, ctx, r, b.s.ListWatches)
}

func (b *bridgeService) ListVariables(ctx context.Context, r *connect.Request[pb.ListVariablesRequest]) (*connect.Response[pb.ListVariablesResponse], error) {
	return unary(b, ctx, r, b.s.ListVariables)
}

func (b *bridgeService) DeleteVariable(ctx context.Context, r *connect.Request[pb.DeleteVariableRequest]) (*connect.Response[pb.DeleteVariableResponse], error) {
	return unary(b, ctx, r, b.s.DeleteVariable)
}

// WriteVariables runs the server's write stream (it needs HTTP/2, as every
// bidirectional Connect stream does).
func (b *bridgeService) WriteVariables(ctx context.Context, stream *connect.BidiStream[pb.WriteVariablesRequest, pb.WriteVariablesResponse]) error {
	cred := credentials(stream.RequestHeader().Values("Authorization"), stream.Peer().Addr)
	return connectError(b.s.Writes(ctx, cred, stream.Receive, stream.Send))
}

// WatchVariables runs the server's watch; the revision and incarnation
// headers go out as soon as the watch is registered, as on gRPC.
func (b *bridgeService) WatchVariables(ctx context.Context, r *connect.Request[pb.WatchVariablesRequest], stream *connect.ServerStream[pb.VariableUpdate]) error {
	return watch(b, ctx, r, stream.ResponseHeader(), stream.Send, func(us []*pb.VariableUpdate) error {
		for _, u := range us {
			if err := stream.Send(u); err != nil {
				return err
			}
		}
		return nil
	})
}

// WatchVariableBatches is WatchVariables with the server's batching.
func (b *bridgeService) WatchVariableBatches(ctx context.Context, r *connect.Request[pb.WatchVariablesRequest], stream *connect.ServerStream[pb.VariableUpdateBatch]) error {
	send := stream.Send
	return watch(b, ctx, r, stream.ResponseHeader(), send, func(us []*pb.VariableUpdate) error {
		return server.SendBatches(us, send)
	})
}

// watch runs a Connect watch stream. sendHeader(nil) sends the response
// header without a message (connect-go's ServerStream.Send(nil)).
func watch[M any](b *bridgeService, ctx context.Context, r *connect.Request[pb.WatchVariablesRequest], h http.Header,
	sendHeader func(*M) error, send func([]*pb.VariableUpdate) error) error {
	err := b.s.ServeWatch(ctx, r.Spec().Procedure, requestCredentials(r.Header(), r.Peer()), r.Msg,
		func(md metadata.MD) error {
			for k, vs := range md {
				for _, v := range vs {
					h.Add(k, v)
				}
			}
			return sendHeader(nil)
		}, send)
	return connectError(err)
}

// Watch runs the server's multiplexed watch stream over connect-go (HTTP/2
// only, as every bidirectional Connect stream): requests and responses pass
// through the stream's own connection, unchanged.
func (b *bridgeService) Watch(ctx context.Context, stream *connect.BidiStream[pb.WatchRequest, pb.WatchResponse]) error {
	conn := stream.Conn()
	err := b.s.ServeWatchStream(ctx, stream.Spec().Procedure, requestCredentials(stream.RequestHeader(), stream.Peer()),
		conn.Receive, conn.Send)
	return connectError(err)
}
