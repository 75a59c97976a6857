package store

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// dtypeSizes maps each tensor dtype to its element size in bytes.
var dtypeSizes = map[string]int{
	"bool": 1, "int8": 1, "uint8": 1,
	"int16": 2, "uint16": 2, "float16": 2,
	"int32": 4, "uint32": 4, "float32": 4,
	"int64": 8, "uint64": 8, "float64": 8,
}

// maxTensorRank bounds shapes so that a hostile shape cannot overflow the
// element count computation.
const maxTensorRank = 32

// typeNames are the short names of the known types, computed once: every
// update a Go watcher receives names its type.
var typeNames = func() map[pb.VariableType]string {
	m := make(map[pb.VariableType]string, len(pb.VariableType_name))
	for n := range pb.VariableType_name {
		t := pb.VariableType(n)
		m[t] = typeName(t)
	}
	return m
}()

// TypeName returns the short, lower-case name of a variable type ("float").
func TypeName(t pb.VariableType) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return typeName(t)
}

func typeName(t pb.VariableType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "VARIABLE_TYPE_"))
}

// article prefixes a type name with "a" or "an".
func article(name string) string {
	if strings.ContainsRune("aeiou", rune(name[0])) {
		return "an " + name
	}
	return "a " + name
}

// rules is a variable's validated constraints, with its pattern compiled once.
type rules struct {
	typ     pb.VariableType
	c       *pb.Constraints
	pattern *regexp.Regexp
}

// newRules checks that constraints make sense for the type: every constraint
// must apply to it, bounds must be ordered, the pattern must compile.
func newRules(t pb.VariableType, c *pb.Constraints) (*rules, error) {
	if _, ok := pb.VariableType_name[int32(t)]; !ok || t == pb.VariableType_VARIABLE_TYPE_UNSPECIFIED {
		return nil, fieldErr("type", "must be one of integer, float, string, boolean, choice, module, embedding, tensor; got %v", t)
	}
	if c == nil {
		c = &pb.Constraints{}
	}
	r := &rules{typ: t, c: c}
	applies := map[string]bool{}
	switch t {
	case pb.VariableType_VARIABLE_TYPE_INTEGER, pb.VariableType_VARIABLE_TYPE_FLOAT:
		applies["min"], applies["max"] = true, true
	case pb.VariableType_VARIABLE_TYPE_STRING:
		applies["min_length"], applies["max_length"], applies["pattern"] = true, true, true
	case pb.VariableType_VARIABLE_TYPE_CHOICE:
		applies["choices"] = true
		if len(c.Choices) == 0 {
			return nil, fieldErr("constraints.choices", "a choice variable needs at least one choice")
		}
	case pb.VariableType_VARIABLE_TYPE_MODULE:
		applies["allowed_modules"] = true
	case pb.VariableType_VARIABLE_TYPE_EMBEDDING:
		applies["dimensions"] = true
	case pb.VariableType_VARIABLE_TYPE_TENSOR:
		applies["shape"], applies["dtype"] = true, true
	}
	set := map[string]bool{
		"min": c.Min != nil, "max": c.Max != nil,
		"min_length": c.MinLength != nil, "max_length": c.MaxLength != nil, "pattern": c.Pattern != nil,
		"choices": len(c.Choices) > 0, "allowed_modules": len(c.AllowedModules) > 0,
		"dimensions": c.Dimensions != nil, "shape": len(c.Shape) > 0, "dtype": c.Dtype != nil,
	}
	for _, name := range []string{"min", "max", "min_length", "max_length", "pattern", "choices", "allowed_modules", "dimensions", "shape", "dtype"} {
		if set[name] && !applies[name] {
			return nil, fieldErr("constraints."+name, "does not apply to %s variable", article(TypeName(t)))
		}
	}
	if c.Min != nil && math.IsNaN(*c.Min) || c.Max != nil && math.IsNaN(*c.Max) {
		return nil, fieldErr("constraints", "min and max must be numbers, not NaN")
	}
	if c.Min != nil && c.Max != nil && *c.Min > *c.Max {
		return nil, fieldErr("constraints", "min %v is greater than max %v", *c.Min, *c.Max)
	}
	if c.MinLength != nil && *c.MinLength < 0 || c.MaxLength != nil && *c.MaxLength < 0 {
		return nil, fieldErr("constraints", "min_length and max_length must not be negative")
	}
	if c.MinLength != nil && c.MaxLength != nil && *c.MinLength > *c.MaxLength {
		return nil, fieldErr("constraints", "min_length %d is greater than max_length %d", *c.MinLength, *c.MaxLength)
	}
	if c.Pattern != nil {
		re, err := regexp.Compile(*c.Pattern)
		if err != nil {
			return nil, fieldErr("constraints.pattern", "%v", err)
		}
		r.pattern = re
	}
	if c.Dimensions != nil && *c.Dimensions <= 0 {
		return nil, fieldErr("constraints.dimensions", "must be positive, got %d", *c.Dimensions)
	}
	if len(c.Shape) > maxTensorRank {
		return nil, fieldErr("constraints.shape", "rank %d exceeds %d", len(c.Shape), maxTensorRank)
	}
	for _, d := range c.Shape {
		if d < -1 {
			return nil, fieldErr("constraints.shape", "axis sizes must be >= 0 or -1 (any), got %d", d)
		}
	}
	if c.Dtype != nil {
		if _, ok := dtypeSizes[*c.Dtype]; !ok {
			return nil, fieldErr("constraints.dtype", "unknown dtype %q", *c.Dtype)
		}
	}
	return r, nil
}

