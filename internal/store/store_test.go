package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ---- helpers shared by the store tests ----

// fakeClock is an injectable, race-safe clock: tests move it instead of sleeping.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// newStore returns a store that the test closes. The background sweeper is
// pushed out of the way so that only the test's own Sweep calls expire
// sessions.
func newStore(t *testing.T, opts store.Options) *store.Store {
	t.Helper()
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 24 * time.Hour
	}
	st := store.New(opts)
	t.Cleanup(st.Close)
	return st
}

func newSession(t *testing.T, st *store.Store) string {
	t.Helper()
	info, created, err := st.CreateSession("", 0, nil)
	if err != nil || !created {
		t.Fatalf("CreateSession: created=%v err=%v", created, err)
	}
	return info.ID
}

func register(t *testing.T, st *store.Store, sid, name string, typ pb.VariableType, v *pb.Value, c *pb.Constraints) *pb.Variable {
	t.Helper()
	pv, _, err := st.Register(sid, store.Register{Name: name, Type: typ, Value: v, Constraints: c})
	if err != nil {
		t.Fatalf("Register %q: %v", name, err)
	}
	return pv
}

func set1(st *store.Store, sid, ident string, v *pb.Value) (store.WriteResult, error) {
	return st.Set(sid, []store.Write{{Identifier: ident, Value: v}}, nil, "")
}

func mustSet(t *testing.T, st *store.Store, sid, ident string, v *pb.Value) store.WriteResult {
	t.Helper()
	res, err := set1(st, sid, ident, v)
	if err != nil {
		t.Fatalf("Set %q: %v", ident, err)
	}
	return res
}

func revision(t *testing.T, st *store.Store, sid string) int64 {
	t.Helper()
	info, err := st.GetSession(sid)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	return info.Revision
}

func mustGet(t *testing.T, st *store.Store, sid, ident string) *pb.Variable {
	t.Helper()
	v, _, err := st.Get(sid, ident)
	if err != nil {
		t.Fatalf("Get %q: %v", ident, err)
	}
	return v
}

// snapshot captures everything a rejected operation must leave untouched.
type snapshot struct {
	rev  int64
	vars []*pb.Variable
}

func snap(t *testing.T, st *store.Store, sid string) snapshot {
	t.Helper()
	vars, rev, err := st.List(sid, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	clones := make([]*pb.Variable, len(vars))
	for i, v := range vars {
		clones[i] = proto.CloneOf(v)
	}
	return snapshot{rev: rev, vars: clones}
}

func (s snapshot) assertUnchanged(t *testing.T, st *store.Store, sid string) {
	t.Helper()
	now := snap(t, st, sid)
	if now.rev != s.rev {
		t.Errorf("session revision moved from %d to %d", s.rev, now.rev)
	}
	if len(now.vars) != len(s.vars) {
		t.Fatalf("variable count changed from %d to %d", len(s.vars), len(now.vars))
	}
	for i := range s.vars {
		if !proto.Equal(now.vars[i], s.vars[i]) {
			t.Errorf("variable changed:\n was %v\n now %v", s.vars[i], now.vars[i])
		}
	}
}

func intV(i int64) *pb.Value     { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: i}} }
func floatV(f float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}} }
func strV(s string) *pb.Value    { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }
func boolV(b bool) *pb.Value     { return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: b}} }
func embV(xs ...float64) *pb.Value {
	return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: xs}}}
}

var itemSize = map[string]int{"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2,
	"int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8}

// tensorV builds a well-formed tensor of zeros.
func tensorV(dtype string, shape ...int64) *pb.Value {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return rawTensor(dtype, shape, make([]byte, n*int64(itemSize[dtype])))
}

func rawTensor(dtype string, shape []int64, data []byte) *pb.Value {
	return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Dtype: dtype, Shape: shape, Data: data}}}
}

func f64(f float64) *float64 { return &f }
func i64(i int64) *int64     { return &i }
func sp(s string) *string    { return &s }

