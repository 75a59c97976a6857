package codec_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/varbridge/varbridge/internal/codec"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func intVal(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }

func update(i int, v *pb.Value) *pb.VariableUpdate {
	ts := timestamppb.New(time.Unix(1764250000, int64(i)))
	return &pb.VariableUpdate{
		VariableId: "var_0123456789abcdef", UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE,
		Variable: &pb.Variable{
			Id: "var_0123456789abcdef", Name: "temperature ✓", Type: pb.VariableType_VARIABLE_TYPE_FLOAT, Value: v,
			Constraints: &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(2), Shape: []int64{2, 3}, Choices: []string{"a", "b"}},
			Metadata:    map[string]string{"owner": "go", "note": "ünïcode"}, Version: int64(i), UpdatedAt: ts, CreatedAt: ts, Source: "go", Revision: int64(i),
		},
		OldValue: intVal(-1), Revision: int64(i), UpdateSource: "go", UpdateMetadata: map[string]string{"k": "v"},
		Timestamp: ts, VariableName: "temperature ✓", LastInRevision: i%2 == 0,
	}
}

func messages() map[string]proto.Message {
	values := []*pb.Value{
		intVal(-9223372036854775808),
		{Kind: &pb.Value_FloatValue{FloatValue: -0.0}},
		{Kind: &pb.Value_StringValue{StringValue: "héllo"}},
		{Kind: &pb.Value_BoolValue{BoolValue: true}},
		{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: []float64{1.5, -2, 3e300}}}},
		{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Shape: []int64{2, 2}, Dtype: "float32", Data: []byte{0, 0, 128, 63, 0, 0, 0, 64, 1, 2, 3, 4, 5, 6, 7, 8}}}},
	}
	small := &pb.VariableUpdateBatch{}
	for i, v := range values {
		small.Updates = append(small.Updates, update(i, v))
	}
	big := &pb.VariableUpdateBatch{} // past grpc's buffer pooling threshold
	for i := range 200 {
		big.Updates = append(big.Updates, update(i, values[i%len(values)]))
	}
	return map[string]proto.Message{
		"small batch": small,
		"big batch":   big,
		"one update":  update(7, values[5]),
		"set request": &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x", Value: values[2], Metadata: map[string]string{"a": "b"}, ExpectedVersion: proto.Int64(3)},
		"register": &pb.RegisterVariableRequest{SessionId: "s", Name: "t", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: values[5],
			Constraints: &pb.Constraints{Shape: []int64{2, 2}, Dtype: proto.String("float32")}},
		"empty":                    &pb.WatchVariablesRequest{},
		"health (no fast methods)": &healthpb.HealthCheckRequest{Service: "varbridge.v1.BridgeService"},
	}
}

// Both codecs write what protobuf-go reads back equal, and read what
// protobuf-go writes.
func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		c    encoding.CodecV2
	}{{"server", codec.Server}, {"client", codec.Client}} {
		for name, m := range messages() {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				if c.c.Name() != "proto" {
					t.Fatalf("codec name %q, want proto", c.c.Name())
				}
				data, err := c.c.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				got := m.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(data.Materialize(), got); err != nil {
					t.Fatalf("protobuf-go cannot read the codec's bytes: %v", err)
				}
				if !proto.Equal(got, m) {
					t.Errorf("codec -> protobuf-go: got %v, want %v", got, m)
				}
				data.Free()

				buf, err := proto.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				got = m.ProtoReflect().New().Interface()
				if err := c.c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(buf[:len(buf)/2]), mem.SliceBuffer(buf[len(buf)/2:])}, got); err != nil {
					t.Fatalf("codec cannot read protobuf-go's bytes: %v", err)
				}
				if !proto.Equal(got, m) {
					t.Errorf("protobuf-go -> codec: got %v, want %v", got, m)
				}
			})
		}
	}
}

// The server's codec decodes with protobuf-go, which refuses a string that
// is not UTF-8; what does not decode reaches the server's request check
// empty, carrying its error (DecodeError), so the client hears
// INVALID_ARGUMENT rather than grpc-go's INTERNAL. The client's codec fails
// truncated input outright.
func TestBadInput(t *testing.T) {
	good, _ := proto.Marshal(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "x"})
	for name, bad := range map[string][]byte{
		"invalid UTF-8": {0x0a, 0x02, 0xff, 0xfe}, // SetVariableRequest.session_id = "\xff\xfe"
		"truncated":     good[:len(good)-1],
	} {
		req := &pb.SetVariableRequest{}
		if err := codec.Server.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, req); err != nil {
			t.Fatalf("%s: server codec: %v; want the error carried by the message", name, err)
		}
		err := codec.DecodeError(req)
		if err == nil || (name == "invalid UTF-8" && !strings.Contains(err.Error(), "UTF-8")) {
			t.Errorf("%s: DecodeError = %v", name, err)
		}
		if req.GetSessionId() != "" || req.GetVariableIdentifier() != "" {
			t.Errorf("%s: a request that did not decode kept fields: %v", name, req)
		}
	}
	if err := codec.DecodeError(&pb.SetVariableRequest{SessionId: "s"}); err != nil {
		t.Errorf("DecodeError of a decoded request: %v", err)
	}
	upd, _ := proto.Marshal(update(1, intVal(5)))
	if err := codec.Client.Unmarshal(mem.BufferSlice{mem.SliceBuffer(upd[:len(upd)-3])}, &pb.VariableUpdate{}); err == nil {
		t.Errorf("client codec: truncated input decoded without error")
	}
	for _, c := range []encoding.CodecV2{codec.Server, codec.Client} {
		if _, err := c.Marshal("not a message"); err == nil {
			t.Errorf("marshalling a string: no error")
		}
	}
}

// Every varbridge message has the generated fast methods, so none silently
// takes the slow path.
func TestEveryMessageIsFast(t *testing.T) {
	type fast interface {
		SizeVT() int
		MarshalToSizedBufferVT([]byte) (int, error)
		UnmarshalVT([]byte) error
	}
	n := 0
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		if mt.Descriptor().ParentFile().Package() != "varbridge.v1" {
			return true
		}
		n++
		if _, ok := mt.New().Interface().(fast); !ok {
			t.Errorf("%s has no vtproto methods: is protoc-gen-go-vtproto still in scripts/genproto.sh?", mt.Descriptor().FullName())
		}
		return true
	})
	if n < 20 {
		t.Errorf("found only %d varbridge.v1 messages", n)
	}
}
