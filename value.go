package varbridge

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Type is a variable's declared type, by its short wire name.
type Type string

// The variable types. Their Go values are: integer int64, float float64,
// string/choice/module string, boolean bool, embedding []float64, tensor
// Tensor.
const (
	TypeInteger   Type = "integer"
	TypeFloat     Type = "float"
	TypeString    Type = "string"
	TypeBoolean   Type = "boolean"
	TypeChoice    Type = "choice"
	TypeModule    Type = "module"
	TypeEmbedding Type = "embedding"
	TypeTensor    Type = "tensor"
)

var typeToProto = map[Type]pb.VariableType{
	TypeInteger: pb.VariableType_VARIABLE_TYPE_INTEGER, TypeFloat: pb.VariableType_VARIABLE_TYPE_FLOAT,
	TypeString: pb.VariableType_VARIABLE_TYPE_STRING, TypeBoolean: pb.VariableType_VARIABLE_TYPE_BOOLEAN,
	TypeChoice: pb.VariableType_VARIABLE_TYPE_CHOICE, TypeModule: pb.VariableType_VARIABLE_TYPE_MODULE,
	TypeEmbedding: pb.VariableType_VARIABLE_TYPE_EMBEDDING, TypeTensor: pb.VariableType_VARIABLE_TYPE_TENSOR,
}

// Proto returns the wire enum for t, or VARIABLE_TYPE_UNSPECIFIED when t is
// not a known type.
func (t Type) Proto() pb.VariableType { return typeToProto[t] }

// protoToType inverts typeToProto: every update a Go watcher receives
// names its type, so the known ones are looked up, not formatted.
var protoToType = func() map[pb.VariableType]Type {
	m := make(map[pb.VariableType]Type, len(typeToProto))
	for t, p := range typeToProto {
		m[p] = t
	}
	return m
}()

// TypeFromProto returns the Type of a wire enum ("" for UNSPECIFIED). A
// type this client does not know (a newer server's) gets its wire name in
// lower case without the prefix, as the store names it.
func TypeFromProto(t pb.VariableType) Type {
	if t == pb.VariableType_VARIABLE_TYPE_UNSPECIFIED {
		return ""
	}
	if n, ok := protoToType[t]; ok {
		return n
	}
	return Type(strings.ToLower(strings.TrimPrefix(t.String(), "VARIABLE_TYPE_")))
}

// Tensor is an n-dimensional array in row-major order: Data holds
// product(Shape) little-endian elements of DType (one of bool, int8, int16,
// int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64).
type Tensor struct {
	Shape []int64
	DType string
	Data  []byte
}

