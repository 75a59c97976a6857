package values

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

const (
	tInt    = varbridgev1.VariableType_VARIABLE_TYPE_INTEGER
	tFloat  = varbridgev1.VariableType_VARIABLE_TYPE_FLOAT
	tString = varbridgev1.VariableType_VARIABLE_TYPE_STRING
	tBool   = varbridgev1.VariableType_VARIABLE_TYPE_BOOLEAN
	tChoice = varbridgev1.VariableType_VARIABLE_TYPE_CHOICE
	tModule = varbridgev1.VariableType_VARIABLE_TYPE_MODULE
	tEmb    = varbridgev1.VariableType_VARIABLE_TYPE_EMBEDDING
	tTensor = varbridgev1.VariableType_VARIABLE_TYPE_TENSOR
)

func intV(n int64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_IntValue{IntValue: n}}
}
func floatV(f float64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_FloatValue{FloatValue: f}}
}
func strV(s string) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_StringValue{StringValue: s}}
}
func boolV(b bool) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_BoolValue{BoolValue: b}}
}
func embV(fs ...float64) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_EmbeddingValue{EmbeddingValue: &varbridgev1.Embedding{Values: fs}}}
}
func tensorV(shape []int64, dtype string, data []byte) *varbridgev1.Value {
	return &varbridgev1.Value{Kind: &varbridgev1.Value_TensorValue{TensorValue: &varbridgev1.Tensor{Shape: shape, Dtype: dtype, Data: data}}}
}

