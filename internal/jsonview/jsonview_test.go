package jsonview

import (
	"bytes"
	"math"
	"strings"
	"testing"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestFromProto(t *testing.T) {
	change := &pb.VariableUpdate{
		VariableId: "var_1", VariableName: "temp", UpdateType: pb.UpdateType_UPDATE_TYPE_VALUE_CHANGE, Revision: 7,
		Variable: &pb.Variable{Type: pb.VariableType_VARIABLE_TYPE_FLOAT, Version: 3,
			Value: &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: math.Inf(1)}}},
		OldValue:     &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: 0.5}},
		UpdateSource: "go", UpdateMetadata: map[string]string{"why": "<test>"},
	}
	var b bytes.Buffer
	if err := WriteLine(&b, FromProto(change, "")); err != nil {
		t.Fatal(err)
	}
	want := `{"revision":7,"update":"change","identifier":"temp","name":"temp","id":"var_1","type":"float","old":0.5,"new":"Infinity","version":3,"source":"go","metadata":{"why":"<test>"}}` + "\n"
	if b.String() != want {
		t.Errorf("change:\n got %s want %s", b.String(), want)
	}

	deleted := &pb.VariableUpdate{
		VariableId: "var_2", UpdateType: pb.UpdateType_UPDATE_TYPE_DELETED, Revision: 8,
		Variable: &pb.Variable{Name: "t", Type: pb.VariableType_VARIABLE_TYPE_TENSOR,
			Value: &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Shape: []int64{2}, Dtype: "uint8", Data: []byte{1, 2}}}}},
		OldValue: &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Shape: []int64{2}, Dtype: "uint8", Data: []byte{1, 2}}}},
	}
	u := FromProto(deleted, "var_2")
	if u.Update != "deleted" || u.Name != "t" || u.Identifier != "var_2" || u.New != nil || u.Type != "tensor" {
		t.Errorf("deleted: %+v", u)
	}
	b.Reset()
	_ = WriteLine(&b, u)
	if !strings.Contains(b.String(), `"old":{"data":"AQI=","dtype":"uint8","shape":[2]}`) {
		t.Errorf("tensor old value: %s", b.String())
	}

	for typ, want := range map[pb.UpdateType]string{
		pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE: "initial", pb.UpdateType_UPDATE_TYPE_RESYNC: "resync",
	} {
		if got := FromProto(&pb.VariableUpdate{UpdateType: typ}, "").Update; got != want {
			t.Errorf("%v: update %q, want %q", typ, got, want)
		}
	}
}
