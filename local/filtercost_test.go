package local

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/store"
)

// A State's watch ended by its session's filter budget fails as a
// BridgedState one does: a LimitError naming the limit, matching ErrLimit.
func TestLocalFilterBudgetEndsWatchWithLimitError(t *testing.T) {
	st := store.New(store.Options{Filter: store.FilterLimits{CostPerSecond: 1}})
	defer st.Close()
	l, err := newState(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if _, err := l.Register(ctx, "x", varbridge.TypeInteger, 0); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	if _, err := l.WatchVariables(ctx, []string{"x"}, func(string, any, any, varbridge.UpdateMeta) {},
		varbridge.WithWhere("new > old"), varbridge.WithErrorHandler(func(err error) { ended <- err })); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for i := 1; ; i++ {
		if _, err := l.Set(ctx, "x", i); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ended:
			var le *varbridge.LimitError
			if !errors.As(err, &le) || le.Limit != "filter_cost_per_session_per_second" || !errors.Is(err, varbridge.ErrLimit) {
				t.Fatalf("watch ended with %T %v; want a LimitError naming filter_cost_per_session_per_second", err, err)
			}
			return
		case <-deadline:
			t.Fatal("the watch outlived its session's filter budget")
		case <-time.After(time.Millisecond):
		}
	}
}
