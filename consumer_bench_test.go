package varbridge

import (
	"fmt"
	"testing"

	"github.com/varbridge/varbridge/internal/backend"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// BenchmarkConsumerProcessBatches is the Go client's per-update bookkeeping
// (resume point, batch members, dispatch to a no-op watcher) for a stream
// whose every revision is a batch of 100; building the updates is included
// (4 allocations per update).
func BenchmarkConsumerProcessBatches(b *testing.B) {
	w := newWatch(nil, func(string, any, any, UpdateMeta) {}, newWatchConfig(nil), Quiet, backend.Start{})
	c := newStreamConsumer(streamConn{session: "s"}, w, nil, 0, "")
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("var_%016x", i)
	}
	us := make([]*pb.VariableUpdate, 100)
	b.ReportAllocs()
	rev := int64(1)
	for i := 0; b.Loop(); i++ {
		if i%100 == 0 {
			rev++
			for j := range us {
				us[j] = &pb.VariableUpdate{VariableId: ids[j], VariableName: ids[j], UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE,
					Revision: rev, LastInRevision: j == 99, Variable: &pb.Variable{Type: pb.VariableType_VARIABLE_TYPE_INTEGER, Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(i)}}}}
			}
		}
		c.process(us[i%100])
	}
}
