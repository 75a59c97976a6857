package varbridge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/local"
)

// startServer serves a fresh in-memory store on loopback, as `varbridge
// serve` does, and returns its address and a function that stops it.
func startServer() (addr string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	st := store.New(store.Options{})
	g := server.New(st, server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))).GRPCServer()
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	return lis.Addr().String(), func() { g.Stop(); <-done; st.Close() }
}

func ExampleBridgedState_WatchVariables() {
	addr, stop := startServer()
	defer stop()
	ctx := context.Background()

	// A controller and a worker share session "pipeline" on the server.
	controller, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID("pipeline"))
	if err != nil {
		panic(err)
	}
	defer controller.Close()
	worker, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID("pipeline"))
	if err != nil {
		panic(err)
	}
	defer worker.Close()

	if _, err := controller.Register(ctx, "model", varbridge.TypeChoice, "small",
		varbridge.WithConstraints(varbridge.Constraints{Choices: []string{"small", "large"}})); err != nil {
		panic(err)
	}
	changed := make(chan struct{})
	ref, err := worker.WatchVariables(ctx, []string{"model"}, func(id string, old, new any, meta varbridge.UpdateMeta) {
		fmt.Printf("%s: %v -> %v by %s %v\n", id, old, new, meta.Source, meta.Metadata)
		close(changed)
	})
	if err != nil {
		panic(err)
	}
	// WatchVariables returned: the server has registered the watch.
	if _, err := controller.Set(ctx, "model", "large",
		varbridge.WithMetadata(map[string]string{"source": "controller", "reason": "accuracy"})); err != nil {
		panic(err)
	}
	<-changed
	_ = worker.UnwatchVariables(ref)
	// Output:
	// model: small -> large by controller map[reason:accuracy source:controller]
}

func ExampleUpdates() {
	ctx := context.Background()
	state, err := local.New()
	if err != nil {
		panic(err)
	}
	defer state.Close()
	if _, err := state.Register(ctx, "step", varbridge.TypeInteger, 0); err != nil {
		panic(err)
	}
	for u, err := range varbridge.Updates(ctx, state, []string{"step"}, varbridge.WithInitialValues(true)) {
		if err != nil {
			panic(err)
		}
		fmt.Println(u.Identifier, u.Old, "->", u.New)
		if u.Meta.Initial { // the watch is in place: start writing
			go func() {
				for i := 1; i <= 3; i++ {
					_, _ = state.Set(ctx, "step", i)
				}
			}()
		}
		if u.New == int64(3) {
			break // removes the watch
		}
	}
	// Output:
	// step <nil> -> 0
	// step 0 -> 1
	// step 1 -> 2
	// step 2 -> 3
}

// A compare-and-set that lost a race says which version it met, so the
// caller can re-read and try again.
func ExampleVersionConflictError() {
	ctx := context.Background()
	state, err := local.New()
	if err != nil {
		panic(err)
	}
	defer state.Close()
	v, err := state.Register(ctx, "model", varbridge.TypeString, "small")
	if err != nil {
		panic(err)
	}
	if _, err := state.Set(ctx, "model", "large"); err != nil { // another writer got there first
		panic(err)
	}
	_, err = state.Set(ctx, "model", "medium", varbridge.WithExpectedVersion(v.Version))
	var conflict *varbridge.VersionConflictError
	if errors.As(err, &conflict) {
		fmt.Printf("%s: expected version %d, found %d\n", conflict.Variable, conflict.Expected, conflict.Actual)
	}
	// Output:
	// model: expected version 1, found 2
}