// check returns nil when v is a valid value for a variable named name.
func (r *rules) check(name string, v *pb.Value) error {
	if err := checkKind(r.typ, v); err != nil {
		return fmt.Errorf("variable %q: %w", name, err)
	}
	c := r.c
	violation := func(constraint, reason string) error {
		return &ConstraintError{Variable: name, Constraint: constraint, Value: FormatValue(v), Reason: reason}
	}
	switch r.typ {
	case pb.VariableType_VARIABLE_TYPE_INTEGER:
		n := v.GetIntValue()
		if c.Min != nil && intBelow(n, *c.Min) {
			return violation("min", fmt.Sprintf("must be >= %v", *c.Min))
		}
		if c.Max != nil && intAbove(n, *c.Max) {
			return violation("max", fmt.Sprintf("must be <= %v", *c.Max))
		}
	case pb.VariableType_VARIABLE_TYPE_FLOAT:
		x := v.GetFloatValue()
		if math.IsNaN(x) && (c.Min != nil || c.Max != nil) {
			return violation("min", "NaN is outside every range")
		}
		if c.Min != nil && x < *c.Min {
			return violation("min", fmt.Sprintf("must be >= %v", *c.Min))
		}
		if c.Max != nil && x > *c.Max {
			return violation("max", fmt.Sprintf("must be <= %v", *c.Max))
		}
	case pb.VariableType_VARIABLE_TYPE_STRING:
		s := v.GetStringValue()
		n := int64(utf8.RuneCountInString(s))
		if c.MinLength != nil && n < *c.MinLength {
			return violation("min_length", fmt.Sprintf("length %d is less than %d", n, *c.MinLength))
		}
		if c.MaxLength != nil && n > *c.MaxLength {
			return violation("max_length", fmt.Sprintf("length %d is more than %d", n, *c.MaxLength))
		}
		if r.pattern != nil && !r.pattern.MatchString(s) {
			return violation("pattern", fmt.Sprintf("does not match %q", *c.Pattern))
		}
	case pb.VariableType_VARIABLE_TYPE_CHOICE:
		if !slices.Contains(c.Choices, v.GetStringValue()) {
			return violation("choices", fmt.Sprintf("must be one of %s", quoteList(c.Choices)))
		}
	case pb.VariableType_VARIABLE_TYPE_MODULE:
		if len(c.AllowedModules) > 0 && !slices.Contains(c.AllowedModules, v.GetStringValue()) {
			return violation("allowed_modules", fmt.Sprintf("must be one of %s", quoteList(c.AllowedModules)))
		}
	case pb.VariableType_VARIABLE_TYPE_EMBEDDING:
		if n := int64(len(v.GetEmbeddingValue().GetValues())); c.Dimensions != nil && n != *c.Dimensions {
			return violation("dimensions", fmt.Sprintf("has %d dimensions, want %d", n, *c.Dimensions))
		}
	case pb.VariableType_VARIABLE_TYPE_TENSOR:
		t := v.GetTensorValue()
		if c.Dtype != nil && t.Dtype != *c.Dtype {
			return violation("dtype", fmt.Sprintf("dtype %s, want %s", t.Dtype, *c.Dtype))
		}
		if len(c.Shape) > 0 && !shapeMatches(c.Shape, t.Shape) {
			return violation("shape", fmt.Sprintf("shape %v, want %v", t.Shape, c.Shape))
		}
	}
	return nil
}