// TensorFromFloat32 builds a float32 tensor of the given shape from data.
func TensorFromFloat32(shape []int64, data []float32) Tensor {
	b := make([]byte, 0, 4*len(data))
	for _, f := range data {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return Tensor{Shape: slices.Clone(shape), DType: "float32", Data: b}
}

// TensorFromFloat64 builds a float64 tensor of the given shape from data.
func TensorFromFloat64(shape []int64, data []float64) Tensor {
	b := make([]byte, 0, 8*len(data))
	for _, f := range data {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
	}
	return Tensor{Shape: slices.Clone(shape), DType: "float64", Data: b}
}

// TensorFromInt32 builds an int32 tensor of the given shape from data.
func TensorFromInt32(shape []int64, data []int32) Tensor {
	b := make([]byte, 0, 4*len(data))
	for _, x := range data {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return Tensor{Shape: slices.Clone(shape), DType: "int32", Data: b}
}

// TensorFromInt64 builds an int64 tensor of the given shape from data.
func TensorFromInt64(shape []int64, data []int64) Tensor {
	b := make([]byte, 0, 8*len(data))
	for _, x := range data {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return Tensor{Shape: slices.Clone(shape), DType: "int64", Data: b}
}

// Float32s decodes a float32 tensor's elements.
func (t Tensor) Float32s() ([]float32, error) {
	if err := t.want("float32", 4); err != nil {
		return nil, err
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// Float64s decodes a float64 tensor's elements.
func (t Tensor) Float64s() ([]float64, error) {
	if err := t.want("float64", 8); err != nil {
		return nil, err
	}
	out := make([]float64, len(t.Data)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

// Int32s decodes an int32 tensor's elements.
func (t Tensor) Int32s() ([]int32, error) {
	if err := t.want("int32", 4); err != nil {
		return nil, err
	}
	out := make([]int32, len(t.Data)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// Int64s decodes an int64 tensor's elements.
func (t Tensor) Int64s() ([]int64, error) {
	if err := t.want("int64", 8); err != nil {
		return nil, err
	}
	out := make([]int64, len(t.Data)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

func (t Tensor) want(dtype string, size int) error {
	if t.DType != dtype {
		return fmt.Errorf("%w: tensor has dtype %q, not %s", ErrInvalidArgument, t.DType, dtype)
	}
	if len(t.Data)%size != 0 {
		return fmt.Errorf("%w: tensor data has %d bytes, not a multiple of %d", ErrInvalidArgument, len(t.Data), size)
	}
	return nil
}

// Constraints restrict the values a variable accepts; nil and empty fields
// mean "no constraint". Which ones apply depends on the type (see the wire
// contract's Constraints).
type Constraints struct {
	Min, Max             *float64 // integer and float
	MinLength, MaxLength *int64   // string, in characters
	Pattern              *string  // string, RE2, unanchored
	Choices              []string // choice
	AllowedModules       []string // module
	Dimensions           *int64   // embedding
	Shape                []int64  // tensor; -1 matches any size in an axis
	DType                *string  // tensor
}

// Ptr returns a pointer to v, for the optional fields of Constraints.
func Ptr[T any](v T) *T { return &v }

func (c *Constraints) proto() *pb.Constraints {
	if c == nil {
		return nil
	}
	return &pb.Constraints{
		Min: c.Min, Max: c.Max, MinLength: c.MinLength, MaxLength: c.MaxLength, Pattern: c.Pattern,
		Choices: slices.Clone(c.Choices), AllowedModules: slices.Clone(c.AllowedModules),
		Dimensions: c.Dimensions, Shape: slices.Clone(c.Shape), Dtype: c.DType,
	}
}

func constraintsFromProto(c *pb.Constraints) *Constraints {
	if c == nil {
		return nil
	}
	return &Constraints{
		Min: c.Min, Max: c.Max, MinLength: c.MinLength, MaxLength: c.MaxLength, Pattern: c.Pattern,
		Choices: slices.Clone(c.Choices), AllowedModules: slices.Clone(c.AllowedModules),
		Dimensions: c.Dimensions, Shape: slices.Clone(c.Shape), DType: c.Dtype,
	}
}

// Variable is a typed, versioned value in a session.
type Variable struct {
	ID          string // server-assigned, stable
	Name        string // unique in its session
	Type        Type
	Value       any // int64, float64, string, bool, []float64 or Tensor
	Constraints *Constraints
	Metadata    map[string]string
	Version     int64  // 1 at registration, +1 per change
	Revision    int64  // the session revision of the last change
	Source      string // who last wrote it
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

func variableFromProto(v *pb.Variable) *Variable {
	if v == nil {
		return nil
	}
	return &Variable{
		ID: v.GetId(), Name: v.GetName(), Type: TypeFromProto(v.GetType()), Value: FromProto(v.GetValue()),
		Constraints: constraintsFromProto(v.GetConstraints()), Metadata: maps.Clone(v.GetMetadata()),
		Version: v.GetVersion(), Revision: v.GetRevision(), Source: v.GetSource(),
		CreatedAt: asTime(v.GetCreatedAt()), UpdatedAt: asTime(v.GetUpdatedAt()),
	}
}

func asTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// FromProto converts a wire value to its Go value: int64, float64, string,
// bool, []float64 (embedding) or Tensor; nil when v is unset.
func FromProto(v *pb.Value) any {
	switch x := v.GetKind().(type) {
	case *pb.Value_IntValue:
		return x.IntValue
	case *pb.Value_FloatValue:
		return x.FloatValue
	case *pb.Value_StringValue:
		return x.StringValue
	case *pb.Value_BoolValue:
		return x.BoolValue
	case *pb.Value_EmbeddingValue:
		return slices.Clone(x.EmbeddingValue.GetValues())
	case *pb.Value_TensorValue:
		t := x.TensorValue
		return Tensor{Shape: slices.Clone(t.GetShape()), DType: t.GetDtype(), Data: slices.Clone(t.GetData())}
	}
	return nil
}

// ToProto converts a Go value to a wire value. With a type (t != ""), numbers
// are converted to it (an int for a float variable, a whole float64 for an
// integer one) and []float32 or []float64 make an embedding. Without a type
// the Go type decides: integers give int_value, floats float_value, strings
// string_value, []float64/[]float32 embedding_value, Tensor tensor_value.
func ToProto(t Type, v any) (*pb.Value, error) {
	if pv, ok := v.(*pb.Value); ok {
		return pv, nil
	}
	switch t {
	case TypeFloat:
		if f, ok := asFloat(v); ok {
			return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}}, nil
		}
	case TypeInteger:
		if i, ok := asInt(v); ok {
			return &pb.Value{Kind: &pb.Value_IntValue{IntValue: i}}, nil
		}
		if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return &pb.Value{Kind: &pb.Value_IntValue{IntValue: int64(f)}}, nil
		}
	}
	if i, ok := asInt(v); ok {
		return &pb.Value{Kind: &pb.Value_IntValue{IntValue: i}}, nil
	}
	if f, ok := asFloat(v); ok {
		return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}}, nil
	}
	switch x := v.(type) {
	case string:
		return &pb.Value{Kind: &pb.Value_StringValue{StringValue: x}}, nil
	case bool:
		return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: x}}, nil
	case []float64:
		return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: slices.Clone(x)}}}, nil
	case []float32:
		vals := make([]float64, len(x))
		for i, f := range x {
			vals[i] = float64(f)
		}
		return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: vals}}}, nil
	case Tensor:
		return tensorValue(x), nil
	case *Tensor:
		if x != nil {
			return tensorValue(*x), nil
		}
	}
	return nil, fmt.Errorf("%w: cannot use a %T as a varbridge value", ErrInvalidArgument, v)
}

func tensorValue(t Tensor) *pb.Value {
	return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{
		Shape: slices.Clone(t.Shape), Dtype: t.DType, Data: slices.Clone(t.Data),
	}}}
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	}
	if i, ok := asInt(v); ok {
		return float64(i), true
	}
	return 0, false
}
