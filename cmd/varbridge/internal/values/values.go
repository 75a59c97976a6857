// Package values parses command-line text into typed varbridge values and
// formats values back into text, for the varbridge CLI. FormatValue's output
// parses back with ParseValue into the same value (floats use the shortest
// round-tripping form, NaN and infinities included), so what `varbridge get`
// prints can be fed to `varbridge set`.
package values

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/varbridge/varbridge"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// typeNames lists the CLI's type names with their wire types, in the order
// help text lists them; the mapping itself is varbridge.Type's.
var typeNames = func() []struct {
	name string
	t    varbridgev1.VariableType
} {
	all := []varbridge.Type{
		varbridge.TypeInteger, varbridge.TypeFloat, varbridge.TypeString, varbridge.TypeBoolean,
		varbridge.TypeChoice, varbridge.TypeModule, varbridge.TypeEmbedding, varbridge.TypeTensor,
	}
	out := make([]struct {
		name string
		t    varbridgev1.VariableType
	}, len(all))
	for i, t := range all {
		out[i].name, out[i].t = string(t), t.Proto()
	}
	return out
}()

// typeAliases are extra spellings accepted on the command line.
var typeAliases = map[string]string{
	"int":    "integer",
	"int64":  "integer",
	"double": "float",
	"str":    "string",
	"bool":   "boolean",
}

// typeList is "integer|float|..." for help and error text.
// TypeList lists the CLI's type names, for help text.
func TypeList() string {
	names := make([]string, len(typeNames))
	for i, tn := range typeNames {
		names[i] = tn.name
	}
	return strings.Join(names, "|")
}

// ParseType reads a type name: integer, float, string, boolean, choice, module,
// embedding or tensor (any case; also int, bool, ... and VARIABLE_TYPE_*).
func ParseType(s string) (varbridgev1.VariableType, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, "variable_type_")
	if alias, ok := typeAliases[name]; ok {
		name = alias
	}
	if t := varbridge.Type(name).Proto(); t != varbridgev1.VariableType_VARIABLE_TYPE_UNSPECIFIED {
		return t, nil
	}
	return varbridgev1.VariableType_VARIABLE_TYPE_UNSPECIFIED,
		fmt.Errorf("unknown type %q: want one of %s", s, TypeList())
}

// TypeName is the CLI name of t ("float"), or the enum's name for unknown values.
func TypeName(t varbridgev1.VariableType) string {
	if name := varbridge.TypeFromProto(t); name.Proto() == t && name != "" { // a known type
		return string(name)
	}
	return t.String()
}