const (
	tInt    = pb.VariableType_VARIABLE_TYPE_INTEGER
	tFloat  = pb.VariableType_VARIABLE_TYPE_FLOAT
	tString = pb.VariableType_VARIABLE_TYPE_STRING
	tBool   = pb.VariableType_VARIABLE_TYPE_BOOLEAN
	tChoice = pb.VariableType_VARIABLE_TYPE_CHOICE
	tModule = pb.VariableType_VARIABLE_TYPE_MODULE
	tEmb    = pb.VariableType_VARIABLE_TYPE_EMBEDDING
	tTensor = pb.VariableType_VARIABLE_TYPE_TENSOR
)

// ---- compare-and-set ----

func TestSetExpectedVersion(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	v := register(t, st, sid, "x", tInt, intV(1), nil)

	// Match: applies and bumps the version.
	res, err := st.Set(sid, []store.Write{{Identifier: "x", Value: intV(2), ExpectedVersion: i64(1)}}, nil, "")
	if err != nil {
		t.Fatalf("CAS at the current version: %v", err)
	}
	if got := res.Variables[0].GetVersion(); got != 2 {
		t.Fatalf("version after CAS = %d, want 2", got)
	}

	for _, tc := range []struct {
		name   string
		writes []store.Write
	}{
		{"stale single", []store.Write{{Identifier: "x", Value: intV(3), ExpectedVersion: i64(1)}}},
		{"future single", []store.Write{{Identifier: v.Id, Value: intV(3), ExpectedVersion: i64(7)}}},
		{"zero", []store.Write{{Identifier: "x", Value: intV(3), ExpectedVersion: i64(0)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, st, sid)
			_, err := st.Set(sid, tc.writes, nil, "")
			if !errors.Is(err, store.ErrVersionConflict) {
				t.Fatalf("err = %v, want ErrVersionConflict", err)
			}
			if !strings.Contains(err.Error(), `"x"`) || !strings.Contains(err.Error(), "version 2") {
				t.Errorf("message %q should name the variable and its current version", err)
			}
			before.assertUnchanged(t, st, sid)
		})
	}

	t.Run("stale member of a batch", func(t *testing.T) {
		register(t, st, sid, "y", tInt, intV(0), nil)
		before := snap(t, st, sid)
		_, err := st.Set(sid, []store.Write{
			{Identifier: "y", Value: intV(5), ExpectedVersion: i64(1)},
			{Identifier: "x", Value: intV(5), ExpectedVersion: i64(1)},
		}, nil, "")
		if !errors.Is(err, store.ErrVersionConflict) {
			t.Fatalf("err = %v, want ErrVersionConflict", err)
		}
		before.assertUnchanged(t, st, sid)
	})
}

// ---- atomic batches ----

