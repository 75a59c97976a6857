// Command readme is the Go example in README.md, verbatim.
package main

import (
	"cmp"
	"context"
	"fmt"
	"log"
	"os"

	"github.com/varbridge/varbridge"
)

func main() {
	ctx := context.Background()
	addr := cmp.Or(os.Getenv("VARBRIDGE_ADDR"), "127.0.0.1:50051")
	bridge, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID("readme-go"))
	if err != nil {
		log.Fatal(err)
	}
	defer bridge.Close()
	defer bridge.CleanupSession(ctx) // removes the session and ends its watches
	limits := varbridge.Constraints{Min: varbridge.Ptr(0.0), Max: varbridge.Ptr(2.0)}
	if _, err := bridge.Register(ctx, "temperature", varbridge.TypeFloat, 0.7, varbridge.WithConstraints(limits)); err != nil {
		log.Fatal(err)
	}
	updates, err := varbridge.Watch(ctx, bridge, []string{"temperature"}) // a channel, like etcd's
	if err != nil {
		log.Fatal(err)
	}
	if _, err := bridge.Set(ctx, "temperature", 0.9, varbridge.WithSource("go")); err != nil {
		log.Fatal(err)
	}
	u := <-updates
	fmt.Println(u.Identifier, u.Old, "->", u.New, "by", u.Meta.Source)
	_, err = bridge.Set(ctx, "temperature", 3.5) // breaks max: nothing changes
	fmt.Println("rejected:", err)
}