// ParseValue parses s as a value of type t. c may be nil; when it is not, a
// tensor's dtype and shape default to the constraint's (a shape with -1 axes
// is not used as a default).
//
//   - integer: a base-10 int64, exactly ("9007199254740993" stays exact).
//   - float: strconv.ParseFloat syntax, including nan, inf, -inf.
//   - boolean: strconv.ParseBool syntax (true, false, 1, 0, t, f).
//   - string, choice, module: the text as is.
//   - embedding: a JSON array of numbers, e.g. [0.1, 0.2]; an element may also
//     be a string such as "NaN" or "-Inf".
//   - tensor: JSON {"shape":[2,2],"dtype":"float32","data":[1,2,3,4]}; data may
//     be nested ([[1,2],[3,4]]), in which case shape may be left out. A bare
//     array is taken as data, with dtype and shape from c.
func ParseValue(t varbridgev1.VariableType, s string, c *varbridgev1.Constraints) (*varbridgev1.Value, error) {
	switch t {
	case varbridgev1.VariableType_VARIABLE_TYPE_INTEGER:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("not an integer (int64): %q", s)
		}
		return &varbridgev1.Value{Kind: &varbridgev1.Value_IntValue{IntValue: n}}, nil
	case varbridgev1.VariableType_VARIABLE_TYPE_FLOAT:
		f, err := parseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		return &varbridgev1.Value{Kind: &varbridgev1.Value_FloatValue{FloatValue: f}}, nil
	case varbridgev1.VariableType_VARIABLE_TYPE_BOOLEAN:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("not a boolean: %q (want true or false)", s)
		}
		return &varbridgev1.Value{Kind: &varbridgev1.Value_BoolValue{BoolValue: b}}, nil
	case varbridgev1.VariableType_VARIABLE_TYPE_STRING,
		varbridgev1.VariableType_VARIABLE_TYPE_CHOICE,
		varbridgev1.VariableType_VARIABLE_TYPE_MODULE:
		return &varbridgev1.Value{Kind: &varbridgev1.Value_StringValue{StringValue: s}}, nil
	case varbridgev1.VariableType_VARIABLE_TYPE_EMBEDDING:
		e, err := parseEmbedding(s)
		if err != nil {
			return nil, err
		}
		return &varbridgev1.Value{Kind: &varbridgev1.Value_EmbeddingValue{EmbeddingValue: e}}, nil
	case varbridgev1.VariableType_VARIABLE_TYPE_TENSOR:
		tn, err := parseTensor(s, c)
		if err != nil {
			return nil, err
		}
		return &varbridgev1.Value{Kind: &varbridgev1.Value_TensorValue{TensorValue: tn}}, nil
	default:
		return nil, fmt.Errorf("cannot parse a value of type %s", t)
	}
}

// parseFloat accepts ParseFloat syntax ("0.7", "1e-3", "nan", "inf", "-Inf").
func parseFloat(s string, bits int) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), bits)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("number out of range for float%d: %q", bits, s)
		}
		return 0, fmt.Errorf("not a number: %q", s)
	}
	return f, nil
}

func parseEmbedding(s string) (*varbridgev1.Embedding, error) {
	var raw []json.RawMessage
	if err := strictUnmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("embedding must be a JSON array of numbers, e.g. [0.1, 0.2]: %w", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("embedding must be a JSON array of numbers, e.g. [0.1, 0.2], not %s", strings.TrimSpace(s))
	}
	values := make([]float64, len(raw))
	for i, r := range raw {
		f, err := jsonFloat(r, 64)
		if err != nil {
			return nil, fmt.Errorf("embedding element %d: %w", i, err)
		}
		values[i] = f
	}
	return &varbridgev1.Embedding{Values: values}, nil
}

// jsonFloat reads a JSON number, or a string in ParseFloat syntax ("NaN", "-Inf").
func jsonFloat(r json.RawMessage, bits int) (float64, error) {
	r = bytes.TrimSpace(r)
	if len(r) > 0 && r[0] == '"' {
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return 0, err
		}
		return parseFloat(s, bits)
	}
	if !isJSONNumber(r) {
		return 0, fmt.Errorf("not a number: %s", r)
	}
	return parseFloat(string(r), bits)
}

func isJSONNumber(r []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(r))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return false
	}
	n, ok := v.(json.Number)
	return ok && n != ""
}

// strictUnmarshal decodes exactly one JSON value, refusing trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// tensorJSON is the CLI's text form of a tensor.
type tensorJSON struct {
	Shape *[]int64        `json:"shape,omitempty"`
	Dtype string          `json:"dtype,omitempty"`
	Data  json.RawMessage `json:"data"`
}

// dtypeSize is the item size in bytes of each dtype the wire contract allows.
var dtypeSize = map[string]int{
	"bool": 1, "int8": 1, "uint8": 1,
	"int16": 2, "uint16": 2, "float16": 2,
	"int32": 4, "uint32": 4, "float32": 4,
	"int64": 8, "uint64": 8, "float64": 8,
}

// DtypeList lists the tensor dtypes, for help text.
const DtypeList = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64"

