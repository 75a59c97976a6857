package local_test

import (
	"context"
	"fmt"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/local"
)

func ExampleState_WatchVariables() {
	ctx := context.Background()
	state, err := local.New(varbridge.WithSessionID("demo"))
	if err != nil {
		panic(err)
	}
	defer state.Close()
	if _, err := state.Register(ctx, "temperature", varbridge.TypeFloat, 0.7); err != nil {
		panic(err)
	}

	changed := make(chan struct{})
	ref, err := state.WatchVariables(ctx, []string{"temperature"}, func(id string, old, new any, meta varbridge.UpdateMeta) {
		fmt.Printf("%s: %v -> %v (initial=%v, source=%q, revision %d)\n", id, old, new, meta.Initial, meta.Source, meta.Revision)
		if !meta.Initial {
			close(changed)
		}
	}, varbridge.WithInitialValues(true))
	if err != nil {
		panic(err)
	}
	if _, err := state.Set(ctx, "temperature", 0.9, varbridge.WithSource("tuner")); err != nil {
		panic(err)
	}
	<-changed
	_ = state.UnwatchVariables(ref)
	// Output:
	// temperature: <nil> -> 0.7 (initial=true, source="", revision 1)
	// temperature: 0.7 -> 0.9 (initial=false, source="tuner", revision 2)
}