func TestSetBatchAtomic(t *testing.T) {
	st := newStore(t, store.Options{MaxValueBytes: 64})
	sid := newSession(t, st)
	a := register(t, st, sid, "a", tInt, intV(0), &pb.Constraints{Min: f64(0), Max: f64(10)})
	register(t, st, sid, "b", tString, strV(""), &pb.Constraints{MaxLength: i64(3)})
	register(t, st, sid, "c", tFloat, floatV(0), nil)

	bad := []struct {
		name   string
		writes []store.Write
		check  func(error) bool
	}{
		{"one violates a constraint", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "b", Value: strV("toolong")}, {Identifier: "c", Value: floatV(1)},
		}, func(err error) bool {
			var ce *store.ConstraintError
			return errors.As(err, &ce) && ce.Constraint == "max_length"
		}},
		{"one names no variable", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "c", Value: floatV(1)}, {Identifier: "a2", Value: intV(1)},
		}, func(err error) bool { return errors.Is(err, store.ErrVariableNotFound) }},
		{"one has the wrong kind", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "c", Value: intV(1)},
		}, func(err error) bool { return errors.Is(err, store.ErrInvalidArgument) }},
		{"one is too big", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "b", Value: strV(strings.Repeat("x", 100))},
		}, func(err error) bool { return errors.Is(err, store.ErrLimit) }},
		{"one has no value", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "c"},
		}, func(err error) bool { return errors.Is(err, store.ErrInvalidArgument) }},
		{"one has no identifier", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Value: floatV(2)},
		}, func(err error) bool { return errors.Is(err, store.ErrInvalidArgument) }},
		{"same name twice", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: "a", Value: intV(6)},
		}, func(err error) bool { return errors.Is(err, store.ErrInvalidArgument) }},
		{"id and name of the same variable", []store.Write{
			{Identifier: "a", Value: intV(5)}, {Identifier: a.Id, Value: intV(6)},
		}, func(err error) bool {
			return errors.Is(err, store.ErrInvalidArgument) && strings.Contains(err.Error(), a.Id) && strings.Contains(err.Error(), `"a"`)
		}},
		{"empty", nil, func(err error) bool { return errors.Is(err, store.ErrInvalidArgument) }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, st, sid)
			res, err := st.Set(sid, tc.writes, nil, "")
			if err == nil || !tc.check(err) {
				t.Fatalf("Set = %+v, %v; want the matching error", res, err)
			}
			before.assertUnchanged(t, st, sid)
		})
	}

	t.Run("missing identifiers are all listed", func(t *testing.T) {
		before := snap(t, st, sid)
		_, err := st.Set(sid, []store.Write{
			{Identifier: "nope1", Value: intV(1)}, {Identifier: "a", Value: intV(1)}, {Identifier: "nope2", Value: intV(1)},
		}, nil, "")
		var nf *store.NotFoundError
		if !errors.As(err, &nf) {
			t.Fatalf("err = %v, want *NotFoundError", err)
		}
		if !slices.Equal(nf.Identifiers, []string{"nope1", "nope2"}) || nf.Session != sid {
			t.Errorf("NotFoundError = %+v, want both missing identifiers in session %s", nf, sid)
		}
		for _, s := range []string{"nope1", "nope2", sid} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("message %q does not name %q", err, s)
			}
		}
		before.assertUnchanged(t, st, sid)
	})

	t.Run("good batch takes one revision", func(t *testing.T) {
		before := snap(t, st, sid)
		res, err := st.Set(sid, []store.Write{
			{Identifier: a.Id, Value: intV(7)}, {Identifier: "b", Value: strV("hey")}, {Identifier: "c", Value: floatV(0)}, // c unchanged
		}, map[string]string{"k": "v"}, "tester")
		if err != nil {
			t.Fatalf("Set: %v", err)
		}
		if res.Revision != before.rev+1 {
			t.Errorf("batch revision = %d, want %d", res.Revision, before.rev+1)
		}
		if got := revision(t, st, sid); got != before.rev+1 {
			t.Errorf("session revision = %d, want %d", got, before.rev+1)
		}
		changed := slices.Clone(res.Changed)
		sort.Strings(changed)
		want := []string{a.Id, "b"}
		sort.Strings(want)
		if !slices.Equal(changed, want) {
			t.Errorf("Changed = %v, want [%s b]", res.Changed, a.Id)
		}
		if len(res.Variables) != 3 {
			t.Errorf("Variables has %d entries, want 3 keyed by identifier", len(res.Variables))
		}
		for ident, want := range map[string]int64{"a": 2, "b": 2, "c": 1} {
			v := mustGet(t, st, sid, ident)
			if v.Version != want {
				t.Errorf("%s version = %d, want %d", ident, v.Version, want)
			}
			if want == 2 && (v.Revision != res.Revision || v.Source != "tester") {
				t.Errorf("%s revision/source = %d/%q, want %d/tester", ident, v.Revision, v.Source, res.Revision)
			}
		}
	})
}

// ---- reads, lists, deletes, identifiers ----

func TestIdentifiersResolveByIDAndName(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	v := register(t, st, sid, "temperature", tFloat, floatV(0.7), nil)
	if !strings.HasPrefix(v.Id, "var_") || v.Id == v.Name {
		t.Fatalf("id %q does not look server-assigned", v.Id)
	}
	byID, byName := mustGet(t, st, sid, v.Id), mustGet(t, st, sid, "temperature")
	if !proto.Equal(byID, byName) {
		t.Fatalf("by id %v != by name %v", byID, byName)
	}
	if _, err := set1(st, sid, v.Id, floatV(0.8)); err != nil {
		t.Fatalf("Set by id: %v", err)
	}
	if got := mustGet(t, st, sid, "temperature").GetValue().GetFloatValue(); got != 0.8 {
		t.Fatalf("after set by id, value by name = %v", got)
	}

	for _, name := range []string{"var_0123456789abcdef", v.Id} {
		_, _, err := st.Register(sid, store.Register{Name: name, Type: tInt, Value: intV(1)})
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != "name" {
			t.Errorf("Register(%q) = %v, want a FieldError on name", name, err)
		}
	}
	// Only the exact id shape is reserved.
	for _, name := range []string{"var_x", "var_0123456789ABCDEF", "my_var_0123456789abcdef"} {
		if _, _, err := st.Register(sid, store.Register{Name: name, Type: tInt, Value: intV(1)}); err != nil {
			t.Errorf("Register(%q): %v", name, err)
		}
	}
}

