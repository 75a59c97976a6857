// Package where compiles and evaluates server-side watch filters written in
// CEL over old, new, name and metadata.
//
// A filter runs once per update per watch, so its cost is bounded three
// ways: at compile time (cel-go's static estimate over inputs as large as the
// server's limits allow, see Limits), per evaluation (a runtime cost limit),
// and per session over time (the store's filter budget, spent by the feed).
package where

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// MaxExpressionBytes bounds the source of a filter.
const MaxExpressionBytes = 4096

// Limits bound what a filter may cost, in CEL cost units (roughly one per
// operation or comprehension step, one per ten to twenty characters a
// string function scans). Zero fields take DefaultLimits' values.
type Limits struct {
	// MaxEstimatedCost rejects a filter at compile time when its estimated
	// worst-case cost, over inputs as large as the sizes below allow, is
	// higher: a comprehension over a value (25 million units for
	// `new.exists(x, x > 0.5)` at 4 MiB) would reach MaxEvalCost on every
	// large value. It is far above MaxEvalCost because the estimate
	// charges a comparison of two dyn values as if both were strings of
	// the largest size (about 420,000 units for `new > old` at 4 MiB, a few
	// units in fact), and a regular expression as its length times the
	// value's (4.2 million for a 40-character pattern).
	MaxEstimatedCost uint64
	// MaxEvalCost stops one evaluation that spends more (cel.CostLimit),
	// and rejects at compile time a filter whose estimate exceeds it even
	// over empty inputs: such a filter would spend its time on constants,
	// which no update accounts for.
	MaxEvalCost uint64
	// MaxValueBytes bounds old and new: a string has at most that many
	// characters, an embedding or a tensor's shape at most that many
	// elements (store.Options.MaxValueBytes).
	MaxValueBytes uint64
	// MaxNameBytes bounds name (the store's limit on a variable name).
	MaxNameBytes uint64
	// MaxMetadataEntries, MaxMetadataKeyBytes and MaxMetadataValueBytes
	// bound the writer's metadata (the server's request limits).
	MaxMetadataEntries    uint64
	MaxMetadataKeyBytes   uint64
	MaxMetadataValueBytes uint64
}

// DefaultLimits are the limits Compile applies. The sizes match the
// defaults of store.Options and server.RequestLimits (a test checks it).
// MaxEvalCost, 20,000 units, is under 1 ms of CPU on a comprehension,
// while the filters people write (`new > old`, a metadata lookup, a regex
// on a short string) cost under 100.
var DefaultLimits = Limits{
	MaxEstimatedCost:      5_000_000,
	MaxEvalCost:           20_000,
	MaxValueBytes:         4 << 20,
	MaxNameBytes:          256,
	MaxMetadataEntries:    64,
	MaxMetadataKeyBytes:   256,
	MaxMetadataValueBytes: 4096,
}

func (l Limits) withDefaults() Limits {
	def := func(p *uint64, v uint64) {
		if *p == 0 {
			*p = v
		}
	}
	d := DefaultLimits
	def(&l.MaxEstimatedCost, d.MaxEstimatedCost)
	def(&l.MaxEvalCost, d.MaxEvalCost)
	def(&l.MaxValueBytes, d.MaxValueBytes)
	def(&l.MaxNameBytes, d.MaxNameBytes)
	def(&l.MaxMetadataEntries, d.MaxMetadataEntries)
	def(&l.MaxMetadataKeyBytes, d.MaxMetadataKeyBytes)
	def(&l.MaxMetadataValueBytes, d.MaxMetadataValueBytes)
	return l
}

// interruptEvery is how many comprehension steps run between two checks
// of the evaluation's context, so a watch whose stream ended stops its
// filter within microseconds rather than at the cost limit.
const interruptEvery = 100

// ErrInvalid wraps every compile error.
var ErrInvalid = errors.New("invalid where expression")

// ErrCostLimit wraps an evaluation stopped at the per-evaluation cost
// limit. The update is still delivered; the feed counts these and ends a
// watch that keeps reaching the limit with a CostError.
var ErrCostLimit = errors.New("where filter reached its cost limit")

