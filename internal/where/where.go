// Package where compiles and evaluates server-side watch filters written in
// CEL over old, new, name and metadata.
package where

import (
	"errors"
	"fmt"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// MaxExpressionBytes bounds the source of a filter.
const MaxExpressionBytes = 4096

// costLimit bounds the work one evaluation may do, so that a filter cannot
// stall its stream (CEL's cost units, roughly one per operation).
const costLimit = 100_000

// ErrInvalid wraps every compile error.
var ErrInvalid = errors.New("invalid where expression")

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
	src string
	prg cel.Program
}

// Compile parses and checks expr, which must yield a bool.
func Compile(src string) (*Filter, error) {
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
	prg, err := env.Program(ast, cel.CostLimit(costLimit))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Filter{src: src, prg: prg}, nil
}

// String returns the source expression.
func (f *Filter) String() string { return f.src }

// Match evaluates the filter. An evaluation error (a missing key, a type
// mismatch at run time, the cost limit) is returned with true: a filter that
// fails lets the update through, the same rule as client-side filters.
func (f *Filter) Match(old, new *pb.Value, name string, md map[string]string) (bool, error) {
	if md == nil {
		md = map[string]string{}
	}
	out, _, err := f.prg.Eval(map[string]any{
		"old": Native(old), "new": Native(new), "name": name, "metadata": md,
	})
	if err != nil {
		return true, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return true, fmt.Errorf("filter %q yielded %v", f.src, out.Type())
	}
	return bool(b), nil
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
