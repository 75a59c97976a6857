// Command controller is the Go half of `make demo` and `make cluster-demo`:
// it tunes `temperature`, a Python worker reacts by writing `fan_speed`,
// and the controller reacts to that in turn. It prints each exchange live
// and a summary at the end, which checks that each side saw every write of
// the other exactly once and in order: the Python worker reports what it
// saw when it stops, the controller counts what its own watch saw.
//
// Given several servers (--addr h1:p1,h2:p2, servers over one etcd
// cluster) it carries on when one dies. --pause-at stops it between two
// exchanges, with no write in flight, until a script has killed a server.
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
	addr := flag.String("addr", "127.0.0.1:50051", "varbridge server, or several that share their sessions: host:port,host:port")
	steps := flag.Int("steps", 24, "temperature changes to make")
	interval := flag.Duration("interval", 400*time.Millisecond, "time between changes")
	pauseAt := flag.Int("pause-at", 0, "after this many answered changes, create --pause-file and wait until it is removed (0: never)")
	pauseFile := flag.String("pause-file", "", "file that signals the pause (with --pause-at)")
	flag.Parse()
	if (*pauseAt > 0) != (*pauseFile != "") {
		fmt.Fprintln(os.Stderr, "controller: --pause-at and --pause-file go together")
		os.Exit(2)
	}
	if err := run(*addr, *steps, *interval, *pauseAt, *pauseFile); err != nil {
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

// tally is what the controller's watch saw, for the summary's checks. Its
// fields are guarded by the watcher's mutex.
type tally struct {
	fanSeen    int            // fan_speed changes delivered
	repeated   int            // changes delivered again (a revision seen before)
	outOfOrder int            // changes with a revision below the last one
	answers    map[int64]int  // temperature revision -> fan_speed answers to it
	revs       map[int64]bool // revisions delivered
	lastRev    int64
}

func run(addr string, steps int, interval time.Duration, pauseAt int, pauseFile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	var readyOnce sync.Once
	workerDone := make(chan map[string]string, 1)
	replies := make(chan exchange, steps)
	var mu sync.Mutex
	pending := map[int64]time.Time{} // temperature revision -> write time
	seen := tally{answers: map[int64]int{}, revs: map[int64]bool{}}

	_, err = bridge.WatchVariables(ctx, []string{"fan_speed", "control"}, func(id string, _, new any, meta varbridge.UpdateMeta) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if !meta.Initial { // initial values share one revision
			switch {
			case seen.revs[meta.Revision]:
				seen.repeated++
			case meta.Revision < seen.lastRev:
				seen.outOfOrder++
			}
			seen.revs[meta.Revision] = true
		}
		seen.lastRev = max(seen.lastRev, meta.Revision)
		switch id {
		case "control":
			switch new {
			case "worker-ready":
				readyOnce.Do(func() { close(ready) })
			case "worker-done":
				if !meta.Initial {
					select {
					case workerDone <- meta.Metadata:
					default:
					}
				}
			}
		case "fan_speed":
			if meta.Initial {
				return
			}
			seen.fanSeen++
			rev, _ := strconv.ParseInt(meta.Metadata["temperature_revision"], 10, 64)
			pyUs, _ := strconv.ParseInt(meta.Metadata["reaction_us"], 10, 64)
			seen.answers[rev]++
			if sent, ok := pending[rev]; ok {
				delete(pending, rev)
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
		if pauseAt > 0 && i == pauseAt {
			if err := pause(ctx, pauseFile, i, steps); err != nil {
				return err
			}
		}
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
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no reaction to temperature revision %d", v.Revision)
		}
		time.Sleep(interval)
	}
	// The worker answers "stop" with "worker-done" and what it saw. Updates
	// arrive in revision order, so any fan_speed delivered again would
	// arrive before it.
	_, err = bridge.Set(ctx, "control", "stop", varbridge.WithSource("go-controller"),
		varbridge.WithMetadata(map[string]string{"temperature_writes": strconv.Itoa(steps)}))
	if err != nil {
		return err
	}
	var report map[string]string
	select {
	case report = <-workerDone:
	case <-time.After(10 * time.Second):
		return errors.New("the Python worker did not report what it saw")
	}
	mu.Lock()
	defer mu.Unlock()
	return summarize(done, steps, seen, report, bridge.ListWatchers())
}

// pause creates file and waits until it is removed: the cluster demo kills
// a server meanwhile, with no write of the demo in flight.
func pause(ctx context.Context, file string, answered, steps int) error {
	if err := os.WriteFile(file, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("[go] half-way (%d of %d changes answered, no write in flight): pausing until %s is removed\n", answered, steps, file)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			fmt.Println("[go] going on")
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("paused until %s was removed: %w", file, ctx.Err())
		}
	}
}

// summarize prints the summary and fails when a write of either side was
// lost, repeated or seen out of order by the other side.
func summarize(xs []exchange, steps int, seen tally, worker map[string]string, ws []varbridge.WatchInfo) error {
	rtts := make([]time.Duration, len(xs))
	py := make([]int64, len(xs))
	for i, x := range xs {
		rtts[i], py[i] = x.rtt, x.pyUs
	}
	slices.Sort(rtts)
	slices.Sort(py)
	pct := func(n int, p float64) int { return min(n-1, int(float64(n)*p)) }
	num := func(key string) int {
		n, err := strconv.Atoi(worker[key])
		if err != nil {
			return -1 // a report without it fails the checks below
		}
		return n
	}
	pySeen, pyRepeated, pyOutOfOrder := num("temperature_seen"), num("repeated"), num("out_of_order")
	pyWrites := num("fan_speed_writes")
	unanswered, answeredTwice := 0, 0
	for _, x := range xs {
		switch n := seen.answers[x.rev]; {
		case n == 0:
			unanswered++
		case n > 1:
			answeredTwice++
		}
	}

	fmt.Println()
	fmt.Println("== summary ==")
	fmt.Printf("exchanges:             %d of %d answered\n", len(xs), steps)
	fmt.Printf("temperature (Go):      %d written, Python saw %d: %d lost, %d repeated, %d out of order\n",
		steps, pySeen, max(steps-pySeen, 0), pyRepeated, pyOutOfOrder)
	fmt.Printf("fan_speed (Python):    %d written, Go saw %d: %d lost, %d repeated, %d out of order\n",
		pyWrites, seen.fanSeen, max(pyWrites-seen.fanSeen, 0), seen.repeated, seen.outOfOrder)
	if len(py) > 0 {
		fmt.Printf("Go -> Python:          p50 %s  max %s  (commit to Python watch loop)\n",
			time.Duration(py[pct(len(py), 0.5)])*time.Microsecond, time.Duration(py[len(py)-1])*time.Microsecond)
		fmt.Printf("round trip Go->Py->Go: p50 %s  max %s  (two writes, two watch deliveries)\n",
			rtts[pct(len(rtts), 0.5)].Round(time.Microsecond), rtts[len(rtts)-1].Round(time.Microsecond))
	}
	for _, w := range ws {
		fmt.Printf("go watch %v:       %d updates, failovers %d, reconnects %d, last revision %d\n",
			w.Identifiers, w.UpdatesReceived, w.Failovers, w.Reconnects, w.LastRevision)
	}
	fmt.Printf("python watch [temperature control]: failovers %s, reconnects %s\n", worker["failovers"], worker["reconnects"])

	var bad []string
	if len(xs) != steps || unanswered > 0 || answeredTwice > 0 {
		bad = append(bad, fmt.Sprintf("%d of %d changes answered once, %d answered twice", len(xs)-unanswered-answeredTwice, steps, answeredTwice))
	}
	if pySeen != steps || pyRepeated != 0 || pyOutOfOrder != 0 {
		bad = append(bad, "Python did not see every temperature write exactly once, in order")
	}
	if pyWrites != steps || seen.fanSeen != pyWrites || seen.repeated != 0 || seen.outOfOrder != 0 {
		bad = append(bad, "Go did not see every fan_speed write exactly once, in order")
	}
	if len(bad) > 0 {
		fmt.Println("check: FAILED")
		return errors.New(fmt.Sprint(bad))
	}
	fmt.Println("check: every write seen once by the other side, in order: nothing lost or repeated")
	return nil
}
