package where_test

// Cost bounds of where filters: the compile-time estimate rejects filters
// whose worst case is too high while accepting every filter the project's
// tests and docs use; an evaluation stops at the per-evaluation limit with
// ErrCostLimit and lets the update through; an evaluation stops when its
// context ends.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// literal returns the CEL list [0, 1, ..., n-1].
func literal(n int) string {
	xs := make([]string, n)
	for i := range xs {
		xs[i] = fmt.Sprint(i)
	}
	return "[" + strings.Join(xs, ",") + "]"
}

// attack is the filter from issue 10: three nested comprehensions over a
// 100-element list, a million steps whatever the update.
func attack() string {
	l := literal(100)
	return l + ".all(a, " + l + ".all(b, " + l + ".all(c, true)))"
}

func TestCompileRejectsCostlyFilters(t *testing.T) {
	l := literal(100)
	for _, c := range []struct{ name, src, want string }{
		{"issue 10's attack", attack(), "estimated worst-case cost is 3141411 units even over empty values; the limit per evaluation is 20000"},
		{"two nested comprehensions over constants", l + ".all(a, " + l + ".all(b, true))", "cost is 31411 units even over empty values"},
		{"comprehension over a value", "new.exists(x, x > 0.5)", "cost is 25165826 units, over values of up to 4194304 bytes; the limit is 5000000"},
		{"nested comprehensions over a value", "new.map(x, [x, x, x]).map(y, y.map(z, z * 2)).size() > 0", "over values of up to 4194304 bytes"},
		{"a long regular expression over a value", `new.matches("^[A-Z][a-z]+ [A-Z][a-z]+ [0-9]{4}-[0-9]{2}-[0-9]{2}$")`, "the limit is 5000000"},
	} {
		_, err := where.Compile(c.src)
		if !errors.Is(err, where.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Compile = %v; want ErrInvalid saying %q", c.name, err, c.want)
		}
	}
}

// Every where filter the repository's tests, examples and READMEs use
// (Go, Python and CLI) still compiles, and so do filters people write.
func TestCompileAcceptsUsualFilters(t *testing.T) {
	for _, src := range []string{
		"new > old", "new != 2", "new > 1.0", "new > 1.5", "new > 5",
		`new - old > 1 || ("force" in metadata && metadata["force"] == "yes")`,
		"new - old > 0.1 || old == null",
		`metadata["source"] != "tuner"`, `metadata.k == "v"`,
		`name.startsWith("model") && new in ["a", "b"]`,
		`new.matches("^[a-z]+$")`, `new.matches("^model-[a-z0-9]+(-mini)?$")`, `new.contains("error")`, `string(new) + name == "1x"`,
		"size(new) == 3 && new[0] > 0.5", `new.dtype == "float32" && new.shape[0] == 2`,
		"has(new.dtype)", "new", "new != old",
		"[1,2,3].all(x, [1,2,3].all(y, [1,2,3].exists(z, x + y + z > 0)))",
		`metadata.exists(k, k.startsWith("x-"))`,
	} {
		if _, err := where.Compile(src); err != nil {
			t.Errorf("Compile(%q): %v", src, err)
		}
	}
}

// The size limits the estimate assumes are the store's and the server's.
func TestDefaultLimitsMatchStoreAndServer(t *testing.T) {
	d := where.DefaultLimits
	if d.MaxValueBytes != store.DefaultMaxValueBytes || d.MaxMetadataEntries != server.DefaultMaxMetadataEntries ||
		d.MaxMetadataKeyBytes != server.DefaultMaxMetadataKeyBytes || d.MaxMetadataValueBytes != server.DefaultMaxMetadataValueBytes {
		t.Fatalf("where.DefaultLimits %+v disagree with the store's or server's defaults", d)
	}
}

// A filter within the estimate but costly on the value at hand stops at the
// per-evaluation limit: the error wraps ErrCostLimit, the update passes, and
// the cost reported covers the limit (the budget is charged for it).
func TestEvalStopsAtCostLimit(t *testing.T) {
	f, err := where.Compile(`new.contains("needle")`)
	if err != nil {
		t.Fatal(err)
	}
	small := &pb.Value{Kind: &pb.Value_StringValue{StringValue: "haystack"}}
	ok, spent, err := f.Eval(context.Background(), nil, small, "s", nil)
	if err != nil || ok || spent == 0 || spent > 10 {
		t.Fatalf("small value: %v %d %v; want false, a few units, no error", ok, spent, err)
	}
	big := &pb.Value{Kind: &pb.Value_StringValue{StringValue: strings.Repeat("hay", 1<<20)}}
	ok, spent, err = f.Eval(context.Background(), nil, big, "s", nil)
	if !errors.Is(err, where.ErrCostLimit) || !ok || spent < f.MaxEvalCost() {
		t.Fatalf("3 MiB value: %v %d %v; want true, >= %d units, ErrCostLimit", ok, spent, err, f.MaxEvalCost())
	}
}

// With limits high enough to accept it, issue 10's attack still stops
// within a few comprehension steps once the watch's context ends.
func TestEvalStopsWhenContextEnds(t *testing.T) {
	f, err := where.CompileWith(attack(), where.Limits{MaxEstimatedCost: 1 << 40, MaxEvalCost: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, spent, err := f.Eval(ctx, nil, nil, "s", nil)
	if !errors.Is(err, context.Canceled) || spent > 10_000 {
		t.Fatalf("Eval after cancel: spent %d in %v, err %v; want context.Canceled within a few steps", spent, time.Since(start), err)
	}
}

// A watch that opens with a filter compiled before, by anyone, reuses it:
// compiling is the costly part of opening a filtered watch, so a client
// reopening watches in a loop must not get it for free.
func TestCompileReusesCompiledFilters(t *testing.T) {
	src := literal(50) + `.exists(x, x == 7) && new > old`
	f1, err1 := where.Compile(src)
	f2, err2 := where.Compile(src)
	if err1 != nil || err2 != nil || f1 != f2 {
		t.Fatalf("Compile twice: %p %v, %p %v; want one filter", f1, err1, f2, err2)
	}
	if _, err := where.Compile(attack()); err == nil {
		t.Fatal("the attack compiled")
	} else if _, again := where.Compile(attack()); again != err {
		t.Fatalf("a rejected filter is compiled again: %v", again)
	}
}
