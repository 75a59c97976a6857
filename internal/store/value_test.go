package store_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// constraintCase is one value against one variable definition. base is a
// value the definition accepts, used as the initial value for the Set check.
type constraintCase struct {
	name       string
	typ        pb.VariableType
	c          *pb.Constraints
	base       *pb.Value
	v          *pb.Value
	constraint string // "" when v is accepted
}

func constraintCases() []constraintCase {
	intRange := &pb.Constraints{Min: f64(0), Max: f64(10)}
	floatRange := &pb.Constraints{Min: f64(0), Max: f64(2)}
	strLen := &pb.Constraints{MinLength: i64(2), MaxLength: i64(5)}
	pattern := &pb.Constraints{Pattern: sp("^[a-z]+$")}
	choices := &pb.Constraints{Choices: []string{"gpt-4o", "claude", "llama"}}
	modules := &pb.Constraints{AllowedModules: []string{"dspy.Predict", "dspy.ChainOfThought"}}
	dims := &pb.Constraints{Dimensions: i64(3)}
	shape := &pb.Constraints{Shape: []int64{2, 3}, Dtype: sp("float32")}
	wild := &pb.Constraints{Shape: []int64{-1, 3}}
	dtype := &pb.Constraints{Dtype: sp("int8")}
	return []constraintCase{
		// integer
		{"int/min edge", tInt, intRange, intV(5), intV(0), ""},
		{"int/max edge", tInt, intRange, intV(5), intV(10), ""},
		{"int/inside", tInt, intRange, intV(0), intV(7), ""},
		{"int/below min", tInt, intRange, intV(5), intV(-1), "min"},
		{"int/above max", tInt, intRange, intV(5), intV(11), "max"},
		{"int/min only", tInt, &pb.Constraints{Min: f64(-3)}, intV(0), intV(math.MaxInt64), ""},
		{"int/min only below", tInt, &pb.Constraints{Min: f64(-3)}, intV(0), intV(math.MinInt64), "min"},
		{"int/max only above", tInt, &pb.Constraints{Max: f64(100)}, intV(0), intV(101), "max"},
		{"int/unconstrained", tInt, nil, intV(0), intV(math.MinInt64), ""},
		// float
		{"float/min edge", tFloat, floatRange, floatV(1), floatV(0), ""},
		{"float/max edge", tFloat, floatRange, floatV(1), floatV(2), ""},
		{"float/inside", tFloat, floatRange, floatV(0.7), floatV(0.9), ""},
		{"float/below min", tFloat, floatRange, floatV(1), floatV(-0.1), "min"},
		{"float/above max", tFloat, floatRange, floatV(1), floatV(2.0001), "max"},
		{"float/+inf", tFloat, floatRange, floatV(1), floatV(math.Inf(1)), "max"},
		{"float/-inf", tFloat, floatRange, floatV(1), floatV(math.Inf(-1)), "min"},
		{"float/NaN with bounds", tFloat, floatRange, floatV(1), floatV(math.NaN()), "min"},
		{"float/NaN unconstrained", tFloat, nil, floatV(1), floatV(math.NaN()), ""},
		{"float/inf unconstrained", tFloat, nil, floatV(1), floatV(math.Inf(1)), ""},
		// string
		{"string/min_length edge", tString, strLen, strV("abc"), strV("ab"), ""},
		{"string/max_length edge", tString, strLen, strV("abc"), strV("abcde"), ""},
		{"string/too short", tString, strLen, strV("abc"), strV("a"), "min_length"},
		{"string/empty too short", tString, strLen, strV("abc"), strV(""), "min_length"},
		{"string/too long", tString, strLen, strV("abc"), strV("abcdef"), "max_length"},
		{"string/length counts characters", tString, strLen, strV("abc"), strV("héllo"), ""},
		{"string/multibyte too long", tString, strLen, strV("abc"), strV("日本語日本語"), "max_length"},
		{"string/pattern match", tString, pattern, strV("abc"), strV("hello"), ""},
		{"string/pattern mismatch", tString, pattern, strV("abc"), strV("Hello"), "pattern"},
		{"string/pattern unanchored", tString, &pb.Constraints{Pattern: sp("b+")}, strV("b"), strV("abba"), ""},
		{"string/pattern unanchored miss", tString, &pb.Constraints{Pattern: sp("b+")}, strV("b"), strV("aca"), "pattern"},
		{"string/unconstrained", tString, nil, strV(""), strV(strings.Repeat("z", 1000)), ""},
		// boolean
		{"bool/true", tBool, nil, boolV(false), boolV(true), ""},
		{"bool/false", tBool, nil, boolV(true), boolV(false), ""},
		// choice
		{"choice/member", tChoice, choices, strV("claude"), strV("llama"), ""},
		{"choice/not member", tChoice, choices, strV("claude"), strV("mistral"), "choices"},
		{"choice/empty", tChoice, choices, strV("claude"), strV(""), "choices"},
		{"choice/case matters", tChoice, choices, strV("claude"), strV("Claude"), "choices"},
		// module
		{"module/allowed", tModule, modules, strV("dspy.Predict"), strV("dspy.ChainOfThought"), ""},
		{"module/not allowed", tModule, modules, strV("dspy.Predict"), strV("os.system"), "allowed_modules"},
		{"module/unconstrained", tModule, nil, strV("a"), strV("anything.at.all"), ""},
		// embedding
		{"embedding/dimensions", tEmb, dims, embV(0, 0, 0), embV(0.1, 0.2, 0.3), ""},
		{"embedding/too few", tEmb, dims, embV(0, 0, 0), embV(0.1, 0.2), "dimensions"},
		{"embedding/too many", tEmb, dims, embV(0, 0, 0), embV(1, 2, 3, 4), "dimensions"},
		{"embedding/empty", tEmb, dims, embV(0, 0, 0), embV(), "dimensions"},
		{"embedding/unconstrained", tEmb, nil, embV(1), embV(1, 2, 3, 4, 5), ""},
		// tensor
		{"tensor/exact", tTensor, shape, tensorV("float32", 2, 3), tensorV("float32", 2, 3), ""},
		{"tensor/transposed", tTensor, shape, tensorV("float32", 2, 3), tensorV("float32", 3, 2), "shape"},
		{"tensor/rank", tTensor, shape, tensorV("float32", 2, 3), tensorV("float32", 6), "shape"},
		{"tensor/dtype", tTensor, shape, tensorV("float32", 2, 3), tensorV("float64", 2, 3), "dtype"},
		{"tensor/wildcard", tTensor, wild, tensorV("int64", 1, 3), tensorV("uint8", 7, 3), ""},
		{"tensor/wildcard zero", tTensor, wild, tensorV("int64", 1, 3), tensorV("int64", 0, 3), ""},
		{"tensor/wildcard fixed axis", tTensor, wild, tensorV("int64", 1, 3), tensorV("int64", 3, 4), "shape"},
		{"tensor/wildcard rank", tTensor, wild, tensorV("int64", 1, 3), tensorV("int64", 1, 3, 1), "shape"},
		{"tensor/dtype only", tTensor, dtype, tensorV("int8", 4), tensorV("int8", 2, 2, 2), ""},
		{"tensor/dtype only wrong", tTensor, dtype, tensorV("int8", 4), tensorV("uint8", 4), "dtype"},
		{"tensor/unconstrained", tTensor, nil, tensorV("bool", 1), tensorV("float16", 2, 2), ""},
		{"tensor/scalar", tTensor, nil, tensorV("float64"), tensorV("float64"), ""},
	}
}