// ErrTooCostly is matched (errors.Is) by every CostError: a watch ended
// because of what its filter costs. The server maps it to
// RESOURCE_EXHAUSTED with ErrorInfo reason FILTER_TOO_COSTLY.
var ErrTooCostly = errors.New("where filter too costly")

// Limit names carried by CostError.Limit (ErrorInfo metadata "limit").
const (
	LimitPerEvaluation       = "filter_cost_per_evaluation"
	LimitPerSessionPerSecond = "filter_cost_per_session_per_second"
)

// CostError ends a watch whose filter costs too much: it kept reaching the
// per-evaluation limit, or its session's filter budget ran out.
type CostError struct {
	Limit string // LimitPerEvaluation or LimitPerSessionPerSecond
	Max   int64  // the limit's value, in cost units
	What  string // what happened, for the message
}

func (e *CostError) Error() string {
	return fmt.Sprintf("where filter too costly: %s (limit %s is %d); the watch is ended", e.What, e.Limit, e.Max)
}

// Is makes every CostError match ErrTooCostly.
func (e *CostError) Is(target error) bool { return target == ErrTooCostly }

var env = mustEnv()

func mustEnv() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("old", cel.DynType),
		cel.Variable("new", cel.DynType),
		cel.Variable("name", cel.StringType),
		cel.Variable("metadata", cel.MapType(cel.StringType, cel.StringType)),
	)
	if err != nil {
		panic(err) // the declarations above are constant
	}
	return e
}

// Filter is a compiled expression; it is safe for concurrent use.
type Filter struct {
	src      string
	prg      cel.Program
	maxEval  uint64
	estimate uint64 // worst case over inputs at their limits
}

// Compile parses and checks expr, which must yield a bool, under
// DefaultLimits.
func Compile(src string) (*Filter, error) { return CompileWith(src, DefaultLimits) }

// CompileWith parses and checks expr, which must yield a bool and stay
// within the cost limits of l.
func CompileWith(src string, l Limits) (*Filter, error) {
	l = l.withDefaults()
	key := cacheKey{src, l}
	compiled.Lock()
	c, ok := compiled.m[key]
	compiled.Unlock()
	if ok {
		return c.f, c.err
	}
	f, err := compile(src, l)
	compiled.Lock()
	if len(compiled.m) >= maxCompiled {
		clear(compiled.m)
	}
	compiled.m[key] = compiledFilter{f, err}
	compiled.Unlock()
	return f, err
}

// compiled caches filters, and the errors of those that do not compile, by
// source and limits. Compiling costs about 0.2 ms for `new > old` and over
// 1 ms for a large expression, paid by every watch as it opens (a client
// that reopens watches in a loop would spend the CPU its filters may not),
// and a compiled Filter is safe for concurrent use. Emptying the cache when
// it is full bounds it simply: the filters in use at once are few.
var compiled = struct {
	sync.Mutex
	m map[cacheKey]compiledFilter
}{m: map[cacheKey]compiledFilter{}}

const maxCompiled = 256

type cacheKey struct {
	src string
	l   Limits
}

type compiledFilter struct {
	f   *Filter
	err error
}

func compile(src string, l Limits) (*Filter, error) {
	if len(src) > MaxExpressionBytes {
		return nil, fmt.Errorf("%w: %d bytes; the limit is %d", ErrInvalid, len(src), MaxExpressionBytes)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, iss.Err())
	}
	if !ast.OutputType().IsAssignableType(cel.BoolType) {
		return nil, fmt.Errorf("%w: %q yields %v, not bool", ErrInvalid, src, ast.OutputType())
	}
	worst, err := env.EstimateCost(ast, sizes{l: l})
	if err != nil {
		return nil, fmt.Errorf("%w: estimating its cost: %v", ErrInvalid, err)
	}
	if worst.Max > l.MaxEstimatedCost {
		return nil, fmt.Errorf("%w: its estimated worst-case cost is %s units, over values of up to %d bytes; the limit is %d",
			ErrInvalid, units(worst.Max), l.MaxValueBytes, l.MaxEstimatedCost)
	}
	empty, err := env.EstimateCost(ast, sizes{empty: true})
	if err != nil {
		return nil, fmt.Errorf("%w: estimating its cost: %v", ErrInvalid, err)
	}
	if empty.Max > l.MaxEvalCost {
		return nil, fmt.Errorf("%w: its estimated worst-case cost is %s units even over empty values; the limit per evaluation is %d",
			ErrInvalid, units(empty.Max), l.MaxEvalCost)
	}
	prg, err := env.Program(ast, cel.CostLimit(l.MaxEvalCost), cel.InterruptCheckFrequency(interruptEvery))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Filter{src: src, prg: prg, maxEval: l.MaxEvalCost, estimate: worst.Max}, nil
}