func parseTensor(s string, c *varbridgev1.Constraints) (*varbridgev1.Tensor, error) {
	const usage = `tensor must be JSON like {"shape":[2,2],"dtype":"float32","data":[1,2,3,4]}`
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "[") {
		s = `{"data":` + t + `}`
	}
	var tj tensorJSON
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tj); err != nil {
		return nil, fmt.Errorf("%s: %w", usage, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data after the JSON value", usage)
	}
	dtype := tj.Dtype
	if dtype == "" && c != nil && c.Dtype != nil {
		dtype = c.GetDtype()
	}
	if dtype == "" {
		return nil, fmt.Errorf("%s: dtype is missing (one of %s)", usage, DtypeList)
	}
	size, ok := dtypeSize[dtype]
	if !ok {
		return nil, fmt.Errorf("unknown tensor dtype %q: want one of %s", dtype, DtypeList)
	}
	if len(tj.Data) == 0 {
		return nil, fmt.Errorf("%s: data is missing", usage)
	}
	var data any
	if err := strictUnmarshal(tj.Data, &data); err != nil {
		return nil, fmt.Errorf("tensor data: %w", err)
	}
	var elems []any
	nested, err := flatten(data, 0, &elems)
	if err != nil {
		return nil, fmt.Errorf("tensor data: %w", err)
	}
	var shape []int64
	switch {
	case tj.Shape != nil:
		shape = *tj.Shape
	case c != nil && len(c.GetShape()) > 0 && !hasWildcard(c.GetShape()):
		shape = c.GetShape()
	default:
		shape = nested
	}
	count := int64(1)
	for i, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("tensor shape %v: axis %d is negative", shape, i)
		}
		if d > 0 && count > math.MaxInt32/d {
			return nil, fmt.Errorf("tensor shape %v is too large", shape)
		}
		count *= d
	}
	if count != int64(len(elems)) {
		return nil, fmt.Errorf("tensor shape %v holds %d elements but data has %d", shape, count, len(elems))
	}
	buf := make([]byte, 0, len(elems)*size)
	for i, e := range elems {
		buf, err = appendElem(buf, dtype, e)
		if err != nil {
			return nil, fmt.Errorf("tensor element %d: %w", i, err)
		}
	}
	if shape == nil {
		shape = []int64{}
	}
	return &varbridgev1.Tensor{Shape: shape, Dtype: dtype, Data: buf}, nil
}

func hasWildcard(shape []int64) bool {
	for _, d := range shape {
		if d < 0 {
			return true
		}
	}
	return false
}

// flatten appends the scalars of a (possibly nested, rectangular) JSON array to
// out in row-major order and returns the array's shape. A scalar has shape [].
func flatten(v any, depth int, out *[]any) ([]int64, error) {
	if depth > 32 {
		return nil, errors.New("nested too deeply")
	}
	arr, ok := v.([]any)
	if !ok {
		*out = append(*out, v)
		return []int64{}, nil
	}
	if len(arr) == 0 {
		return []int64{0}, nil
	}
	var inner []int64
	for i, item := range arr {
		s, err := flatten(item, depth+1, out)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			inner = s
		} else if !equalShape(inner, s) {
			return nil, fmt.Errorf("ragged array: item %d has shape %v, item 0 has %v", i, s, inner)
		}
	}
	return append([]int64{int64(len(arr))}, inner...), nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// appendElem encodes one JSON scalar (json.Number, string, bool) as dtype, little-endian.