func checkConstraintError(t *testing.T, err error, name, constraint string, v *pb.Value) {
	t.Helper()
	var ce *store.ConstraintError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v (%T), want *store.ConstraintError", err, err)
	}
	if !errors.Is(err, store.ErrConstraint) {
		t.Errorf("%v does not match ErrConstraint", err)
	}
	if ce.Constraint != constraint || ce.Variable != name {
		t.Errorf("ConstraintError{Variable: %q, Constraint: %q}, want %q, %q", ce.Variable, ce.Constraint, name, constraint)
	}
	msg := err.Error()
	for _, part := range []string{name, constraint, store.FormatValue(v)} {
		if !strings.Contains(msg, part) {
			t.Errorf("message %q does not name %q", msg, part)
		}
	}
}

func TestConstraintsOnRegister(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	for i, tc := range constraintCases() {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("reg%d", i)
			before := snap(t, st, sid)
			v, rev, err := st.Register(sid, store.Register{Name: name, Type: tc.typ, Value: tc.v, Constraints: tc.c})
			if tc.constraint == "" {
				if err != nil {
					t.Fatalf("Register(%s) rejected: %v", store.FormatValue(tc.v), err)
				}
				if v.Version != 1 || rev != before.rev+1 || !store.ValuesEqual(v.Value, tc.v) || v.Type != tc.typ {
					t.Errorf("registered %v at %d", v, rev)
				}
				return
			}
			checkConstraintError(t, err, name, tc.constraint, tc.v)
			before.assertUnchanged(t, st, sid)
			if _, _, err := st.Get(sid, name); !errors.Is(err, store.ErrVariableNotFound) {
				t.Errorf("rejected variable exists: %v", err)
			}
		})
	}
}

