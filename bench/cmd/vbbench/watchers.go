package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The watchers subcommand holds the watches of the fanout and cluster
// groups in a process of their own, so that they do not share the
// harness's runtime (and its writer) with the thing they measure, as
// issue 15 lays out the fan-out: 10,000 watches over 100 client
// connections, in a separate process from the writer. Latencies cross the
// process boundary as CLOCK_MONOTONIC readings (mono), one clock for every
// process of the machine.

// fanoutResult is the watchers fanout modes' last line: latencies in
// microseconds.
type fanoutResult struct {
	P50, P99, Max float64
	LastP50       float64 // median over writes of each write's slowest delivery
	OpenedMs      int64
}

// watchersCmd is the "watchers" subcommand. Modes:
//
//   - fanout: n varbridge watches of variable x of one session (the
//     session must exist), on one Watch stream per connection
//     (openMuxWatchers);
//   - etcd-fanout: n clientv3 watchers of one key (-session names it) on
//     conns clientv3 clients (openEtcdWatchers);
//
// both print "ready", then "got W" once write W reached every watch, and
// after the last write a fanoutResult as JSON (the first two writes warm
// up and are left out). Mode sessions opens one varbridge watch of x on
// each of the sessions SESSION-0 .. SESSION-(n-1), prints "ready" and
// keeps them open until SIGTERM.
func watchersCmd(args []string) error {
	fs := flag.NewFlagSet("watchers", flag.ExitOnError)
	mode := fs.String("mode", "fanout", "fanout, etcd-fanout or sessions")
	addrs := fs.String("addrs", "", "server addresses, comma-separated: connection i goes to the (i mod len)-th (etcd-fanout: one)")
	session := fs.String("session", "", "fanout: the session; etcd-fanout: the key; sessions: the sessions' prefix")
	n := fs.Int("n", 1, "watches")
	conns := fs.Int("conns", 1, "connections")
	writes := fs.Int("writes", 1, "fanout modes: writes to wait for")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	as := strings.Split(*addrs, ",")
	switch *mode {
	case "fanout":
		f, err := openMuxWatchers(ctx, as, *session, *n, *conns, *writes)
		if err != nil {
			return err
		}
		defer f.close()
		return reportFanout(f, *writes)
	case "etcd-fanout":
		if len(as) != 1 {
			return fmt.Errorf("etcd-fanout: one address, not %d", len(as))
		}
		f, err := openEtcdWatchers(ctx, as[0], *session, *n, *conns, *writes)
		if err != nil {
			return err
		}
		defer f.close()
		return reportFanout(f, *writes)
	case "sessions":
		clients := make([]pb.BridgeServiceClient, *conns)
		var ccs []*grpc.ClientConn
		defer func() {
			for _, cc := range ccs {
				_ = cc.Close()
			}
		}()
		for i := range clients {
			cc, c, err := dial(as[i%len(as)])
			if err != nil {
				return err
			}
			ccs = append(ccs, cc)
			clients[i] = c
		}
		if _, err := openMuxStreamsOf(ctx, clients, func(i int) string { return *session + "-" + strconv.Itoa(i) }, *n, nil, nil); err != nil {
			return err
		}
		fmt.Println("ready")
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("unknown mode %q", *mode)
}

// reportFanout is the fanout modes' protocol on stdout, on open watches.
func reportFanout(f *fanout, writes int) error {
	fmt.Println("ready")
	var all, last []int64
	for w := range writes {
		if err := f.wait(w, time.Minute); err != nil {
			return err
		}
		fmt.Println("got", w)
		if w >= 2 { // the first two warm up
			all = append(all, f.lat[w]...)
			last = append(last, pct(f.lat[w], 100))
		}
	}
	if e := f.errs.Load(); e > 0 {
		return fmt.Errorf("%d watch streams failed", e)
	}
	p50, p99, pmax := latencyStats(all)
	lp50, _, _ := latencyStats(last)
	b, err := json.Marshal(fanoutResult{P50: p50, P99: p99, Max: pmax, LastP50: lp50, OpenedMs: f.opened.Milliseconds()})
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

// remoteFanout runs a watchers process (self watchers ARGS, a fanout mode),
// and once its watches are open makes writes spaced writes with write (each
// stamping mono() as the value), each after the last reached every watch,
// 20 ms apart; it returns the process's statistics.
// varbridgeFanout is remoteFanout on a varbridge session it makes (with
// variable x) through the server at writer and removes afterwards: the
// watchers process gets args plus -session, and each write is a
// SetVariable of x carrying the monotonic time it was sent.
func varbridgeFanout(ctx context.Context, self, writer, session string, args []string, writes int) (fanoutResult, error) {
	wcc, wc, err := dial(writer)
	if err != nil {
		return fanoutResult{}, err
	}
	defer wcc.Close()
	if err := newSession(ctx, wc, session, "x"); err != nil {
		return fanoutResult{}, err
	}
	defer func() { _, _ = wc.CleanupSession(context.Background(), &pb.CleanupSessionRequest{SessionId: session}) }()
	return remoteFanout(ctx, self, append(args, "-session", session), writes, func() error {
		_, err := wc.SetVariable(ctx, &pb.SetVariableRequest{SessionId: session, VariableIdentifier: "x", Value: intValue(mono())})
		return err
	})
}

func remoteFanout(ctx context.Context, self string, args []string, writes int, write func() error) (fanoutResult, error) {
	var res fanoutResult
	w, err := startPython(ctx, self, append([]string{"watchers"}, args...)...)
	if err != nil {
		return res, err
	}
	defer w.kill()
	line, err := w.waitLine(3 * time.Minute)
	if err != nil {
		return res, err
	}
	if line != "ready" {
		return res, fmt.Errorf("watchers: %q", line)
	}
	for i := range writes {
		if err := write(); err != nil {
			return res, err
		}
		line, err := w.waitLine(time.Minute)
		if err != nil {
			return res, err
		}
		if line != fmt.Sprint("got ", i) {
			return res, fmt.Errorf("watchers: %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
	line, err = w.waitLine(time.Minute)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return res, fmt.Errorf("watchers: %q: %w", line, err)
	}
	return res, nil
}
