package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ListWatches lists a session's open watches, oldest first, with what they
// watch, their filter and how far their streams have read; a watch that
// ends leaves the list.
func TestListWatches(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("w")
	e.session("other")
	for _, name := range []string{"a", "b"} {
		e.register(&pb.RegisterVariableRequest{SessionId: "w", Name: name, Type: pb.VariableType_VARIABLE_TYPE_INTEGER,
			InitialValue: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 1}}})
	}

	list := func() *pb.ListWatchesResponse {
		t.Helper()
		r, err := e.c.ListWatches(e.ctx, &pb.ListWatchesRequest{SessionId: "w"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := list(); len(r.GetWatches()) != 0 {
		t.Fatalf("a session without watches lists %v", r.GetWatches())
	}

	// open starts a watch and reads until its stream has begun (the
	// heartbeat or initial values that follow registration).
	open := func(req *pb.WatchVariablesRequest) context.CancelFunc {
		t.Helper()
		ctx, cancel := context.WithCancel(e.ctx)
		stream, err := e.c.WatchVariables(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Header(); err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	stopFirst := open(&pb.WatchVariablesRequest{SessionId: "w", VariableIdentifiers: []string{"b", "a"}, Where: "new > 0"})
	defer stopFirst()
	stopSecond := open(&pb.WatchVariablesRequest{SessionId: "w", Coalesce: true})
	defer stopSecond()
	defer open(&pb.WatchVariablesRequest{SessionId: "other"})()

	if _, err := e.c.SetVariable(e.ctx, &pb.SetVariableRequest{SessionId: "w", VariableIdentifier: "a",
		Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 2}}}); err != nil {
		t.Fatal(err)
	}
	rev := e.revision("w")
	var r *pb.ListWatchesResponse
	// The streams read the write on their own goroutines: wait (bounded)
	// until both have.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r = list()
		ws := r.GetWatches()
		if len(ws) == 2 && ws[0].GetReadRevision() == rev && ws[1].GetReadRevision() == rev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watches did not read revision %d: %v", rev, ws)
		}
	}
	if r.GetRevision() != rev {
		t.Errorf("listed at revision %d; the session is at %d", r.GetRevision(), rev)
	}
	first, second := r.GetWatches()[0], r.GetWatches()[1]
	if !slices.Equal(first.GetVariableIdentifiers(), []string{"b", "a"}) || first.GetWhere() != "new > 0" || first.GetCoalesce() {
		t.Errorf("first watch listed as %v; want variables [b a], where new > 0, no coalescing", first)
	}
	if len(second.GetVariableIdentifiers()) != 0 || second.GetWhere() != "" || !second.GetCoalesce() {
		t.Errorf("second watch listed as %v; want every variable, coalescing", second)
	}
	for _, w := range r.GetWatches() {
		if w.GetPending() || w.GetLagRevisions() != 0 || w.GetCreatedAt().AsTime().IsZero() {
			t.Errorf("a caught-up watch listed as %v; want not pending, lag 0, a creation time", w)
		}
	}
	if first.GetCreatedAt().AsTime().After(second.GetCreatedAt().AsTime()) {
		t.Errorf("not oldest first: %v", r.GetWatches())
	}

	stopFirst()
	for deadline := time.Now().Add(10 * time.Second); len(list().GetWatches()) != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("an ended watch is still listed: %v", list().GetWatches())
		}
	}

	_, err := e.c.ListWatches(e.ctx, &pb.ListWatchesRequest{SessionId: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("ListWatches of an unknown session: %v; want NotFound", err)
	}
}