func TestConstraintsOnSet(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	for i, tc := range constraintCases() {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("set%d", i)
			base := register(t, st, sid, name, tc.typ, tc.base, tc.c)
			before := snap(t, st, sid)
			for _, ident := range []string{name, base.Id} {
				res, err := set1(st, sid, ident, tc.v)
				if tc.constraint == "" {
					if err != nil {
						t.Fatalf("Set(%s) rejected: %v", store.FormatValue(tc.v), err)
					}
					if !store.ValuesEqual(res.Variables[0].GetValue(), tc.v) {
						t.Errorf("value after set = %v", res.Variables[0].GetValue())
					}
					continue
				}
				checkConstraintError(t, err, name, tc.constraint, tc.v)
				before.assertUnchanged(t, st, sid)
			}
		})
	}
}

// Values of the wrong kind or malformed values are bad arguments, not
// constraint violations, and change nothing.
func TestWrongKindAndMalformedValues(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	bigShape := make([]int64, 33)
	for i := range bigShape {
		bigShape[i] = 1
	}
	cases := []struct {
		name  string
		typ   pb.VariableType
		c     *pb.Constraints
		base  *pb.Value
		v     *pb.Value
		field string
	}{
		{"int into float", tFloat, nil, floatV(0), intV(1), "value"},
		{"float into int", tInt, nil, intV(0), floatV(1), "value"},
		{"string into int", tInt, nil, intV(0), strV("1"), "value"},
		{"string into bool", tBool, nil, boolV(true), strV("true"), "value"},
		{"bool into string", tString, nil, strV(""), boolV(true), "value"},
		{"int into choice", tChoice, &pb.Constraints{Choices: []string{"a"}}, strV("a"), intV(0), "value"},
		{"bool into module", tModule, nil, strV("m"), boolV(false), "value"},
		{"float into embedding", tEmb, nil, embV(1), floatV(1), "value"},
		{"embedding into tensor", tTensor, nil, tensorV("int8", 1), embV(1), "value"},
		{"tensor into embedding", tEmb, nil, embV(1), tensorV("float64", 1), "value"},
		{"nil embedding", tEmb, nil, embV(1), &pb.Value{Kind: &pb.Value_EmbeddingValue{}}, "value.embedding_value"},
		{"nil tensor", tTensor, nil, tensorV("int8", 1), &pb.Value{Kind: &pb.Value_TensorValue{}}, "value.tensor_value"},
		{"tensor unknown dtype", tTensor, nil, tensorV("int8", 1), rawTensor("complex64", []int64{1}, make([]byte, 8)), "value.tensor_value.dtype"},
		{"tensor empty dtype", tTensor, nil, tensorV("int8", 1), rawTensor("", []int64{1}, make([]byte, 1)), "value.tensor_value.dtype"},
		{"tensor short data", tTensor, nil, tensorV("int8", 1), rawTensor("float32", []int64{2, 3}, make([]byte, 23)), "value.tensor_value.data"},
		{"tensor long data", tTensor, nil, tensorV("int8", 1), rawTensor("int16", []int64{2}, make([]byte, 5)), "value.tensor_value.data"},
		{"tensor scalar without data", tTensor, nil, tensorV("int8", 1), rawTensor("int32", nil, nil), "value.tensor_value.data"},
		{"tensor negative axis", tTensor, nil, tensorV("int8", 1), rawTensor("int8", []int64{-1, 2}, make([]byte, 2)), "value.tensor_value.shape"},
		{"tensor wildcard in value", tTensor, &pb.Constraints{Shape: []int64{-1}}, tensorV("int8", 1), rawTensor("int8", []int64{-1}, nil), "value.tensor_value.shape"},
		{"tensor overflowing shape", tTensor, nil, tensorV("int8", 1), rawTensor("int8", []int64{1 << 40, 1 << 40}, nil), "value.tensor_value.shape"},
		{"tensor overflowing bytes", tTensor, nil, tensorV("int8", 1), rawTensor("float64", []int64{1 << 61}, nil), "value.tensor_value.data"},
		{"tensor rank 33", tTensor, nil, tensorV("int8", 1), rawTensor("int8", bigShape, make([]byte, 1)), "value.tensor_value.shape"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(err error, name string) {
				t.Helper()
				var fe *store.FieldError
				if !errors.As(err, &fe) || !errors.Is(err, store.ErrInvalidArgument) {
					t.Fatalf("err = %v (%T), want a FieldError", err, err)
				}
				if fe.Field != tc.field {
					t.Errorf("field = %q, want %q (%v)", fe.Field, tc.field, err)
				}
				if errors.Is(err, store.ErrConstraint) {
					t.Errorf("%v is reported as a constraint violation", err)
				}
				if !strings.Contains(err.Error(), name) {
					t.Errorf("message %q does not name variable %q", err, name)
				}
			}
			before := snap(t, st, sid)
			reg := fmt.Sprintf("bad%d", i)
			_, _, err := st.Register(sid, store.Register{Name: reg, Type: tc.typ, Value: tc.v, Constraints: tc.c})
			check(err, reg)
			before.assertUnchanged(t, st, sid)

			name := fmt.Sprintf("ok%d", i)
			register(t, st, sid, name, tc.typ, tc.base, tc.c)
			before = snap(t, st, sid)
			_, err = set1(st, sid, name, tc.v)
			check(err, name)
			before.assertUnchanged(t, st, sid)
		})
	}
}

