// Command controller is the Go half of `make demo`: it tunes `temperature`,
// a Python worker reacts by writing `fan_speed`, and the controller reacts to
// that in turn. It prints each exchange live and a summary at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/varbridge/varbridge"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "varbridge server")
	steps := flag.Int("steps", 24, "temperature changes to make")
	interval := flag.Duration("interval", 400*time.Millisecond, "time between changes")
	flag.Parse()
	if err := run(*addr, *steps, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

// exchange is one temperature change and the worker's answer to it.
type exchange struct {
	rev  int64         // revision of the temperature write
	sent time.Time     // when the controller wrote it
	rtt  time.Duration // write -> Python reacts -> Go watcher sees fan_speed
	pyUs int64         // the worker's own measure: commit -> its watch loop
	fan  int64
}

func run(addr string, steps int, interval time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bridge, err := varbridge.NewBridgedState(ctx, addr, varbridge.WithSessionID("demo"))
	if err != nil {
		return err
	}
	defer bridge.Close()

	for _, r := range []struct {
		name    string
		t       varbridge.Type
		initial any
		c       varbridge.Constraints
	}{
		{"temperature", varbridge.TypeFloat, 0.7, varbridge.Constraints{Min: varbridge.Ptr(0.0), Max: varbridge.Ptr(2.0)}},
		{"fan_speed", varbridge.TypeInteger, int64(0), varbridge.Constraints{Min: varbridge.Ptr(0.0), Max: varbridge.Ptr(5000.0)}},
		{"control", varbridge.TypeString, "starting", varbridge.Constraints{}},
	} {
		_, err := bridge.Register(ctx, r.name, r.t, r.initial, varbridge.WithConstraints(r.c), varbridge.WithSource("go-controller"))
		if err != nil && !errors.Is(err, varbridge.ErrAlreadyExists) {
			return err
		}
	}

	ready := make(chan struct{})
	var once sync.Once
	replies := make(chan exchange, steps)
	var mu sync.Mutex
	pending := map[int64]time.Time{} // temperature revision -> write time
	var lastRev int64
	outOfOrder := 0

	_, err = bridge.WatchVariables(ctx, []string{"fan_speed", "control"}, func(id string, _, new any, meta varbridge.UpdateMeta) {
		now := time.Now()
		if meta.Revision < lastRev { // initial values share one revision

			outOfOrder++
		}
		lastRev = meta.Revision
		switch id {
		case "control":
			if new == "worker-ready" {
				once.Do(func() { close(ready) })
			}
		case "fan_speed":
			rev, _ := strconv.ParseInt(meta.Metadata["temperature_revision"], 10, 64)
			pyUs, _ := strconv.ParseInt(meta.Metadata["reaction_us"], 10, 64)
			mu.Lock()
			sent, ok := pending[rev]
			delete(pending, rev)
			mu.Unlock()
			if ok {
				replies <- exchange{rev: rev, sent: sent, rtt: now.Sub(sent), pyUs: pyUs, fan: new.(int64)}
			}
		}
	}, varbridge.WithInitialValues(true))
	if err != nil {
		return err
	}

	fmt.Println("[go] waiting for the Python worker...")
	select {
	case <-ready:
	case <-ctx.Done():
		return errors.New("the Python worker did not report ready")
	}
	fmt.Println("[go] worker ready: tuning temperature")

	var done []exchange
	for i := range steps {
		t := math.Round((1.0+0.9*math.Sin(float64(i)/3))*1000) / 1000
		fmt.Printf("[go] set temperature = %.3f\n", t)
		mu.Lock() // hold the lock across the write so the reply cannot beat the bookkeeping
		sent := time.Now()
		v, err := bridge.Set(ctx, "temperature", t, varbridge.WithSource("go-controller"))
		if err != nil {
			mu.Unlock()
			return err
		}
		pending[v.Revision] = sent
		mu.Unlock()
		select {
		case x := <-replies:
			done = append(done, x)
			fmt.Printf("[go] saw fan_speed = %d from py-worker for revision %d: Go->Py %s, round trip %s\n",
				x.fan, x.rev, time.Duration(x.pyUs)*time.Microsecond, x.rtt.Round(time.Microsecond))
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no reaction to temperature revision %d", v.Revision)
		}
		time.Sleep(interval)
	}
	if _, err := bridge.Set(ctx, "control", "stop", varbridge.WithSource("go-controller")); err != nil {
		return err
	}
	summarize(done, steps, outOfOrder, bridge.ListWatchers())
	return nil
}

func summarize(xs []exchange, steps, outOfOrder int, ws []varbridge.WatchInfo) {
	rtts := make([]time.Duration, len(xs))
	py := make([]int64, len(xs))
	for i, x := range xs {
		rtts[i], py[i] = x.rtt, x.pyUs
	}
	slices.Sort(rtts)
	slices.Sort(py)
	pct := func(n int, p float64) int { return min(n-1, int(float64(n)*p)) }
	fmt.Println()
	fmt.Println("== summary ==")
	fmt.Printf("exchanges:            %d of %d answered, %d out of order\n", len(xs), steps, outOfOrder)
	fmt.Printf("Go -> Python:         p50 %s  max %s  (commit to Python watch loop)\n",
		time.Duration(py[pct(len(py), 0.5)])*time.Microsecond, time.Duration(py[len(py)-1])*time.Microsecond)
	fmt.Printf("round trip Go->Py->Go: p50 %s  max %s  (two writes, two watch deliveries)\n",
		rtts[pct(len(rtts), 0.5)].Round(time.Microsecond), rtts[len(rtts)-1].Round(time.Microsecond))
	for _, w := range ws {
		fmt.Printf("go watch %v: %d updates, %d reconnects, last revision %d\n", w.Identifiers, w.UpdatesReceived, w.Reconnects, w.LastRevision)
	}
}
