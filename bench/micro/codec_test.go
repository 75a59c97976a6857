// Package micro holds micro-benchmarks behind the proposals in the issue-5
// report: what one VariableUpdate costs to encode and decode, as the server
// sends it today and trimmed of the fields a watcher already knows.
//
//	cd bench && go test -bench . -benchmem ./micro
package micro

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// full is an update as internal/feed builds it for an integer change.
func full() *pb.VariableUpdate {
	ts := timestamppb.New(time.Now())
	v := &pb.Variable{
		Id: "var_0123456789abcdef", Name: "temperature", Type: pb.VariableType_VARIABLE_TYPE_INTEGER,
		Value: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 1764250000123456789}}, Constraints: &pb.Constraints{},
		Version: 12345, UpdatedAt: ts, CreatedAt: ts, Source: "go-controller", Revision: 987654,
	}
	return &pb.VariableUpdate{
		VariableId: v.Id, Variable: v, OldValue: &pb.Value{Kind: &pb.Value_IntValue{IntValue: 1764250000123450000}},
		UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, Revision: 987654, UpdateSource: "go-controller",
		Timestamp: ts, VariableName: "temperature", LastInRevision: true,
	}
}

// slim is the same change without what the watcher already has or can
// derive: the variable's static fields (constraints, created_at, metadata,
// name/id/source repeated) and the second copy of the commit time.
func slim() *pb.VariableUpdate {
	u := full()
	u.Variable = &pb.Variable{Value: u.Variable.Value, Version: u.Variable.Version}
	u.UpdateSource = ""
	return u
}

func batch(u *pb.VariableUpdate, n int) *pb.VariableUpdateBatch {
	b := &pb.VariableUpdateBatch{}
	for range n {
		b.Updates = append(b.Updates, proto.CloneOf(u))
	}
	return b
}

func benchMarshal(b *testing.B, m proto.Message) {
	b.ReportMetric(float64(proto.Size(m)), "bytes")
	for b.Loop() {
		if _, err := proto.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUnmarshal[T proto.Message](b *testing.B, m proto.Message, mk func() T) {
	buf, _ := proto.Marshal(m)
	b.ReportMetric(float64(len(buf)), "bytes")
	for b.Loop() {
		if err := proto.Unmarshal(buf, mk()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalFull(b *testing.B) { benchMarshal(b, full()) }
func BenchmarkMarshalSlim(b *testing.B) { benchMarshal(b, slim()) }

// Size is what WatchVariableBatches computes (twice) per update today.
func BenchmarkSizeFull(b *testing.B) {
	u := full()
	for b.Loop() {
		_ = proto.Size(u)
	}
}

func BenchmarkUnmarshalFull(b *testing.B) {
	benchUnmarshal(b, full(), func() *pb.VariableUpdate { return &pb.VariableUpdate{} })
}

func BenchmarkUnmarshalSlim(b *testing.B) {
	benchUnmarshal(b, slim(), func() *pb.VariableUpdate { return &pb.VariableUpdate{} })
}

// Per batch of 256: divide ns/op by 256 for the cost per update.
func BenchmarkUnmarshalBatch256Full(b *testing.B) {
	benchUnmarshal(b, batch(full(), 256), func() *pb.VariableUpdateBatch { return &pb.VariableUpdateBatch{} })
}

func BenchmarkUnmarshalBatch256Slim(b *testing.B) {
	benchUnmarshal(b, batch(slim(), 256), func() *pb.VariableUpdateBatch { return &pb.VariableUpdateBatch{} })
}

func BenchmarkMarshalBatch256Full(b *testing.B) { benchMarshal(b, batch(full(), 256)) }
func BenchmarkMarshalBatch256Slim(b *testing.B) { benchMarshal(b, batch(slim(), 256)) }

func BenchmarkVTUnmarshalBatch256Full(b *testing.B) {
	buf, _ := proto.Marshal(batch(full(), 256))
	for b.Loop() {
		m := &pb.VariableUpdateBatch{}
		if err := m.UnmarshalVT(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVTMarshalBatch256Full(b *testing.B) {
	m := batch(full(), 256)
	for b.Loop() {
		if _, err := m.MarshalVT(); err != nil {
			b.Fatal(err)
		}
	}
}
