package where_test

// Fuzzing of server-side CEL filters: any expression, compiled and matched
// against any proto-encoded old and new values, name and metadata, never
// panics; a compile error wraps ErrInvalid; evaluation is deterministic and
// an evaluation error always lets the update through.
//
//	go test -run='^$' -fuzz=FuzzWhere -fuzztime=30s ./internal/where
//
// The seed corpus is in testdata/fuzz/FuzzWhere; regenerate the
// hand-written part with VARBRIDGE_WRITE_FUZZ_CORPUS=1 go test -run=TestWriteWhereFuzzCorpus.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

type whereSeed struct {
	expr     string
	old, new *pb.Value
	name     string
	mdKey    string
	mdVal    string
}

func whereSeeds() []whereSeed {
	i := func(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }
	f := func(x float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: x}} }
	s := func(x string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: x}} }
	b := func(x bool) *pb.Value { return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: x}} }
	e := func(xs ...float64) *pb.Value {
		return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: xs}}}
	}
	tn := &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Dtype: "float32", Shape: []int64{2, 2}, Data: make([]byte, 16)}}}
	return []whereSeed{
		{"new > old", i(1), i(2), "x", "", ""},
		{"new - old > 0.1 || old == null", nil, f(0.5), "temperature", "source", "py"},
		{`metadata["source"] != "tuner"`, f(1), f(2), "t", "source", "tuner"},
		{`name.startsWith("model") && new in ["a", "b"]`, s("a"), s("b"), "model_name", "", ""},
		{`new.matches("^[a-z]+$")`, s("abc"), s("ABC"), "s", "", ""},
		{"size(new) == 3 && new[0] > 0.5", e(1, 2, 3), e(0.1, 0.2, 0.3), "emb", "", ""},
		{`new.dtype == "float32" && new.shape[0] == 2`, nil, tn, "t", "", ""},
		{"new != old", b(true), b(false), "flag", "", ""},
		{"new > 5", s("x"), s("y"), "s", "", ""},
		{"int(new) / 0 == 1", i(1), i(2), "x", "", ""},
		{`new.map(x, [x, x, x]).map(y, y.map(z, z * 2)).size() > 0`, nil, e(1, 2, 3, 4, 5, 6, 7, 8), "e", "", ""},
		{"[1,2,3].all(x, [1,2,3].all(y, [1,2,3].exists(z, x + y + z > 0)))", nil, nil, "", "", ""},
		{"new", nil, b(true), "", "", ""},
		{"old + new", i(math.MaxInt64), i(1), "", "", ""},
		{"new >", nil, nil, "", "", ""},
		{`metadata.k == "v"`, nil, nil, "", "k", "v"},
		{"(((((((((((((((((((((true)))))))))))))))))))))", nil, nil, "", "", ""},
		{`"\xff" == name`, nil, nil, "\xff", "", ""},
		{"has(new.dtype)", f(math.NaN()), f(math.Inf(-1)), "", "", ""},
		{`string(new) + name == "1x"`, nil, i(1), "x", "", ""},
	}
}

func wMarshal(v *pb.Value) []byte {
	if v == nil {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestWriteWhereFuzzCorpus writes the seeds above to testdata when asked.
func TestWriteWhereFuzzCorpus(t *testing.T) {
	if os.Getenv("VARBRIDGE_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set VARBRIDGE_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzWhere/seed-*")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzWhere")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, s := range whereSeeds() {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n[]byte(%q)\n[]byte(%q)\nstring(%q)\nstring(%q)\nstring(%q)\n",
			s.expr, wMarshal(s.old), wMarshal(s.new), s.name, s.mdKey, s.mdVal)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", n)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzWhere(f *testing.F) {
	f.Fuzz(func(t *testing.T, expr string, oldBytes, newBytes []byte, name, mdKey, mdVal string) {
		flt, err := where.Compile(expr)
		if err != nil {
			if !errors.Is(err, where.ErrInvalid) {
				t.Fatalf("compile error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if flt.String() != expr {
			t.Fatalf("String() = %q, want %q", flt.String(), expr)
		}
		var old, new *pb.Value
		if len(oldBytes) > 0 {
			old = &pb.Value{}
			if proto.Unmarshal(oldBytes, old) != nil {
				return
			}
		}
		if len(newBytes) > 0 {
			new = &pb.Value{}
			if proto.Unmarshal(newBytes, new) != nil {
				return
			}
		}
		var md map[string]string
		if mdKey != "" {
			md = map[string]string{mdKey: mdVal}
		}
		ok1, err1 := flt.Match(old, new, name, md)
		ok2, err2 := flt.Match(old, new, name, md)
		if err1 != nil && !ok1 {
			t.Fatalf("an evaluation error must let the update through: %v", err1)
		}
		if ok1 != ok2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("not deterministic: %v/%v then %v/%v", ok1, err1, ok2, err2)
		}
	})
}