// Constraints must make sense for the type they are declared on.
func TestInvalidConstraintDefinitions(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	cases := []struct {
		name  string
		typ   pb.VariableType
		c     *pb.Constraints
		v     *pb.Value
		field string
	}{
		{"min on string", tString, &pb.Constraints{Min: f64(0)}, strV("a"), "constraints.min"},
		{"max on boolean", tBool, &pb.Constraints{Max: f64(1)}, boolV(true), "constraints.max"},
		{"min_length on integer", tInt, &pb.Constraints{MinLength: i64(1)}, intV(1), "constraints.min_length"},
		{"max_length on choice", tChoice, &pb.Constraints{Choices: []string{"a"}, MaxLength: i64(3)}, strV("a"), "constraints.max_length"},
		{"pattern on integer", tInt, &pb.Constraints{Pattern: sp(".*")}, intV(1), "constraints.pattern"},
		{"pattern on module", tModule, &pb.Constraints{Pattern: sp(".*")}, strV("m"), "constraints.pattern"},
		{"choices on string", tString, &pb.Constraints{Choices: []string{"a"}}, strV("a"), "constraints.choices"},
		{"allowed_modules on choice", tChoice, &pb.Constraints{Choices: []string{"a"}, AllowedModules: []string{"a"}}, strV("a"), "constraints.allowed_modules"},
		{"dimensions on tensor", tTensor, &pb.Constraints{Dimensions: i64(2)}, tensorV("int8", 2), "constraints.dimensions"},
		{"shape on embedding", tEmb, &pb.Constraints{Shape: []int64{2}}, embV(1, 2), "constraints.shape"},
		{"dtype on float", tFloat, &pb.Constraints{Dtype: sp("float64")}, floatV(1), "constraints.dtype"},
		{"min > max", tFloat, &pb.Constraints{Min: f64(2), Max: f64(1)}, floatV(1.5), "constraints"},
		{"min NaN", tFloat, &pb.Constraints{Min: f64(math.NaN())}, floatV(1), "constraints"},
		{"max NaN", tInt, &pb.Constraints{Max: f64(math.NaN())}, intV(1), "constraints"},
		{"min_length > max_length", tString, &pb.Constraints{MinLength: i64(3), MaxLength: i64(2)}, strV("ab"), "constraints"},
		{"negative min_length", tString, &pb.Constraints{MinLength: i64(-1)}, strV("ab"), "constraints"},
		{"bad regex", tString, &pb.Constraints{Pattern: sp("([a-z")}, strV("a"), "constraints.pattern"},
		{"choice without choices", tChoice, nil, strV("a"), "constraints.choices"},
		{"choice with empty choices", tChoice, &pb.Constraints{}, strV("a"), "constraints.choices"},
		{"zero dimensions", tEmb, &pb.Constraints{Dimensions: i64(0)}, embV(), "constraints.dimensions"},
		{"negative dimensions", tEmb, &pb.Constraints{Dimensions: i64(-2)}, embV(), "constraints.dimensions"},
		{"shape axis below -1", tTensor, &pb.Constraints{Shape: []int64{-2}}, tensorV("int8", 2), "constraints.shape"},
		{"unknown dtype", tTensor, &pb.Constraints{Dtype: sp("complex128")}, tensorV("int8", 2), "constraints.dtype"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("c%d", i)
			before := snap(t, st, sid)
			_, _, err := st.Register(sid, store.Register{Name: name, Type: tc.typ, Value: tc.v, Constraints: tc.c})
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Register = %v, want a FieldError on %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("message %q does not name the variable", err)
			}
			before.assertUnchanged(t, st, sid)
		})
	}
}