func TestRegisterValidation(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	register(t, st, sid, "taken", tInt, intV(1), nil)
	for _, tc := range []struct {
		name  string
		r     store.Register
		field string // "" means ErrAlreadyExists
	}{
		{"empty name", store.Register{Type: tInt, Value: intV(1)}, "name"},
		{"control char", store.Register{Name: "a\nb", Type: tInt, Value: intV(1)}, "name"},
		{"too long", store.Register{Name: strings.Repeat("n", 257), Type: tInt, Value: intV(1)}, "name"},
		{"unspecified type", store.Register{Name: "t", Value: intV(1)}, "type"},
		{"unknown type", store.Register{Name: "t", Type: pb.VariableType(99), Value: intV(1)}, "type"},
		{"no initial value", store.Register{Name: "t", Type: tInt}, "initial_value"},
		{"empty initial value", store.Register{Name: "t", Type: tInt, Value: &pb.Value{}}, "initial_value"},
		{"duplicate name", store.Register{Name: "taken", Type: tInt, Value: intV(2)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, st, sid)
			_, _, err := st.Register(sid, tc.r)
			if tc.field == "" {
				if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), `"taken"`) {
					t.Fatalf("err = %v, want ErrAlreadyExists naming the variable", err)
				}
			} else {
				var fe *store.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, store.ErrInvalidArgument) {
					t.Fatalf("err = %v, want FieldError on %s", err, tc.field)
				}
			}
			before.assertUnchanged(t, st, sid)
		})
	}
	if got := mustGet(t, st, sid, "taken").GetValue().GetIntValue(); got != 1 {
		t.Errorf("duplicate registration overwrote the value: %d", got)
	}
}

