package store_test

// Fuzzing of value validation and constraints: any proto-encoded Value and
// Constraints, registered and then written, never panics; a refused
// register or write changes nothing and fails with a typed error; an
// accepted value reads back identical and survives the wire.
//
//	go test -run='^$' -fuzz=FuzzValueConstraints -fuzztime=30s ./internal/store
//
// The seed corpus is in testdata/fuzz/FuzzValueConstraints; regenerate the
// hand-written part with VARBRIDGE_WRITE_FUZZ_CORPUS=1 go test -run=TestWriteStoreFuzzCorpus.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

type fzSeed struct {
	typ         pb.VariableType
	constraints *pb.Constraints
	initial     *pb.Value
	next        *pb.Value
}

func fzSeeds() []fzSeed {
	i := func(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }
	f := func(x float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: x}} }
	s := func(x string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: x}} }
	b := func(x bool) *pb.Value { return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: x}} }
	e := func(xs ...float64) *pb.Value {
		return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: xs}}}
	}
	tn := func(dtype string, shape []int64, n int) *pb.Value {
		return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Dtype: dtype, Shape: shape, Data: make([]byte, n)}}}
	}
	T := func(n int32) pb.VariableType { return pb.VariableType(n) }
	return []fzSeed{
		{T(1), &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(10)}, i(5), i(11)},
		{T(1), nil, i(math.MinInt64), i(math.MaxInt64)},
		{T(2), &pb.Constraints{Min: proto.Float64(-1), Max: proto.Float64(1)}, f(0.5), f(math.NaN())},
		{T(2), nil, f(math.Inf(1)), f(math.Copysign(0, -1))},
		{T(3), &pb.Constraints{MinLength: proto.Int64(1), MaxLength: proto.Int64(4), Pattern: proto.String("^[a-z]+$")}, s("abc"), s("ABCDE")},
		{T(3), &pb.Constraints{Pattern: proto.String("(")}, s(""), s("x")},
		{T(4), nil, b(true), b(false)},
		{T(5), &pb.Constraints{Choices: []string{"a", "b"}}, s("a"), s("c")},
		{T(5), nil, s("a"), s("a")},
		{T(6), &pb.Constraints{AllowedModules: []string{"m.x"}}, s("m.x"), s("m.y")},
		{T(7), &pb.Constraints{Dimensions: proto.Int64(3)}, e(1, 2, 3), e(1, 2)},
		{T(7), nil, e(), e(math.NaN())},
		{T(8), &pb.Constraints{Shape: []int64{2, -1}, Dtype: proto.String("float32")}, tn("float32", []int64{2, 3}, 24), tn("float32", []int64{2, 4}, 32)},
		{T(8), nil, tn("float16", []int64{math.MaxInt64, 2}, 0), tn("bool", nil, 1)},
		{T(8), &pb.Constraints{Shape: make([]int64, 40)}, tn("int8", []int64{0}, 0), tn("uint64", []int64{1}, 8)},
		{T(0), nil, i(1), i(2)},
		{T(99), &pb.Constraints{Min: proto.Float64(1), Pattern: proto.String("x")}, s("x"), nil},
		{T(1), &pb.Constraints{Min: proto.Float64(5), Max: proto.Float64(1)}, i(3), &pb.Value{}},
	}
}

func fzMarshal(m proto.Message) []byte {
	if m == nil {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// TestWriteStoreFuzzCorpus writes the seeds above to testdata when asked.
func TestWriteStoreFuzzCorpus(t *testing.T) {
	if os.Getenv("VARBRIDGE_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set VARBRIDGE_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzValueConstraints/seed-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzValueConstraints")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, s := range fzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n[]byte(%q)\n[]byte(%q)\n",
			byte(s.typ), fzMarshal(s.constraints), fzMarshal(s.initial), fzMarshal(s.next))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", n)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzValueConstraints(f *testing.F) {
	st := store.New(store.Options{MaxValueBytes: 1 << 16})
	f.Cleanup(st.Close)
	var seq atomic.Int64
	f.Fuzz(func(t *testing.T, typ byte, consBytes, initialBytes, nextBytes []byte) {
		var c pb.Constraints
		var initial, next pb.Value
		if proto.Unmarshal(consBytes, &c) != nil || proto.Unmarshal(initialBytes, &initial) != nil || proto.Unmarshal(nextBytes, &next) != nil {
			return // not a message: gRPC refuses it before the store sees it
		}
		sid := "fz" + strconv.FormatInt(seq.Add(1), 10)
		if _, _, err := st.CreateSession(sid, 0, nil); err != nil {
			t.Fatal(err)
		}
		defer func() { _, _ = st.CleanupSession(sid) }()

		vt := pb.VariableType(typ)
		v, rev, err := st.Register(sid, store.Register{Name: "v", Type: vt, Value: &initial, Constraints: &c})
		if err != nil {
			fzTyped(t, "register", err)
			if info, _ := st.GetSession(sid); info.Revision != 0 || info.VariableCount != 0 {
				t.Fatalf("refused register changed the session: %+v", info)
			}
			return
		}
		if rev != 1 || v.Version != 1 || v.Type != vt {
			t.Fatalf("register: rev %d, version %d, type %v", rev, v.Version, v.Type)
		}
		fzRoundTrip(t, st, sid, &initial)
		if !proto.Equal(v.Constraints, &c) {
			t.Fatalf("constraints changed on register:\n%v\n->\n%v", &c, v.Constraints)
		}

		res, err := st.Set(sid, []store.Write{{Identifier: "v", Value: &next}}, nil, "fuzz")
		if err != nil {
			fzTyped(t, "set", err)
			if info, _ := st.GetSession(sid); info.Revision != 1 {
				t.Fatalf("refused set took a revision: %d", info.Revision)
			}
			fzRoundTrip(t, st, sid, &initial)
			return
		}
		want := int64(1)
		if len(res.Changed) == 1 {
			want = 2
		} else if !store.ValuesEqual(&initial, &next) {
			t.Fatal("set of a different value reported no change")
		}
		if got := res.Variables[0].Version; got != want {
			t.Fatalf("version after set = %d, want %d", got, want)
		}
		fzRoundTrip(t, st, sid, &next)
	})
}

// fzTyped fails unless err is one of the store's typed request errors.
func fzTyped(t *testing.T, op string, err error) {
	t.Helper()
	for _, e := range []error{store.ErrInvalidArgument, store.ErrConstraint, store.ErrLimit} {
		if errors.Is(err, e) {
			return
		}
	}
	t.Fatalf("%s failed with an untyped error: %v", op, err)
}

// fzRoundTrip checks the stored value is want, bit for bit, and that the
// variable survives marshalling.
func fzRoundTrip(t *testing.T, st *store.Store, sid string, want *pb.Value) {
	t.Helper()
	got, _, err := st.Get(sid, "v")
	if err != nil {
		t.Fatal(err)
	}
	if !store.ValuesEqual(got.Value, want) {
		t.Fatalf("stored %v, want %v", got.Value, want)
	}
	_ = store.FormatValue(got.Value)
	b, err := proto.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var back pb.Variable
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !store.ValuesEqual(back.Value, want) || !proto.Equal(&back, got) {
		t.Fatalf("variable does not survive the wire:\n%v\n->\n%v", got, &back)
	}
}
