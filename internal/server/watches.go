package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ListWatches implements BridgeService: a session's open watches, for the
// dashboard and for operators, with the session's own auth.
func (s *Server) ListWatches(_ context.Context, req *pb.ListWatchesRequest) (*pb.ListWatchesResponse, error) {
	infos, rev, err := s.st.Watches(req.GetSessionId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListWatchesResponse{Watches: make([]*pb.WatchInfo, len(infos)), Revision: rev}
	for i, w := range infos {
		resp.Watches[i] = &pb.WatchInfo{
			VariableIdentifiers: w.Identifiers, CreatedAt: timestamppb.New(w.Created), Where: w.Where,
			Coalesce: w.Coalesce, ReadRevision: w.ReadRevision, Pending: w.Pending, LagRevisions: w.Lag,
		}
	}
	return resp, nil
}