// Writing the value a variable already holds is a no-op: no version bump, no
// revision. Equality is bitwise for floats.
func TestNoOpWrites(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	nan := math.NaN()
	otherNaN := math.Float64frombits(math.Float64bits(nan) ^ 1)
	cases := []struct {
		name    string
		typ     pb.VariableType
		c       *pb.Constraints
		initial *pb.Value
		v       *pb.Value
		change  bool
	}{
		{"int same", tInt, nil, intV(5), intV(5), false},
		{"int different", tInt, nil, intV(5), intV(6), true},
		{"float same", tFloat, nil, floatV(0.7), floatV(0.7), false},
		{"NaN over NaN", tFloat, nil, floatV(nan), floatV(nan), false},
		{"NaN with another payload", tFloat, nil, floatV(nan), floatV(otherNaN), true},
		{"-0 over 0", tFloat, nil, floatV(0), floatV(math.Copysign(0, -1)), true},
		{"0 over -0", tFloat, nil, floatV(math.Copysign(0, -1)), floatV(0), true},
		{"string same", tString, nil, strV("x"), strV("x"), false},
		{"bool same", tBool, nil, boolV(true), boolV(true), false},
		{"bool different", tBool, nil, boolV(true), boolV(false), true},
		{"choice same", tChoice, &pb.Constraints{Choices: []string{"a", "b"}}, strV("a"), strV("a"), false},
		{"module same", tModule, nil, strV("m"), strV("m"), false},
		{"embedding same", tEmb, nil, embV(1, 2, 3), embV(1, 2, 3), false},
		{"embedding NaN same", tEmb, nil, embV(nan, 2), embV(nan, 2), false},
		{"embedding -0", tEmb, nil, embV(0, 2), embV(math.Copysign(0, -1), 2), true},
		{"embedding longer", tEmb, nil, embV(1, 2), embV(1, 2, 0), true},
		{"tensor same", tTensor, nil, tensorV("float32", 2, 3), tensorV("float32", 2, 3), false},
		{"tensor reshaped", tTensor, nil, tensorV("float32", 2, 3), tensorV("float32", 3, 2), true},
		{"tensor retyped", tTensor, nil, tensorV("int32", 2), tensorV("float32", 2), true},
		{"tensor data", tTensor, nil, rawTensor("uint8", []int64{2}, []byte{1, 2}), rawTensor("uint8", []int64{2}, []byte{1, 3}), true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprint("n", i)
			register(t, st, sid, name, tc.typ, tc.initial, tc.c)
			before := snap(t, st, sid)
			res, err := set1(st, sid, name, tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.change {
				if len(res.Changed) != 0 || res.Revision != before.rev {
					t.Errorf("no-op write: Changed=%v Revision=%d, want none at %d", res.Changed, res.Revision, before.rev)
				}
				if res.Variables[0].GetVersion() != 1 {
					t.Errorf("no-op write returned version %d", res.Variables[0].GetVersion())
				}
				before.assertUnchanged(t, st, sid)
				return
			}
			if len(res.Changed) != 1 || res.Changed[0] != name || res.Revision != before.rev+1 {
				t.Errorf("change: Changed=%v Revision=%d, want [%s] at %d", res.Changed, res.Revision, name, before.rev+1)
			}
			if v := mustGet(t, st, sid, name); v.Version != 2 || !store.ValuesEqual(v.Value, tc.v) {
				t.Errorf("after change: %v", v)
			}
		})
	}

	t.Run("batch of no-ops takes no revision", func(t *testing.T) {
		register(t, st, sid, "p", tInt, intV(1), nil)
		register(t, st, sid, "q", tString, strV("s"), nil)
		before := snap(t, st, sid)
		res, err := st.Set(sid, []store.Write{{Identifier: "p", Value: intV(1)}, {Identifier: "q", Value: strV("s")}}, nil, "")
		if err != nil || len(res.Changed) != 0 || res.Revision != before.rev || len(res.Variables) != 2 {
			t.Fatalf("Set = %+v, %v", res, err)
		}
		before.assertUnchanged(t, st, sid)
	})
}

