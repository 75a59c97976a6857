package main

import (
	"encoding/binary"
	"math"
	"testing"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestParseMeta(t *testing.T) {
	got, err := parseMeta([]string{"a=1", "b=x=y", "c="})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "1", "b": "x=y", "c": ""}
	if len(got) != len(want) {
		t.Fatalf("parseMeta = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("parseMeta[%q] = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"novalue", "=x"} {
		if _, err := parseMeta([]string{bad}); err == nil {
			t.Errorf("parseMeta(%q) should fail", bad)
		}
	}
	if m, err := parseMeta(nil); m != nil || err != nil {
		t.Errorf("parseMeta(nil) = %v, %v", m, err)
	}
}

func TestParseBatchArgs(t *testing.T) {
	got, err := parseBatchArgs([]string{"temperature=0.5", `vec=[1,2]`, "expr=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []batchUpdate{{"temperature", "0.5"}, {"vec", "[1,2]"}, {"expr", "a=b"}}
	if len(got) != len(want) {
		t.Fatalf("parseBatchArgs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseBatchArgs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range [][]string{{"novalue"}, {"=1"}, {"a=1", "a=2"}} {
		if _, err := parseBatchArgs(bad); err == nil {
			t.Errorf("parseBatchArgs(%q) should fail", bad)
		}
	}
}

func TestQuoteIfNeeded(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"gpt-4", "gpt-4"},
		{"0.7", "0.7"},
		{"", `""`},
		{"a b", `"a b"`},
		{"k=v", `"k=v"`},
		{`say "hi"`, `"say \"hi\""`},
		{"tab\there", `"tab\there"`},
		{"\x00", `"\x00"`},
		{"café", "café"},
	}
	for _, tt := range tests {
		if got := quoteIfNeeded(tt.in); got != tt.want {
			t.Errorf("quoteIfNeeded(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestVariableLine(t *testing.T) {
	v := &varbridgev1.Variable{
		Id: "var_1", Name: "temperature", Type: varbridgev1.VariableType_VARIABLE_TYPE_FLOAT, Value: floatV(0.9),
		Version: 2, Revision: 5, Source: "cli",
	}
	want := "temperature id=var_1 type=float value=0.9 version=2 revision=5 source=cli"
	if got := variableLine(v); got != want {
		t.Errorf("variableLine = %q, want %q", got, want)
	}
	v.Value, v.Type = tensorV([]int64{2}, "float32", f32s(1, 2)), tTensor
	want = `temperature id=var_1 type=tensor value={"shape":[2],"dtype":"float32","data":[1,2]} version=2 revision=5 source=cli`
	if got := variableLine(v); got != want {
		t.Errorf("variableLine = %q, want %q", got, want)
	}
	v.Value, v.Type, v.Source = strV("hello world"), tString, ""
	want = `temperature id=var_1 type=string value="hello world" version=2 revision=5 source=""`
	if got := variableLine(v); got != want {
		t.Errorf("variableLine = %q, want %q", got, want)
	}
}

func floatV(f float64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_FloatValue{FloatValue: f}}
}

// f32s is the little-endian bytes of float32 tensor elements.
func f32s(fs ...float32) []byte {
	b := make([]byte, 0, 4*len(fs))
	for _, f := range fs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

const (
	tString = varbridgev1.VariableType_VARIABLE_TYPE_STRING
	tTensor = varbridgev1.VariableType_VARIABLE_TYPE_TENSOR
)

func strV(s string) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_StringValue{StringValue: s}}
}

func tensorV(shape []int64, dtype string, data []byte) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_TensorValue{TensorValue: &varbridgev1.Tensor{Shape: shape, Dtype: dtype, Data: data}}}
}