func TestRegisterRecordsEverything(t *testing.T) {
	clk := newClock()
	st := newStore(t, store.Options{Now: clk.Now})
	sid := newSession(t, st)
	md := map[string]string{"source": "py", "owner": "team"}
	v, rev, err := st.Register(sid, store.Register{
		Name: "k", Type: tInt, Value: intV(3), Constraints: &pb.Constraints{Min: f64(0)}, Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rev != 1 || v.Revision != 1 || v.Version != 1 || v.Source != "py" || v.Metadata["owner"] != "team" ||
		!v.CreatedAt.AsTime().Equal(clk.Now()) || !v.UpdatedAt.AsTime().Equal(clk.Now()) || v.Constraints.GetMin() != 0 {
		t.Fatalf("registered %v at %d", v, rev)
	}
	clk.Advance(time.Minute)
	res, err := st.Set(sid, []store.Write{{Identifier: "k", Value: intV(4)}}, map[string]string{"source": "go"}, "")
	if err != nil {
		t.Fatal(err)
	}
	got := res.Variables[0]
	if got.Source != "go" || !got.UpdatedAt.AsTime().Equal(clk.Now()) || !got.CreatedAt.AsTime().Equal(v.CreatedAt.AsTime()) {
		t.Errorf("after set: %v", got)
	}
	res, err = st.Set(sid, []store.Write{{Identifier: "k", Value: intV(5)}}, map[string]string{"source": "go"}, "explicit")
	if err != nil || res.Variables[0].Source != "explicit" {
		t.Errorf("explicit source: %v %v", res.Variables[0], err)
	}
}

// The store keeps its own copy of what the caller passed: a caller that
// reuses its request structs after Register cannot change a variable's rules.
func TestRegisterCopiesCallerInputs(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	c := &pb.Constraints{Max: f64(10), Pattern: nil}
	init := intV(1)
	md := map[string]string{"a": "1"}
	if _, _, err := st.Register(sid, store.Register{Name: "n", Type: tInt, Value: init, Constraints: c, Metadata: md}); err != nil {
		t.Fatal(err)
	}
	*c.Max = 100
	c.Min = f64(50)
	init.Kind = &pb.Value_IntValue{IntValue: 99}
	md["a"] = "2"

	v := mustGet(t, st, sid, "n")
	if v.GetValue().GetIntValue() != 1 || v.Metadata["a"] != "1" || v.Constraints.GetMax() != 10 || v.Constraints.Min != nil {
		t.Errorf("stored variable follows the caller's later edits: %v", v)
	}
	_, err := set1(st, sid, "n", intV(50))
	var ce *store.ConstraintError
	if !errors.As(err, &ce) || ce.Constraint != "max" {
		t.Errorf("Set 50 with max 10 = %v, want a max violation", err)
	}
	if _, err := set1(st, sid, "n", intV(5)); err != nil {
		t.Errorf("Set 5 with max 10: %v", err)
	}
}

func TestGetMany(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	a := register(t, st, sid, "a", tInt, intV(1), nil)
	register(t, st, sid, "b", tString, strV("x"), nil)

	found, missing, rev, err := st.GetMany(sid, []string{"a", a.Id, "zz", "b", "yy"})
	if err != nil {
		t.Fatal(err)
	}
	if rev != 2 {
		t.Errorf("rev = %d, want 2", rev)
	}
	if len(found) != 3 || found["a"].GetId() != a.Id || found[a.Id].GetName() != "a" || found["b"].GetValue().GetStringValue() != "x" {
		t.Errorf("found = %v", found)
	}
	if !slices.Equal(missing, []string{"zz", "yy"}) {
		t.Errorf("missing = %v, want [zz yy] in request order", missing)
	}

	found, missing, _, err = st.GetMany(sid, []string{"nothing"})
	if err != nil || len(found) != 0 || !slices.Equal(missing, []string{"nothing"}) {
		t.Errorf("all missing: %v %v %v", found, missing, err)
	}
	var fe *store.FieldError
	if _, _, _, err := st.GetMany(sid, nil); !errors.As(err, &fe) || fe.Field != "variable_identifiers" {
		t.Errorf("GetMany(nil) = %v, want FieldError on variable_identifiers", err)
	}
}

func TestGetErrors(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	_, _, err := st.Get(sid, "ghost")
	var nf *store.NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, store.ErrVariableNotFound) || !slices.Equal(nf.Identifiers, []string{"ghost"}) ||
		!strings.Contains(err.Error(), `"ghost"`) {
		t.Errorf("Get(ghost) = %v", err)
	}
	var fe *store.FieldError
	if _, _, err := st.Get(sid, ""); !errors.As(err, &fe) || fe.Field != "variable_identifier" {
		t.Errorf("Get(\"\") = %v", err)
	}
}

func TestListVariables(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	for _, n := range []string{"gamma", "alpha", "beta", "alpine", "model.temp", "model.top_p"} {
		register(t, st, sid, n, tInt, intV(0), nil)
	}
	for _, tc := range []struct {
		pattern string
		want    []string
	}{
		{"", []string{"alpha", "alpine", "beta", "gamma", "model.temp", "model.top_p"}},
		{"*", []string{"alpha", "alpine", "beta", "gamma", "model.temp", "model.top_p"}},
		{"al*", []string{"alpha", "alpine"}},
		{"?eta", []string{"beta"}},
		{"[ab]*", []string{"alpha", "alpine", "beta"}},
		{"model.*", []string{"model.temp", "model.top_p"}},
		{"*a", []string{"alpha", "beta", "gamma"}},
		{"delta", nil},
		{"gamma", []string{"gamma"}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			vars, rev, err := st.List(sid, tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, v := range vars {
				names = append(names, v.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.pattern, names, tc.want)
			}
			if rev != 6 {
				t.Errorf("rev = %d, want 6", rev)
			}
		})
	}
	for _, bad := range []string{"[", "[a-", `\`} {
		_, _, err := st.List(sid, bad)
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != "pattern" || !strings.Contains(err.Error(), bad) {
			t.Errorf("List(%q) = %v, want FieldError on pattern naming it", bad, err)
		}
	}
}

func TestDeleteVariable(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	a := register(t, st, sid, "a", tInt, intV(1), nil)
	register(t, st, sid, "b", tInt, intV(2), nil)

	for _, ident := range []string{a.Id, "b"} {
		before := revision(t, st, sid)
		old, rev, err := st.Delete(sid, ident, map[string]string{"why": "test"}, "me")
		if err != nil {
			t.Fatalf("Delete(%s): %v", ident, err)
		}
		if rev != before+1 || revision(t, st, sid) != rev {
			t.Errorf("Delete took revision %d, session at %d; want %d", rev, revision(t, st, sid), before+1)
		}
		if old.GetName() != "a" && old.GetName() != "b" {
			t.Errorf("Delete returned %v", old)
		}
		for _, id := range []string{old.Id, old.Name} {
			if _, _, err := st.Get(sid, id); !errors.Is(err, store.ErrVariableNotFound) {
				t.Errorf("Get(%s) after delete = %v, want not found", id, err)
			}
		}
	}
	if vars, _, _ := st.List(sid, ""); len(vars) != 0 {
		t.Errorf("List after deleting all = %v", vars)
	}

	before := snap(t, st, sid)
	if _, _, err := st.Delete(sid, "a", nil, ""); !errors.Is(err, store.ErrVariableNotFound) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("second Delete = %v, want not found naming it", err)
	}
	if _, _, err := st.Delete(sid, "", nil, ""); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Delete(\"\") = %v", err)
	}
	before.assertUnchanged(t, st, sid)

	// The name is free again, under a new id.
	again := register(t, st, sid, "a", tString, strV("new"), nil)
	if again.Id == a.Id || again.Version != 1 {
		t.Errorf("re-registered %v; old id %s", again, a.Id)
	}
}

// ---- history window ----

func TestHistoryBoundedByCount(t *testing.T) {
	st := newStore(t, store.Options{HistoryLimit: 3})
	sid := newSession(t, st)
	register(t, st, sid, "x", tInt, intV(0), nil) // revision 1
	for i := 1; i <= 9; i++ {                     // revisions 2..10
		if _, err := set1(st, sid, "x", intV(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		start      int64
		wantResync bool
		wantRevs   []int64
	}{
		{start: 1, wantResync: true},
		{start: 7, wantResync: true},
		{start: 8, wantRevs: []int64{8, 9, 10}},
		{start: 10, wantRevs: []int64{10}},
	} {
		t.Run(fmt.Sprint(tc.start), func(t *testing.T) {
			w, err := st.Watch(sid, []string{"x"}, store.WatchOptions{StartRevision: tc.start})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			b, err := w.Poll(100)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantResync {
				if b.Resync == nil || b.Resync.Revision != 10 || len(b.Resync.Vars) != 1 || b.Resync.Vars[0].GetValue().GetIntValue() != 9 {
					t.Fatalf("Poll from %d = %+v, want Resync at 10 with x=9", tc.start, b)
				}
				if len(b.Changes) != 0 || b.Covered != 10 {
					t.Errorf("resync batch: changes %d covered %d", len(b.Changes), b.Covered)
				}
				return
			}
			if b.Resync != nil {
				t.Fatalf("Poll from %d resynced; the window should hold it", tc.start)
			}
			var revs []int64
			for _, c := range b.Changes {
				revs = append(revs, c.Revision)
			}
			if !slices.Equal(revs, tc.wantRevs) || b.Covered != 10 {
				t.Errorf("revisions %v covered %d, want %v covered 10", revs, b.Covered, tc.wantRevs)
			}
		})
	}
}

func TestHistoryBoundedByAge(t *testing.T) {
	clk := newClock()
	st := newStore(t, store.Options{Now: clk.Now, HistoryAge: time.Minute})
	sid := newSession(t, st)
	register(t, st, sid, "x", tInt, intV(0), nil) // 1
	mustSet(t, st, sid, "x", intV(1))             // 2
	clk.Advance(30 * time.Second)
	mustSet(t, st, sid, "x", intV(2)) // 3
	clk.Advance(45 * time.Second)
	mustSet(t, st, sid, "x", intV(3)) // 4: revisions 1 and 2 are now 75 s old; 3 is 45 s old

	for _, tc := range []struct {
		start      int64
		wantResync bool
	}{{1, true}, {2, true}, {3, false}, {4, false}} {
		w, err := st.Watch(sid, nil, store.WatchOptions{StartRevision: tc.start})
		if err != nil {
			t.Fatal(err)
		}
		b, err := w.Poll(100)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if (b.Resync != nil) != tc.wantResync {
			t.Errorf("start %d: resync=%v, want %v (batch %+v)", tc.start, b.Resync != nil, tc.wantResync, b)
		}
		if !tc.wantResync && (len(b.Changes) == 0 || b.Changes[0].Revision != tc.start) {
			t.Errorf("start %d: first change %+v", tc.start, b.Changes)
		}
	}
}

// ---- concurrency ----

func TestConcurrentWritersKeepVersionsAndRevisionsGapless(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	const nVars, writers, perWriter = 4, 8, 200
	names := make([]string, nVars)
	for i := range names {
		names[i] = fmt.Sprintf("v%d", i)
		register(t, st, sid, names[i], tInt, intV(0), nil)
	}

	var (
		mu      sync.Mutex
		revs    []int64            // revisions returned by committing writes
		changes = map[string]int{} // changed writes per variable
		wg      sync.WaitGroup
		errs    = make(chan error, writers)
	)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				var writes []store.Write
				// A small value range makes some writes no-ops; every fifth is a batch.
				val := intV(int64((g*7 + i) % 5))
				writes = append(writes, store.Write{Identifier: names[(g+i)%nVars], Value: val})
				if i%5 == 0 {
					writes = append(writes, store.Write{Identifier: names[(g+i+1)%nVars], Value: intV(int64(g*1000 + i))})
				}
				res, err := st.Set(sid, writes, nil, fmt.Sprint("writer", g))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if len(res.Changed) > 0 {
					revs = append(revs, res.Revision)
				}
				for _, id := range res.Changed {
					changes[id]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	totalChanges := 0
	for _, n := range names {
		v := mustGet(t, st, sid, n)
		if want := int64(1 + changes[n]); v.Version != want {
			t.Errorf("%s version = %d, want 1 + %d changing writes", n, v.Version, changes[n])
		}
		totalChanges += changes[n]
	}
	t.Logf("%d writes: %d committed, %d variable changes", writers*perWriter, len(revs), totalChanges)
	if got, want := revision(t, st, sid), int64(nVars+len(revs)); got != want {
		t.Errorf("session revision = %d, want %d registrations + %d committed writes", got, nVars, len(revs))
	}
	all := append([]int64{}, revs...)
	for i := range nVars {
		all = append(all, int64(i+1)) // the registrations took 1..nVars
	}
	slices.Sort(all)
	for i, r := range all {
		if r != int64(i+1) {
			t.Fatalf("revisions are not unique and gapless: position %d holds %d (sorted: %v)", i, r, all)
		}
	}
}

func TestBusySessionDoesNotStallOthers(t *testing.T) {
	st := newStore(t, store.Options{})
	busy, other := newSession(t, st), newSession(t, st)
	register(t, st, busy, "hot", tInt, intV(0), nil)

	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var n int64
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			n++
			if _, err := set1(st, busy, "hot", intV(n)); err != nil {
				t.Error(err)
			}
			_, _, _ = st.List(busy, "")
		}
	}()

	for i := range 300 {
		name := fmt.Sprint("k", i)
		register(t, st, other, name, tString, strV("a"), nil)
		if _, err := set1(st, other, name, strV("b")); err != nil {
			t.Fatal(err)
		}
		if v := mustGet(t, st, other, name); v.Version != 2 {
			t.Fatalf("%s version %d", name, v.Version)
		}
		if _, err := st.Heartbeat(other); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	n := <-done
	if got := mustGet(t, st, busy, "hot").Version; got < 1 || got > n+1 {
		t.Errorf("busy variable version %d after %d writes", got, n)
	}
	if got := revision(t, st, other); got != 600 {
		t.Errorf("other session revision = %d, want 600", got)
	}
}
