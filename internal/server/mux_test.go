package server_test

import (
	"context"
	"io"
	"testing"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

type muxClient struct {
	t *testing.T
	s grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]
}

func (f *fixture) mux(ctx context.Context) *muxClient {
	f.t.Helper()
	s, err := f.c.Watch(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return &muxClient{t: f.t, s: s}
}

func (m *muxClient) create(id int64, req *pb.WatchVariablesRequest) {
	m.t.Helper()
	if err := m.s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreateRequest{WatchId: id, Watch: req}}}); err != nil {
		m.t.Fatal(err)
	}
}

func (m *muxClient) cancel(id int64) {
	m.t.Helper()
	if err := m.s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: id}}}); err != nil {
		m.t.Fatal(err)
	}
}

// next returns the next response that is not a batch of heartbeats only.
func (m *muxClient) next() *pb.WatchResponse {
	m.t.Helper()
	for {
		r, err := m.s.Recv()
		if err != nil {
			m.t.Fatalf("mux stream: %v", err)
		}
		if us := r.GetUpdates().GetUpdates(); len(us) == 1 && us[0].GetUpdateType() == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
			continue
		}
		return r
	}
}

// endedStatus decodes a WatchEnded's google.rpc.Status.
func endedStatus(t *testing.T, r *pb.WatchResponse) error {
	t.Helper()
	if r.GetEnded() == nil {
		t.Fatalf("response %v, want ended", r)
	}
	var sp spb.Status
	if err := proto.Unmarshal(r.GetEnded().GetStatus(), &sp); err != nil {
		t.Fatal(err)
	}
	return status.FromProto(&sp).Err()
}

// Two watches of two sessions on one stream: each gets created with its
// start, its own updates in order, and ends alone.
func TestMuxWatchesShareAStream(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s1")
	f.session("s2")
	f.register("s1", "a", 1)
	f.register("s2", "b", 2)
	m := f.mux(f.ctx)
	m.create(1, &pb.WatchVariablesRequest{SessionId: "s1", VariableIdentifiers: []string{"a"}, IncludeInitialValues: true})
	r := m.next()
	if r.GetWatchId() != 1 || r.GetCreated().GetStartsAfter() != 1 || r.GetCreated().GetIncarnation() == "" {
		t.Fatalf("first response %v, want created for watch 1 after revision 1", r)
	}
	r = m.next()
	if us := r.GetUpdates().GetUpdates(); r.GetWatchId() != 1 || len(us) != 1 || us[0].GetUpdateType() != pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE || us[0].GetIncarnation() == "" {
		t.Fatalf("initial values %v", r)
	}
	m.create(2, &pb.WatchVariablesRequest{SessionId: "s2"})
	if r := m.next(); r.GetWatchId() != 2 || r.GetCreated() == nil {
		t.Fatalf("response %v, want created for watch 2", r)
	}
	f.set("s2", "b", 20)
	f.set("s1", "a", 10)
	f.set("s1", "a", 11)
	got := map[int64][]int64{}
	for len(got[1]) < 2 || len(got[2]) < 1 {
		r := m.next()
		for _, u := range r.GetUpdates().GetUpdates() {
			got[r.GetWatchId()] = append(got[r.GetWatchId()], u.GetVariable().GetValue().GetIntValue())
		}
	}
	if len(got[1]) != 2 || got[1][0] != 10 || got[1][1] != 11 || got[2][0] != 20 {
		t.Fatalf("values per watch %v", got)
	}
	// A duplicate id ends the new watch alone, with the single watch's error.
	m.create(1, &pb.WatchVariablesRequest{SessionId: "s1"})
	r = m.next()
	if err := endedStatus(t, r); r.GetWatchId() != 1 || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("duplicate id: %v %v", r.GetWatchId(), err)
	}
	if ei := errorInfo(t, endedStatus(t, r)); ei.GetReason() != server.Reason(pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT) {
		t.Fatalf("reason %q", ei.GetReason())
	}
	// Cancelling watch 1 confirms, and its updates stop; watch 2 goes on.
	m.cancel(1)
	if r := m.next(); r.GetWatchId() != 1 || r.GetCanceled() == nil {
		t.Fatalf("response %v, want canceled", r)
	}
	f.set("s1", "a", 12)
	f.set("s2", "b", 21)
	if r := m.next(); r.GetWatchId() != 2 || r.GetUpdates().GetUpdates()[0].GetVariable().GetValue().GetIntValue() != 21 {
		t.Fatalf("after cancel: %v", r)
	}
	// A session that ends ends its watches with SESSION_CLOSED.
	if _, err := f.c.CleanupSession(f.ctx, &pb.CleanupSessionRequest{SessionId: "s2"}); err != nil {
		t.Fatal(err)
	}
	r = m.next()
	if ei := errorInfo(t, endedStatus(t, r)); r.GetWatchId() != 2 || ei.GetReason() != server.Reason(pb.ErrorReason_ERROR_REASON_SESSION_CLOSED) {
		t.Fatalf("ended %v reason %q", r.GetWatchId(), ei.GetReason())
	}
	if n := f.srv.Store.WatchCount(); n != 0 {
		t.Fatalf("%d watches registered after cancel and cleanup", n)
	}
	// Closing the send side ends the stream cleanly.
	if err := m.s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.s.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

// A create the store refuses (a variable that does not exist, a resume
// ahead of the session) ends that watch with the single watch's status.
func TestMuxCreateRefused(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	m := f.mux(f.ctx)
	m.create(7, &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"nope"}})
	if err := endedStatus(t, m.next()); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown variable: %v", err)
	}
	m.create(8, &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 99})
	if err := endedStatus(t, m.next()); status.Code(err) != codes.OutOfRange {
		t.Fatalf("start ahead: %v", err)
	}
	m.create(9, nil)
	if err := endedStatus(t, m.next()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no watch: %v", err)
	}
	m.create(10, &pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: -1})
	if err := endedStatus(t, m.next()); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("negative heartbeat: %v", err)
	}
}

// Heartbeats come per watch, at each watch's own interval, with its
// covered revision, and a resume from a revision gets what came after.
func TestMuxHeartbeatAndResume(t *testing.T) {
	f := newFixture(t, store.Options{})
	f.session("s")
	f.register("s", "a", 1)
	f.set("s", "a", 2)
	f.set("s", "a", 3)
	info, err := f.srv.Store.GetSession("s")
	if err != nil {
		t.Fatal(err)
	}
	m := f.mux(f.ctx)
	m.create(1, &pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: 10})
	m.create(2, &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 2, Incarnation: info.Incarnation})
	beats, resumed := 0, []int64{}
	for beats < 3 || len(resumed) < 2 {
		r, err := m.s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range r.GetUpdates().GetUpdates() {
			switch {
			case r.GetWatchId() == 1 && u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_HEARTBEAT:
				if u.GetRevision() != 3 {
					t.Fatalf("heartbeat at %d, want 3", u.GetRevision())
				}
				beats++
			case r.GetWatchId() == 2 && u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE:
				resumed = append(resumed, u.GetRevision())
			case r.GetWatchId() == 1:
				t.Fatalf("watch 1 got %v", u)
			}
		}
	}
	if resumed[0] != 2 || resumed[1] != 3 {
		t.Fatalf("resumed revisions %v, want [2 3]", resumed)
	}
}