// units prints a cost estimate; an unbounded one is "unbounded".
func units(c uint64) string {
	if c == ^uint64(0) {
		return "unbounded"
	}
	return fmt.Sprint(c)
}

// sizes tells cel-go's estimator how large the inputs can be: at the
// limits, or empty.
type sizes struct {
	l     Limits
	empty bool
}

func (s sizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil // cel-go's own estimates for the standard functions
}

func (s sizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	p := n.Path()
	if len(p) == 0 {
		return nil
	}
	var max uint64
	switch p[0] {
	case "old", "new": // a string, an embedding, a tensor's shape or dtype
		max = s.l.MaxValueBytes
	case "name":
		max = s.l.MaxNameBytes
	case "metadata":
		switch {
		case len(p) == 1:
			max = s.l.MaxMetadataEntries
		case p[1] == "@keys":
			max = s.l.MaxMetadataKeyBytes
		default:
			max = s.l.MaxMetadataValueBytes
		}
	default:
		return nil
	}
	if s.empty {
		max = 0
	}
	e := cost.RangedSizeEstimate(0, max)
	return &e
}

// String returns the source expression.
func (f *Filter) String() string { return f.src }

// MaxEvalCost returns the cost at which one evaluation is stopped.
func (f *Filter) MaxEvalCost() uint64 { return f.maxEval }

// EstimatedCost returns the estimated worst-case cost of one evaluation
// over inputs at the size limits it was compiled with.
func (f *Filter) EstimatedCost() uint64 { return f.estimate }

// Match evaluates the filter. An evaluation error (a missing key, a type
// mismatch at run time, the cost limit) is returned with true: a filter that
// fails lets the update through, the same rule as client-side filters.
func (f *Filter) Match(old, new *pb.Value, name string, md map[string]string) (bool, error) {
	ok, _, err := f.Eval(context.Background(), old, new, name, md)
	return ok, err
}

// Eval is Match that also returns what the evaluation cost, for the
// session's filter budget, and stops within interruptEvery comprehension
// steps once ctx ends (the error then wraps ctx's cause). An evaluation
// stopped at the cost limit returns an error wrapping ErrCostLimit.
func (f *Filter) Eval(ctx context.Context, old, new *pb.Value, name string, md map[string]string) (pass bool, spent uint64, err error) {
	if md == nil {
		md = map[string]string{}
	}
	out, det, err := f.prg.ContextEval(ctx, map[string]any{
		"old": Native(old), "new": Native(new), "name": name, "metadata": md,
	})
	if det != nil {
		if c := det.ActualCost(); c != nil {
			spent = *c
		}
	}
	if err != nil {
		var ec interpreter.EvalCancelledError
		if errors.As(err, &ec) && ec.Cause == interpreter.CostLimitExceeded {
			return true, max(spent, f.maxEval), fmt.Errorf("%w (%d units): %q", ErrCostLimit, f.maxEval, f.src)
		}
		return true, spent, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return true, spent, fmt.Errorf("filter %q yielded %v", f.src, out.Type())
	}
	return bool(b), spent, nil
}

// Native converts a value to what CEL sees: int, double, string, bool, a list
// of doubles for an embedding, a map with dtype and shape for a tensor, and
// null when absent.
func Native(v *pb.Value) any {
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
		return x.EmbeddingValue.GetValues()
	case *pb.Value_TensorValue:
		return map[string]any{"dtype": x.TensorValue.GetDtype(), "shape": x.TensorValue.GetShape()}
	}
	return types.NullValue
}