func appendElem(buf []byte, dtype string, e any) ([]byte, error) {
	le := binary.LittleEndian
	if dtype == "bool" {
		switch x := e.(type) {
		case bool:
			if x {
				return append(buf, 1), nil
			}
			return append(buf, 0), nil
		case json.Number:
			switch x.String() {
			case "0":
				return append(buf, 0), nil
			case "1":
				return append(buf, 1), nil
			}
		}
		return nil, fmt.Errorf("not a bool: %v", e)
	}
	switch dtype {
	case "float16", "float32", "float64":
		var text string
		switch x := e.(type) {
		case json.Number:
			text = x.String()
		case string:
			text = x // "NaN", "Inf", "-Inf"
		default:
			return nil, fmt.Errorf("not a number: %v", e)
		}
		switch dtype {
		case "float64":
			f, err := parseFloat(text, 64)
			if err != nil {
				return nil, err
			}
			return le.AppendUint64(buf, math.Float64bits(f)), nil
		case "float32":
			f, err := parseFloat(text, 32)
			if err != nil {
				return nil, err
			}
			return le.AppendUint32(buf, math.Float32bits(float32(f))), nil
		default:
			f, err := parseFloat(text, 64)
			if err != nil {
				return nil, err
			}
			h, err := float16Bits(f)
			if err != nil {
				return nil, err
			}
			return le.AppendUint16(buf, h), nil
		}
	}
	n, ok := e.(json.Number)
	if !ok {
		return nil, fmt.Errorf("not an integer: %v", e)
	}
	bits := dtypeSize[dtype] * 8
	if strings.HasPrefix(dtype, "uint") {
		u, err := strconv.ParseUint(n.String(), 10, bits)
		if err != nil {
			return nil, fmt.Errorf("not a %s: %s", dtype, n)
		}
		return appendUint(buf, u, bits), nil
	}
	i, err := strconv.ParseInt(n.String(), 10, bits)
	if err != nil {
		return nil, fmt.Errorf("not a %s: %s", dtype, n)
	}
	return appendUint(buf, uint64(i), bits), nil
}

func appendUint(buf []byte, u uint64, bits int) []byte {
	le := binary.LittleEndian
	switch bits {
	case 8:
		return append(buf, byte(u))
	case 16:
		return le.AppendUint16(buf, uint16(u))
	case 32:
		return le.AppendUint32(buf, uint32(u))
	default:
		return le.AppendUint64(buf, u)
	}
}

// float16Bits converts f to IEEE 754 binary16, rounding to nearest even. A
// finite f beyond float16's range (65504) is an error rather than a silent Inf.
func float16Bits(f float64) (uint16, error) {
	if math.IsNaN(f) {
		return 0x7e00, nil
	}
	sign := uint16(0)
	if math.Signbit(f) {
		sign = 0x8000
		f = -f
	}
	if math.IsInf(f, 0) {
		return sign | 0x7c00, nil
	}
	if f == 0 {
		return sign, nil
	}
	// Scale to units of the smallest subnormal (2^-24) or of the value's ulp,
	// then round to nearest even.
	_, e := math.Frexp(f) // f = frac * 2^e with frac in [0.5, 1)
	exp := e - 1
	if exp < -14 {
		exp = -14 // subnormal range shares the minimum exponent
	}
	ulp := math.Ldexp(1, exp-10)
	m := math.RoundToEven(f / ulp) // 1024..2048 for normals, 0..1024 for subnormals
	if m >= 2048 {                 // rounding carried into the next binade
		m /= 2
		exp++
	}
	if m < 1024 { // subnormal
		return sign | uint16(m), nil
	}
	if exp > 15 {
		return 0, fmt.Errorf("number out of range for float16: %v", f)
	}
	return sign | uint16(exp+15)<<10 | (uint16(m) - 1024), nil
}

// float16Value converts IEEE 754 binary16 bits to a float64 (exactly).
func float16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	default:
		return sign * math.Ldexp(1024+frac, exp-25)
	}
}

// formatFloat16 is the shortest decimal that reads back as the float16 h.
func formatFloat16(h uint16) string {
	f := float16Value(h)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return jsonFloatText(f, 64)
	}
	for prec := 1; prec < 5; prec++ {
		s := strconv.FormatFloat(f, 'g', prec, 64)
		if g, err := strconv.ParseFloat(s, 64); err == nil {
			if back, err := float16Bits(g); err == nil && back == h {
				return s
			}
		}
	}
	return strconv.FormatFloat(f, 'g', 5, 64)
}

