package server_test

// What a where filter may cost, over the wire: a filter whose estimated
// worst case is too high is refused with INVALID_ARGUMENT; a watch whose
// filter keeps reaching the per-evaluation limit, or whose session's filter
// budget is spent, ends with RESOURCE_EXHAUSTED and ErrorInfo reason
// FILTER_TOO_COSTLY naming the limit; another session's watch goes on.

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// needle costs about six units per hundred characters of the value it scans.
const needle = `new.contains("needle")`

// fcSession creates a session with a string variable s.
func fcSession(t *testing.T, c pb.BridgeServiceClient, ctx context.Context, id string) {
	t.Helper()
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: id, Name: "s", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: str("")}); err != nil {
		t.Fatal(err)
	}
}

func fcSet(t *testing.T, c pb.BridgeServiceClient, ctx context.Context, id, v string) {
	t.Helper()
	if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: id, VariableIdentifier: "s", Value: str(v)}); err != nil {
		t.Fatal(err)
	}
}

// fcWatch opens a filtered watch of s and waits until it is registered.
func fcWatch(t *testing.T, c pb.BridgeServiceClient, ctx context.Context, id, where string) pb.BridgeService_WatchVariablesClient {
	t.Helper()
	ws, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: id, VariableIdentifiers: []string{"s"}, Where: where})
	if err != nil {
		t.Fatal(err)
	}
	if md, err := ws.Header(); err != nil || len(md.Get(server.RevisionHeader)) == 0 {
		_, err = ws.Recv()
		t.Fatalf("watch of %s did not start: %v", id, err)
	}
	return ws
}

// wantTooCostly reads the stream until it ends and checks the status.
func wantTooCostly(t *testing.T, ws pb.BridgeService_WatchVariablesClient, limit string) {
	t.Helper()
	var err error
	for err == nil {
		_, err = ws.Recv()
	}
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "limit "+limit+" is ") {
		t.Fatalf("watch ended with %v %q; want RESOURCE_EXHAUSTED naming %s", st.Code(), st.Message(), limit)
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == "FILTER_TOO_COSTLY" && ei.Metadata["limit"] == limit {
			return
		}
	}
	t.Fatalf("no ErrorInfo FILTER_TOO_COSTLY with limit %s in %v", limit, st.Details())
}

func TestFilterCostRejectedAtCompileTime(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{}, server.RequestLimits{})
	fcSession(t, c, ctx, "a")
	l := "[" + strings.Repeat("0,", 99) + "0]"
	ws, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "a", Where: l + ".all(a, " + l + ".all(b, " + l + ".all(c, true)))"})
	if err == nil {
		_, err = ws.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "estimated worst-case cost is") {
		t.Fatalf("issue 10's attack: %v %q; want INVALID_ARGUMENT naming the estimate", st.Code(), st.Message())
	}
}

// A filter that is cheap on small values but reaches the per-evaluation
// limit (20,000 units) on large ones: the first two such updates are
// delivered (a failing filter lets an update through), the third ends the
// watch.
func TestFilterReachingCostLimitEndsWatch(t *testing.T) {
	_, c, ctx := limClient(t, store.Options{}, server.RequestLimits{})
	fcSession(t, c, ctx, "a")
	ws := fcWatch(t, c, ctx, "a", needle)
	big := strings.Repeat("hay", 150_000) // 27,000 units
	fcSet(t, c, ctx, "a", "needle")
	fcSet(t, c, ctx, "a", big)
	fcSet(t, c, ctx, "a", big+"x")
	for _, want := range []string{"needle", big, big + "x"} {
		u, err := ws.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := u.GetVariable().GetValue().GetStringValue(); got != want {
			t.Fatalf("got %.20q; want %.20q", got, want)
		}
	}
	fcSet(t, c, ctx, "a", big+"y")
	wantTooCostly(t, ws, "filter_cost_per_evaluation")
}

// Session a's filters spend its budget and its watches end; session b's
// watch, with the same filter, keeps receiving.
func TestFilterBudgetIsPerSession(t *testing.T) {
	// 10 evaluations of 9,000 units against 10,000 a second: the budget
	// runs out unless the writes take 8 s, which even a loaded machine
	// under the race detector does not (40,000 a second once did).
	_, c, ctx := limClient(t, store.Options{Filter: store.FilterLimits{CostPerSecond: 10_000}}, server.RequestLimits{})
	fcSession(t, c, ctx, "a")
	fcSession(t, c, ctx, "b")
	heavy := fcWatch(t, c, ctx, "a", needle)
	other := fcWatch(t, c, ctx, "b", needle)
	costly := strings.Repeat("hay", 50_000) + "needle" // 9,000 units: within the per-evaluation limit
	for range 5 {
		fcSet(t, c, ctx, "a", costly) // the same value again is no change: alternate
		fcSet(t, c, ctx, "a", costly+"!")
	}
	wantTooCostly(t, heavy, "filter_cost_per_session_per_second")
	for i := range 3 {
		v := strings.Repeat("x", i+1) + "needle"
		fcSet(t, c, ctx, "b", v)
		u, err := other.Recv()
		if err != nil || u.GetVariable().GetValue().GetStringValue() != v {
			t.Fatalf("session b: %v %v; want %q", u, err, v)
		}
	}
}