// le builds little-endian bytes from a sequence of fixed-size values.
func le(vals ...any) []byte {
	var buf bytes.Buffer
	for _, v := range vals {
		if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

func f32s(fs ...float32) []byte {
	vals := make([]any, len(fs))
	for i, f := range fs {
		vals[i] = f
	}
	return le(vals...)
}

func ptr[T any](v T) *T { return &v }

func TestParseType(t *testing.T) {
	tests := []struct {
		in      string
		want    varbridgev1.VariableType
		wantErr bool
	}{
		{"integer", tInt, false},
		{"int", tInt, false},
		{"INT64", tInt, false},
		{"float", tFloat, false},
		{"double", tFloat, false},
		{"string", tString, false},
		{"str", tString, false},
		{"boolean", tBool, false},
		{"bool", tBool, false},
		{"choice", tChoice, false},
		{"module", tModule, false},
		{"embedding", tEmb, false},
		{"Tensor", tTensor, false},
		{"VARIABLE_TYPE_FLOAT", tFloat, false},
		{"", 0, true},
		{"complex", 0, true},
		{"unspecified", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseType(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseType(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseType(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, tn := range typeNames {
		if got := TypeName(tn.t); got != tn.name {
			t.Errorf("TypeName(%v) = %q, want %q", tn.t, got, tn.name)
		}
	}
}

func TestParseValue(t *testing.T) {
	tests := []struct {
		name    string
		typ     varbridgev1.VariableType
		in      string
		c       *varbridgev1.Constraints
		want    *varbridgev1.Value
		wantErr string // substring of the error; "" means no error
	}{
		{"int", tInt, "42", nil, intV(42), ""},
		{"int negative", tInt, "-7", nil, intV(-7), ""},
		{"int max", tInt, "9223372036854775807", nil, intV(math.MaxInt64), ""},
		{"int min", tInt, "-9223372036854775808", nil, intV(math.MinInt64), ""},
		{"int beyond float53 stays exact", tInt, "9007199254740993", nil, intV(9007199254740993), ""},
		{"int spaces", tInt, " 5 ", nil, intV(5), ""},
		{"int overflow", tInt, "9223372036854775808", nil, nil, "not an integer"},
		{"int float text", tInt, "1.5", nil, nil, "not an integer"},
		{"int hex refused", tInt, "0x10", nil, nil, "not an integer"},
		{"int empty", tInt, "", nil, nil, "not an integer"},

		{"float", tFloat, "0.7", nil, floatV(0.7), ""},
		{"float exp", tFloat, "1e-3", nil, floatV(0.001), ""},
		{"float int text", tFloat, "2", nil, floatV(2), ""},
		{"float inf", tFloat, "inf", nil, floatV(math.Inf(1)), ""},
		{"float -Inf", tFloat, "-Inf", nil, floatV(math.Inf(-1)), ""},
		{"float +Inf", tFloat, "+Inf", nil, floatV(math.Inf(1)), ""},
		{"float neg zero", tFloat, "-0", nil, floatV(math.Copysign(0, -1)), ""},
		{"float junk", tFloat, "warm", nil, nil, "not a number"},
		{"float range", tFloat, "1e400", nil, nil, "out of range"},

		{"bool true", tBool, "true", nil, boolV(true), ""},
		{"bool 0", tBool, "0", nil, boolV(false), ""},
		{"bool F", tBool, "F", nil, boolV(false), ""},
		{"bool yes", tBool, "yes", nil, nil, "not a boolean"},

		{"string", tString, "hello world", nil, strV("hello world"), ""},
		{"string empty", tString, "", nil, strV(""), ""},
		{"string keeps spaces", tString, "  x ", nil, strV("  x "), ""},
		{"choice", tChoice, "gpt-4", nil, strV("gpt-4"), ""},
		{"module", tModule, "ChainOfThought", nil, strV("ChainOfThought"), ""},

		{"embedding", tEmb, "[0.1, 0.2, -3]", nil, embV(0.1, 0.2, -3), ""},
		{"embedding empty", tEmb, "[]", nil, embV(), ""},
		{"embedding nan string", tEmb, `[1, "-Inf"]`, nil, embV(1, math.Inf(-1)), ""},
		{"embedding not array", tEmb, "0.1,0.2", nil, nil, "JSON array"},
		{"embedding null", tEmb, "null", nil, nil, "JSON array"},
		{"embedding bool elem", tEmb, "[true]", nil, nil, "element 0"},
		{"embedding nested", tEmb, "[[1]]", nil, nil, "element 0"},
		{"embedding trailing", tEmb, "[1] [2]", nil, nil, "trailing"},

		{"tensor float32", tTensor, `{"shape":[2,2],"dtype":"float32","data":[1,2,3,4]}`, nil,
			tensorV([]int64{2, 2}, "float32", f32s(1, 2, 3, 4)), ""},
		{"tensor nested infers shape", tTensor, `{"dtype":"float32","data":[[1,2,3],[4,5,6]]}`, nil,
			tensorV([]int64{2, 3}, "float32", f32s(1, 2, 3, 4, 5, 6)), ""},
		{"tensor bare array takes constraint dtype and shape", tTensor, `[1,2,3,4]`,
			&varbridgev1.Constraints{Dtype: ptr("int16"), Shape: []int64{2, 2}},
			tensorV([]int64{2, 2}, "int16", le(int16(1), int16(2), int16(3), int16(4))), ""},
		{"tensor wildcard constraint shape not used", tTensor, `[[1,2],[3,4]]`,
			&varbridgev1.Constraints{Dtype: ptr("uint8"), Shape: []int64{-1, 2}},
			tensorV([]int64{2, 2}, "uint8", []byte{1, 2, 3, 4}), ""},
		{"tensor explicit dtype beats constraint", tTensor, `{"dtype":"int8","data":[-1]}`,
			&varbridgev1.Constraints{Dtype: ptr("float64")},
			tensorV([]int64{1}, "int8", []byte{0xff}), ""},
		{"tensor scalar", tTensor, `{"shape":[],"dtype":"float64","data":2.5}`, nil,
			tensorV([]int64{}, "float64", le(2.5)), ""},
		{"tensor empty", tTensor, `{"shape":[0,3],"dtype":"int32","data":[]}`, nil,
			tensorV([]int64{0, 3}, "int32", []byte{}), ""},
		{"tensor int64 exact", tTensor, `{"dtype":"int64","data":[9007199254740993,-9223372036854775808]}`, nil,
			tensorV([]int64{2}, "int64", le(int64(9007199254740993), int64(math.MinInt64))), ""},
		{"tensor uint64 max", tTensor, `{"dtype":"uint64","data":[18446744073709551615]}`, nil,
			tensorV([]int64{1}, "uint64", le(uint64(math.MaxUint64))), ""},
		{"tensor uint32", tTensor, `{"dtype":"uint32","data":[4294967295, 0]}`, nil,
			tensorV([]int64{2}, "uint32", le(uint32(math.MaxUint32), uint32(0))), ""},
		{"tensor int32", tTensor, `{"dtype":"int32","data":[-2147483648]}`, nil,
			tensorV([]int64{1}, "int32", le(int32(math.MinInt32))), ""},
		{"tensor uint16", tTensor, `{"dtype":"uint16","data":[65535]}`, nil,
			tensorV([]int64{1}, "uint16", le(uint16(65535))), ""},
		{"tensor bool", tTensor, `{"dtype":"bool","data":[true,false,1,0]}`, nil,
			tensorV([]int64{4}, "bool", []byte{1, 0, 1, 0}), ""},
		{"tensor float16", tTensor, `{"dtype":"float16","data":[1,-2,0.5,65504,"NaN","-Inf"]}`, nil,
			tensorV([]int64{6}, "float16", le(uint16(0x3c00), uint16(0xc000), uint16(0x3800), uint16(0x7bff), uint16(0x7e00), uint16(0xfc00))), ""},
		{"tensor float64 nan", tTensor, `{"dtype":"float64","data":["inf"]}`, nil,
			tensorV([]int64{1}, "float64", le(math.Inf(1))), ""},
		{"tensor shape mismatch", tTensor, `{"shape":[3],"dtype":"float32","data":[1,2]}`, nil, nil, "holds 3 elements but data has 2"},
		{"tensor ragged", tTensor, `{"dtype":"float32","data":[[1,2],[3]]}`, nil, nil, "ragged"},
		{"tensor no dtype", tTensor, `{"data":[1]}`, nil, nil, "dtype is missing"},
		{"tensor bad dtype", tTensor, `{"dtype":"complex64","data":[1]}`, nil, nil, "unknown tensor dtype"},
		{"tensor no data", tTensor, `{"dtype":"int8"}`, nil, nil, "data is missing"},
		{"tensor unknown field", tTensor, `{"dtype":"int8","data":[1],"order":"C"}`, nil, nil, "unknown field"},
		{"tensor int8 overflow", tTensor, `{"dtype":"int8","data":[128]}`, nil, nil, "not a int8"},
		{"tensor uint8 negative", tTensor, `{"dtype":"uint8","data":[-1]}`, nil, nil, "not a uint8"},
		{"tensor int fraction", tTensor, `{"dtype":"int32","data":[1.5]}`, nil, nil, "not a int32"},
		{"tensor float32 overflow", tTensor, `{"dtype":"float32","data":[1e39]}`, nil, nil, "out of range for float32"},
		{"tensor float16 overflow", tTensor, `{"dtype":"float16","data":[65520]}`, nil, nil, "out of range for float16"},
		{"tensor bool junk", tTensor, `{"dtype":"bool","data":[2]}`, nil, nil, "not a bool"},
		{"tensor negative shape", tTensor, `{"shape":[-1],"dtype":"int8","data":[1]}`, nil, nil, "negative"},
		{"tensor not json", tTensor, `shape=2`, nil, nil, "tensor must be JSON"},

		{"unspecified type", varbridgev1.VariableType_VARIABLE_TYPE_UNSPECIFIED, "1", nil, nil, "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseValue(tt.typ, tt.in, tt.c)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseValue(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseValue(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseValue(%q) error = %v", tt.in, err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("ParseValue(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFloatNaN(t *testing.T) {
	for _, in := range []string{"nan", "NaN", "NAN"} {
		v, err := ParseValue(tFloat, in, nil)
		if err != nil || !math.IsNaN(v.GetFloatValue()) {
			t.Errorf("ParseValue(float, %q) = %v, %v; want NaN", in, v, err)
		}
	}
	v, err := ParseValue(tEmb, `["nan", 1]`, nil)
	if err != nil || !math.IsNaN(v.GetEmbeddingValue().GetValues()[0]) {
		t.Errorf("ParseValue(embedding, [\"nan\", 1]) = %v, %v; want NaN first", v, err)
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		name string
		v    *varbridgev1.Value
		want string
	}{
		{"nil", nil, "<unset>"},
		{"empty oneof", &varbridgev1.Value{}, "<unset>"},
		{"int", intV(-42), "-42"},
		{"int exact", intV(9007199254740993), "9007199254740993"},
		{"float", floatV(0.7), "0.7"},
		{"float whole", floatV(2), "2"},
		{"float big", floatV(1e21), "1e+21"},
		{"float nan", floatV(math.NaN()), "NaN"},
		{"float inf", floatV(math.Inf(-1)), "-Inf"},
		{"string", strV("a b"), "a b"},
		{"bool", boolV(true), "true"},
		{"embedding", embV(0.1, -2, math.Inf(1)), `[0.1,-2,"+Inf"]`},
		{"embedding empty", embV(), "[]"},
		{"tensor float32", tensorV([]int64{2, 2}, "float32", f32s(0.1, 2, 3, 4)),
			`{"shape":[2,2],"dtype":"float32","data":[0.1,2,3,4]}`},
		{"tensor int8", tensorV([]int64{2}, "int8", []byte{0xff, 0x7f}),
			`{"shape":[2],"dtype":"int8","data":[-1,127]}`},
		{"tensor uint64", tensorV([]int64{1}, "uint64", le(uint64(math.MaxUint64))),
			`{"shape":[1],"dtype":"uint64","data":[18446744073709551615]}`},
		{"tensor int64", tensorV([]int64{1}, "int64", le(int64(math.MinInt64))),
			`{"shape":[1],"dtype":"int64","data":[-9223372036854775808]}`},
		{"tensor bool", tensorV([]int64{2}, "bool", []byte{1, 0}),
			`{"shape":[2],"dtype":"bool","data":[true,false]}`},
		{"tensor float16", tensorV([]int64{3}, "float16", le(uint16(0x3c00), uint16(0x0001), uint16(0x7c00))),
			`{"shape":[3],"dtype":"float16","data":[1,6e-08,"+Inf"]}`},
		{"tensor nil shape", tensorV(nil, "uint8", []byte{7}),
			`{"shape":[],"dtype":"uint8","data":[7]}`},
		{"tensor bad length", tensorV([]int64{1}, "int32", []byte{1, 2, 3}),
			`{"shape":[1],"dtype":"int32","error":"3 data bytes is not a multiple of the int32 size 4"}`},
		{"tensor bad dtype", tensorV([]int64{1}, "q8", []byte{1}),
			`{"shape":[1],"dtype":"q8","error":"unknown dtype \"q8\""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatValue(tt.v); got != tt.want {
				t.Errorf("FormatValue = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestFormatParseRoundTrip: what `get` prints, `set` reads back to the same value.
func TestFormatParseRoundTrip(t *testing.T) {
	tests := []struct {
		typ varbridgev1.VariableType
		v   *varbridgev1.Value
	}{
		{tInt, intV(math.MaxInt64)},
		{tInt, intV(math.MinInt64)},
		{tFloat, floatV(0.1)},
		{tFloat, floatV(math.Pi)},
		{tFloat, floatV(math.SmallestNonzeroFloat64)},
		{tFloat, floatV(math.MaxFloat64)},
		{tFloat, floatV(math.Inf(1))},
		{tFloat, floatV(math.Copysign(0, -1))},
		{tBool, boolV(false)},
		{tString, strV("x = 'y'")},
		{tEmb, embV(0.1, 1e-300, math.Inf(-1))},
		{tTensor, tensorV([]int64{2, 1}, "float32", f32s(0.1, float32(math.Inf(-1))))},
		{tTensor, tensorV([]int64{2}, "float64", le(0.1, math.MaxFloat64))},
		{tTensor, tensorV([]int64{3}, "float16", le(uint16(0x3555), uint16(0x0001), uint16(0x8400)))},
		{tTensor, tensorV([]int64{2}, "int16", le(int16(-32768), int16(32767)))},
		{tTensor, tensorV([]int64{1, 2}, "uint64", le(uint64(1), uint64(math.MaxUint64)))},
		{tTensor, tensorV([]int64{2}, "bool", []byte{0, 1})},
		{tTensor, tensorV([]int64{}, "int8", []byte{0x80})},
	}
	for _, tt := range tests {
		text := FormatValue(tt.v)
		got, err := ParseValue(tt.typ, text, nil)
		if err != nil {
			t.Errorf("ParseValue(%s, %s) error = %v", TypeName(tt.typ), text, err)
			continue
		}
		if !proto.Equal(got, tt.v) {
			t.Errorf("round trip of %s through %s = %v, want %v", TypeName(tt.typ), text, got, tt.v)
		}
	}
}

func TestFloat16(t *testing.T) {
	tests := []struct {
		f    float64
		bits uint16
	}{
		{0, 0x0000},
		{math.Copysign(0, -1), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.333251953125, 0x3555},
		{65504, 0x7bff},                  // largest finite
		{65519, 0x7bff},                  // rounds down to it
		{6.103515625e-05, 0x0400},        // smallest normal
		{5.960464477539063e-08, 0x0001},  // smallest subnormal
		{2.9802322387695312e-08, 0x0000}, // half of it: ties to even (0)
		{8.940696716308594e-08, 0x0002},  // 1.5 subnormal units: ties to even (2)
		{1.0009765625, 0x3c01},
		{1.00048828125, 0x3c00}, // halfway between 1 and next: ties to even
		{1.00146484375, 0x3c02}, // halfway between 0x3c01 and 0x3c02: ties to even
		{2047.5, 0x6800},        // rounding carries into the next binade (2048)
		{math.Inf(1), 0x7c00},
	}
	for _, tt := range tests {
		got, err := float16Bits(tt.f)
		if err != nil || got != tt.bits {
			t.Errorf("float16Bits(%v) = %#04x, %v; want %#04x", tt.f, got, err, tt.bits)
		}
	}
	if _, err := float16Bits(65520); err == nil {
		t.Error("float16Bits(65520) should be out of range")
	}
	// Every finite float16 decodes and re-encodes to itself.
	for h := 0; h < 1<<16; h++ {
		f := float16Value(uint16(h))
		if math.IsNaN(f) {
			continue
		}
		got, err := float16Bits(f)
		if err != nil || got != uint16(h) {
			t.Fatalf("float16 %#04x -> %v -> %#04x, %v", h, f, got, err)
		}
		if math.IsInf(f, 0) {
			continue // formatted as a JSON string; covered above
		}
		// Its shortest text reads back to the same bits too.
		text := formatFloat16(uint16(h))
		g, err := parseFloat(text, 64)
		if err != nil {
			t.Fatalf("formatFloat16(%#04x) = %q: %v", h, text, err)
		}
		if got, err := float16Bits(g); err != nil || got != uint16(h) {
			t.Fatalf("float16 %#04x -> %q -> %#04x, %v", h, text, got, err)
		}
	}
}