// twoTo63 is 2^63, the first float64 above every int64.
const twoTo63 = float64(1 << 63)

// intBelow reports n < min exactly: converting n to float64 would round
// integers past 2^53 and let a value just outside a bound through.
func intBelow(n int64, min float64) bool {
	switch {
	case min >= twoTo63:
		return true
	case min <= -twoTo63:
		return false
	}
	return n < int64(math.Ceil(min))
}

// intAbove reports n > max exactly.
func intAbove(n int64, max float64) bool {
	switch {
	case max >= twoTo63:
		return false
	case max < -twoTo63:
		return true
	}
	return n > int64(math.Floor(max))
}

func shapeMatches(want, got []int64) bool {
	if len(want) != len(got) {
		return false
	}
	for i, w := range want {
		if w != -1 && w != got[i] {
			return false
		}
	}
	return true
}

// checkKind verifies that the value's oneof fits the type and is well formed.
func checkKind(t pb.VariableType, v *pb.Value) error {
	if v == nil || v.Kind == nil {
		return fieldErr("value", "is required for %s variable", article(TypeName(t)))
	}
	var ok bool
	switch t {
	case pb.VariableType_VARIABLE_TYPE_INTEGER:
		_, ok = v.Kind.(*pb.Value_IntValue)
	case pb.VariableType_VARIABLE_TYPE_FLOAT:
		_, ok = v.Kind.(*pb.Value_FloatValue)
	case pb.VariableType_VARIABLE_TYPE_STRING, pb.VariableType_VARIABLE_TYPE_CHOICE, pb.VariableType_VARIABLE_TYPE_MODULE:
		_, ok = v.Kind.(*pb.Value_StringValue)
	case pb.VariableType_VARIABLE_TYPE_BOOLEAN:
		_, ok = v.Kind.(*pb.Value_BoolValue)
	case pb.VariableType_VARIABLE_TYPE_EMBEDDING:
		var e *pb.Value_EmbeddingValue
		if e, ok = v.Kind.(*pb.Value_EmbeddingValue); ok && e.EmbeddingValue == nil {
			return fieldErr("value.embedding_value", "is empty")
		}
	case pb.VariableType_VARIABLE_TYPE_TENSOR:
		var tv *pb.Value_TensorValue
		if tv, ok = v.Kind.(*pb.Value_TensorValue); ok {
			return checkTensor(tv.TensorValue)
		}
	}
	if !ok {
		return fieldErr("value", "%s variable cannot hold %s", article(TypeName(t)), kindName(v))
	}
	return nil
}

func checkTensor(t *pb.Tensor) error {
	if t == nil {
		return fieldErr("value.tensor_value", "is empty")
	}
	size, ok := dtypeSizes[t.Dtype]
	if !ok {
		return fieldErr("value.tensor_value.dtype", "unknown dtype %q", t.Dtype)
	}
	if len(t.Shape) > maxTensorRank {
		return fieldErr("value.tensor_value.shape", "rank %d exceeds %d", len(t.Shape), maxTensorRank)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fieldErr("value.tensor_value.shape", "axis sizes must not be negative, got %v", t.Shape)
		}
		if d > 0 && n > math.MaxInt64/d {
			return fieldErr("value.tensor_value.shape", "%v has too many elements", t.Shape)
		}
		n *= d
	}
	// The byte count is compared without forming n*size when it would not
	// fit in an int64: a message must not print a wrapped, negative size.
	if n > math.MaxInt64/int64(size) {
		return fieldErr("value.tensor_value.data", "has %d bytes; shape %v of %s needs more than %d", len(t.Data), t.Shape, t.Dtype, int64(math.MaxInt64))
	}
	if int64(len(t.Data)) != n*int64(size) {
		return fieldErr("value.tensor_value.data", "has %d bytes; shape %v of %s needs %d", len(t.Data), t.Shape, t.Dtype, n*int64(size))
	}
	return nil
}

