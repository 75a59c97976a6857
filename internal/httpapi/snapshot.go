package httpapi

import (
	"context"

	"connectrpc.com/connect"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// SaveSnapshot streams the server's snapshot over Connect, with the same
// operator check as on gRPC.
func (b *bridgeService) SaveSnapshot(ctx context.Context, r *connect.Request[pb.SaveSnapshotRequest], stream *connect.ServerStream[pb.SnapshotChunk]) error {
	ctx = requestCredentials(r.Header(), r.Peer()).Incoming(ctx)
	return connectError(b.s.StreamSnapshot(ctx, stream.Send))
}
