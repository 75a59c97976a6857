package server_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// With compact, a change's variable is type, value and version only, and the
// update itself still names the variable, its writer, revision and time;
// initial values stay full. Without it, every variable is full.
func TestWatchCompact(t *testing.T) {
	for _, compact := range []bool{false, true} {
		for _, batches := range []bool{false, true} {
			t.Run(map[bool]string{false: "full", true: "compact"}[compact]+map[bool]string{false: "/single", true: "/batches"}[batches], func(t *testing.T) {
				f := newFixture(t, store.Options{})
				f.session("s")
				a := f.register("s", "a", 1)
				req := &pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a"}, IncludeInitialValues: true, Compact: compact}
				var recv func(n int) []*pb.VariableUpdate
				if batches {
					s, err := f.c.WatchVariableBatches(f.ctx, req)
					if err != nil {
						t.Fatal(err)
					}
					recv = func(n int) []*pb.VariableUpdate {
						var out []*pb.VariableUpdate
						for len(out) < n {
							b, err := s.Recv()
							if err != nil {
								t.Fatal(err)
							}
							for _, u := range b.Updates {
								if u.UpdateType != pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
									out = append(out, u)
								}
							}
						}
						return out
					}
				} else {
					s := f.watch(f.ctx, req)
					recv = func(n int) []*pb.VariableUpdate { return recvUpdates(t, s, n) }
				}
				init := recv(1)[0]
				if init.Variable.GetName() != "a" || init.Variable.GetId() != a.Id || init.Variable.GetCreatedAt() == nil {
					t.Errorf("initial value's variable is not full: %v", init.Variable)
				}
				if _, err := f.c.SetVariable(f.ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "a", Value: intVal(7), Source: "go-test"}); err != nil {
					t.Fatal(err)
				}
				if _, err := f.c.DeleteVariable(f.ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "a"}); err != nil {
					t.Fatal(err)
				}
				for i, u := range recv(2) {
					if u.VariableId != a.Id || u.VariableName != "a" || u.Revision != int64(2+i) || u.Timestamp == nil || u.OldValue.GetIntValue() != []int64{1, 7}[i] {
						t.Errorf("update %d lacks its own fields: %v", i, u)
					}
					if i == 0 && u.UpdateSource != "go-test" {
						t.Errorf("update_source = %q", u.UpdateSource)
					}
					want := &pb.Variable{Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: intVal(7), Version: 2}
					if compact {
						if !proto.Equal(u.Variable, want) {
							t.Errorf("update %d: compact variable = %v, want %v", i, u.Variable, want)
						}
					} else if u.Variable.GetName() != "a" || u.Variable.GetId() != a.Id || u.Variable.GetUpdatedAt() == nil || u.Variable.GetVersion() != 2 {
						t.Errorf("update %d: variable is not full: %v", i, u.Variable)
					}
				}
			})
		}
	}
}