func kindName(v *pb.Value) string {
	switch v.Kind.(type) {
	case *pb.Value_IntValue:
		return "an int_value"
	case *pb.Value_FloatValue:
		return "a float_value"
	case *pb.Value_StringValue:
		return "a string_value"
	case *pb.Value_BoolValue:
		return "a bool_value"
	case *pb.Value_EmbeddingValue:
		return "an embedding_value"
	case *pb.Value_TensorValue:
		return "a tensor_value"
	}
	return "no value"
}

// ValuesEqual reports whether a and b are the same value bit for bit, so that
// writing NaN over NaN is a no-op while 0.0 over -0.0 is a change.
func ValuesEqual(a, b *pb.Value) bool {
	switch x := a.GetKind().(type) {
	case *pb.Value_IntValue:
		y, ok := b.GetKind().(*pb.Value_IntValue)
		return ok && x.IntValue == y.IntValue
	case *pb.Value_FloatValue:
		y, ok := b.GetKind().(*pb.Value_FloatValue)
		return ok && math.Float64bits(x.FloatValue) == math.Float64bits(y.FloatValue)
	case *pb.Value_StringValue:
		y, ok := b.GetKind().(*pb.Value_StringValue)
		return ok && x.StringValue == y.StringValue
	case *pb.Value_BoolValue:
		y, ok := b.GetKind().(*pb.Value_BoolValue)
		return ok && x.BoolValue == y.BoolValue
	case *pb.Value_EmbeddingValue:
		y, ok := b.GetKind().(*pb.Value_EmbeddingValue)
		return ok && slices.EqualFunc(x.EmbeddingValue.GetValues(), y.EmbeddingValue.GetValues(), func(p, q float64) bool {
			return math.Float64bits(p) == math.Float64bits(q)
		})
	case *pb.Value_TensorValue:
		y, ok := b.GetKind().(*pb.Value_TensorValue)
		return ok && x.TensorValue.GetDtype() == y.TensorValue.GetDtype() &&
			slices.Equal(x.TensorValue.GetShape(), y.TensorValue.GetShape()) &&
			bytes.Equal(x.TensorValue.GetData(), y.TensorValue.GetData())
	}
	return a.GetKind() == nil && b.GetKind() == nil
}

// FormatValue renders a value for messages, abbreviated to stay readable.
func FormatValue(v *pb.Value) string {
	switch x := v.GetKind().(type) {
	case *pb.Value_IntValue:
		return fmt.Sprint(x.IntValue)
	case *pb.Value_FloatValue:
		return fmt.Sprint(x.FloatValue)
	case *pb.Value_StringValue:
		s := x.StringValue
		if len(s) > 64 {
			s = s[:61] + "..."
		}
		return fmt.Sprintf("%q", s)
	case *pb.Value_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *pb.Value_EmbeddingValue:
		vals := x.EmbeddingValue.GetValues()
		if len(vals) > 8 {
			return fmt.Sprintf("%v... (%d values)", vals[:8], len(vals))
		}
		return fmt.Sprint(vals)
	case *pb.Value_TensorValue:
		return fmt.Sprintf("tensor(%s, shape=%v)", x.TensorValue.GetDtype(), x.TensorValue.GetShape())
	}
	return "<none>"
}

// maxScalarBytes is the most an int, float or bool Value encodes to: a tag
// byte and a ten-byte varint.
const maxScalarBytes = 11

// scalar reports whether v is an int, float or bool value.
func scalar(v *pb.Value) bool {
	switch v.GetKind().(type) {
	case *pb.Value_IntValue, *pb.Value_FloatValue, *pb.Value_BoolValue:
		return true
	}
	return false
}
