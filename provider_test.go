package varbridge_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	. "github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/store"
)

// Both providers return the same errors for the same failures.
func TestErrorsMatchAcrossProviders(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		ctx := context.Background()
		MustRegister(t, e.p, "n", TypeInteger, 5, WithConstraints(Constraints{Min: Ptr(0.0), Max: Ptr(10.0)}))
		if _, err := e.p.Register(ctx, "n", TypeInteger, 1); !errors.Is(err, ErrAlreadyExists) {
			t.Errorf("duplicate register: %v", err)
		}
		_, err := e.p.Set(ctx, "n", 11)
		var ce *ConstraintError
		if !errors.Is(err, ErrConstraint) || !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &ce) ||
			ce.Variable != "n" || ce.Constraint != "max" {
			t.Errorf("constraint: %v %+v", err, ce)
		}
		if _, err := e.p.Set(ctx, "n", 6, WithExpectedVersion(7)); !errors.Is(err, ErrVersionConflict) {
			t.Errorf("cas: %v", err)
		}
		if v, err := e.p.Set(ctx, "n", 6, WithExpectedVersion(1)); err != nil || v.Version != 2 || v.Value != int64(6) {
			t.Errorf("cas ok: %+v %v", v, err)
		}
		var nf *NotFoundError
		if _, err := e.p.Get(ctx, "missing"); !errors.As(err, &nf) || !slices.Equal(nf.Identifiers, []string{"missing"}) {
			t.Errorf("get missing: %v", err)
		}
		if _, err := e.p.SetMany(ctx, map[string]any{"n": 7, "m1": 1, "m2": 2}); !errors.As(err, &nf) || len(nf.Identifiers) != 2 {
			t.Errorf("set many with missing: %v", err)
		}
		found, missing, err := e.p.GetMany(ctx, []string{"n", "x"})
		if err != nil || found["n"].Value != int64(6) || !slices.Equal(missing, []string{"x"}) {
			t.Errorf("get many: %v %v %v", found, missing, err)
		}
		if _, err := e.p.WatchVariables(ctx, nil, func(string, any, any, UpdateMeta) {}, WithWhere("new >")); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("bad where: %v", err)
		}
		if _, err := e.p.Set(ctx, "n", "text"); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("wrong kind: %v", err)
		}
	})
}

func TestValuesRoundTrip(t *testing.T) {
	both(t, func(t *testing.T, e env) {
		ctx := context.Background()
		tensor := TensorFromFloat32([]int64{2, 2}, []float32{1, 2, 3, 4})
		cases := []struct {
			name string
			typ  Type
			in   any
			opts []WriteOption
			want any
		}{
			{"i", TypeInteger, 3, nil, int64(3)},
			{"f", TypeFloat, 2, nil, 2.0},
			{"s", TypeString, "hi", nil, "hi"},
			{"b", TypeBoolean, true, nil, true},
			{"c", TypeChoice, "gpt", []WriteOption{WithConstraints(Constraints{Choices: []string{"gpt", "claude"}})}, "gpt"},
			{"m", TypeModule, "Predict", nil, "Predict"},
			{"e", TypeEmbedding, []float32{0.5, 1}, nil, []float64{0.5, 1}},
			{"t", TypeTensor, tensor, []WriteOption{WithConstraints(Constraints{Shape: []int64{2, -1}, DType: Ptr("float32")})}, tensor},
		}
		for _, c := range cases {
			v := MustRegister(t, e.p, c.name, c.typ, c.in, c.opts...)
			got, err := e.p.Get(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if v.Type != c.typ || !equalValue(got.Value, c.want) {
				t.Errorf("%s: registered %+v, read %#v, want %#v", c.name, v, got.Value, c.want)
			}
		}
		f, err := e.p.Get(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if xs, err := f.Value.(Tensor).Float32s(); err != nil || !slices.Equal(xs, []float32{1, 2, 3, 4}) {
			t.Errorf("tensor decode %v %v", xs, err)
		}
		vars, err := e.p.List(ctx, "[a-f]")
		if err != nil || len(vars) != 4 || vars[0].Name != "b" {
			t.Errorf("list: %v %v", vars, err)
		}
	})
}

func equalValue(a, b any) bool {
	switch x := a.(type) {
	case []float64:
		y, ok := b.([]float64)
		return ok && slices.Equal(x, y)
	case Tensor:
		y, ok := b.(Tensor)
		return ok && x.DType == y.DType && slices.Equal(x.Shape, y.Shape) && string(x.Data) == string(y.Data)
	}
	return a == b
}

// Export from a local.State, import into a BridgedState: the session moves.
func TestExportLocalImportBridged(t *testing.T) {
	ctx := context.Background()
	l := newLocalEnv(t)
	MustRegister(t, l.p, "temperature", TypeFloat, 0.7, WithConstraints(Constraints{Min: Ptr(0.0), Max: Ptr(2.0)}),
		WithMetadata(map[string]string{"owner": "go"}))
	MustRegister(t, l.p, "model", TypeChoice, "a", WithConstraints(Constraints{Choices: []string{"a", "b"}}))
	snap, err := l.p.Export(ctx)
	if err != nil || len(snap.Variables) != 2 || snap.Revision != 2 {
		t.Fatalf("export %+v %v", snap, err)
	}
	b, _ := newBridgedEnv(t, store.Options{})
	MustRegister(t, b.p, "model", TypeChoice, "b", WithConstraints(Constraints{Choices: []string{"a", "b"}}))
	if err := b.p.Import(ctx, snap); err != nil {
		t.Fatal(err)
	}
	vars, err := b.p.List(ctx, "")
	if err != nil || len(vars) != 2 {
		t.Fatalf("after import %v %v", vars, err)
	}
	if vars[0].Name != "model" || vars[0].Value != "a" || vars[1].Value != 0.7 || vars[1].Metadata["owner"] != "go" ||
		*vars[1].Constraints.Max != 2.0 {
		t.Fatalf("imported %+v %+v", vars[0], vars[1])
	}
	if _, err := b.p.Set(ctx, "temperature", 3.0); !errors.Is(err, ErrConstraint) {
		t.Fatalf("imported constraints do not hold: %v", err)
	}
}