func TestValuesEqualAndFormat(t *testing.T) {
	if store.ValuesEqual(intV(1), floatV(1)) || store.ValuesEqual(strV("1"), intV(1)) || !store.ValuesEqual(&pb.Value{}, nil) {
		t.Error("ValuesEqual compares across kinds")
	}
	long := store.FormatValue(strV(strings.Repeat("a", 200)))
	if len(long) > 80 || !strings.HasSuffix(long, `..."`) {
		t.Errorf("FormatValue does not abbreviate a long string: %s", long)
	}
	if got := store.FormatValue(embV(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)); !strings.Contains(got, "10 values") {
		t.Errorf("FormatValue(embedding) = %s", got)
	}
	if got := store.FormatValue(tensorV("float32", 2, 3)); got != "tensor(float32, shape=[2 3])" {
		t.Errorf("FormatValue(tensor) = %s", got)
	}
	for typ, want := range map[pb.VariableType]string{tInt: "integer", tEmb: "embedding", tTensor: "tensor"} {
		if got := store.TypeName(typ); got != want {
			t.Errorf("TypeName(%v) = %q", typ, got)
		}
	}
}

func TestIntegerBoundsAreExactPast2To53(t *testing.T) {
	const big = int64(1) << 60
	tests := []struct {
		min, max float64
		v        int64
		ok       bool
	}{
		{min: float64(big), max: float64(big), v: big, ok: true},
		{min: float64(big), max: float64(big), v: big + 1, ok: false},
		{min: float64(big), max: float64(big), v: big - 1, ok: false},
		{min: -9.3e18, max: 9.3e18, v: math.MaxInt64, ok: true},
		{min: -9.3e18, max: 9.3e18, v: math.MinInt64, ok: true},
		{min: 9.3e18, max: 9.4e18, v: math.MaxInt64, ok: false},
		{min: 0.5, max: 1.5, v: 1, ok: true},
		{min: 0.5, max: 1.5, v: 0, ok: false},
		{min: 0.5, max: 1.5, v: 2, ok: false},
	}
	for _, tc := range tests {
		st := store.New(store.Options{})
		if _, _, err := st.CreateSession("s", 0, nil); err != nil {
			t.Fatal(err)
		}
		min, max := tc.min, tc.max
		_, _, err := st.Register("s", store.Register{
			Name: "n", Type: pb.VariableType_VARIABLE_TYPE_INTEGER,
			Value:       &pb.Value{Kind: &pb.Value_IntValue{IntValue: tc.v}},
			Constraints: &pb.Constraints{Min: &min, Max: &max},
		})
		st.Close()
		if (err == nil) != tc.ok {
			t.Errorf("min %v max %v value %d: err = %v, want ok=%v", tc.min, tc.max, tc.v, err, tc.ok)
		}
	}
}