// FormatValue renders v, whole, as text that ParseValue reads back into the
// same value: the CLI never shortens a value, so that what `get` prints can
// be passed back to `set`.
func FormatValue(v *varbridgev1.Value) string {
	if v == nil {
		return "<unset>"
	}
	switch k := v.GetKind().(type) {
	case *varbridgev1.Value_IntValue:
		return strconv.FormatInt(k.IntValue, 10)
	case *varbridgev1.Value_FloatValue:
		return formatFloat(k.FloatValue, 64)
	case *varbridgev1.Value_StringValue:
		return k.StringValue
	case *varbridgev1.Value_BoolValue:
		return strconv.FormatBool(k.BoolValue)
	case *varbridgev1.Value_EmbeddingValue:
		items := make([]string, len(k.EmbeddingValue.GetValues()))
		for i, f := range k.EmbeddingValue.GetValues() {
			items[i] = jsonFloatText(f, 64)
		}
		return "[" + strings.Join(items, ",") + "]"
	case *varbridgev1.Value_TensorValue:
		return formatTensor(k.TensorValue)
	default:
		return "<unset>"
	}
}

// formatFloat is the shortest text that parses back to f at the given size:
// "0.7", "1e+21", "NaN", "+Inf", "-Inf".
func formatFloat(f float64, bits int) string {
	return strconv.FormatFloat(f, 'g', -1, bits)
}

// jsonFloatText is formatFloat, with NaN and infinities as JSON strings.
func jsonFloatText(f float64, bits int) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.Quote(formatFloat(f, bits))
	}
	return formatFloat(f, bits)
}

func formatTensor(t *varbridgev1.Tensor) string {
	shape, _ := json.Marshal(t.GetShape())
	if t.GetShape() == nil {
		shape = []byte("[]")
	}
	items, err := decodeTensor(t)
	if err != nil {
		return fmt.Sprintf(`{"shape":%s,"dtype":%q,"error":%q}`, shape, t.GetDtype(), err.Error())
	}
	return fmt.Sprintf(`{"shape":%s,"dtype":%q,"data":[%s]}`, shape, t.GetDtype(), strings.Join(items, ","))
}

// decodeTensor renders each element of t's little-endian data as JSON text.
func decodeTensor(t *varbridgev1.Tensor) ([]string, error) {
	size, ok := dtypeSize[t.GetDtype()]
	if !ok {
		return nil, fmt.Errorf("unknown dtype %q", t.GetDtype())
	}
	data := t.GetData()
	if len(data)%size != 0 {
		return nil, fmt.Errorf("%d data bytes is not a multiple of the %s size %d", len(data), t.GetDtype(), size)
	}
	le := binary.LittleEndian
	items := make([]string, 0, len(data)/size)
	for off := 0; off < len(data); off += size {
		b := data[off : off+size]
		var s string
		switch t.GetDtype() {
		case "bool":
			s = strconv.FormatBool(b[0] != 0)
		case "int8":
			s = strconv.FormatInt(int64(int8(b[0])), 10)
		case "uint8":
			s = strconv.FormatUint(uint64(b[0]), 10)
		case "int16":
			s = strconv.FormatInt(int64(int16(le.Uint16(b))), 10)
		case "uint16":
			s = strconv.FormatUint(uint64(le.Uint16(b)), 10)
		case "int32":
			s = strconv.FormatInt(int64(int32(le.Uint32(b))), 10)
		case "uint32":
			s = strconv.FormatUint(uint64(le.Uint32(b)), 10)
		case "int64":
			s = strconv.FormatInt(int64(le.Uint64(b)), 10)
		case "uint64":
			s = strconv.FormatUint(le.Uint64(b), 10)
		case "float16":
			s = formatFloat16(le.Uint16(b))
		case "float32":
			s = jsonFloatText(float64(math.Float32frombits(le.Uint32(b))), 32)
		case "float64":
			s = jsonFloatText(math.Float64frombits(le.Uint64(b)), 64)
		}
		items = append(items, s)
	}
	return items, nil
}
