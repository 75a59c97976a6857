package server_test

// BenchmarkFilterAttack measures issue 10's filter attack: 200 watches, on
// one session, with the most expensive where filter the server accepts,
// while a plain writer and a plain watcher (no filter) work on another
// session or on the attacked one. It reports the writer's SetVariable p50
// and the write-to-watcher p50, in milliseconds, and how many attack
// watches the server ended. In the reopening variants the attacker opens a
// watch again as soon as the server ends it; plain-churn opens and closes
// unfiltered watches as fast, to tell the cost of churning streams from
// the cost of filters.
//
//	go test -run '^$' -bench BenchmarkFilterAttack -benchtime 300x ./internal/server
//
// The filter is issue 10's (three nested comprehensions over a 100-element
// list) when the server accepts it; otherwise the largest n for which
// L.all(a, L.all(b, true)) over an n-element list L is accepted.
// VARBRIDGE_ATTACK_WHERE sets another.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

const (
	attackWatches = 200
	attackConns   = 4 // the attacker's own connections, 50 streams each
)

func attackList(n int) string {
	xs := make([]string, n)
	for i := range xs {
		xs[i] = fmt.Sprint(i)
	}
	return "[" + strings.Join(xs, ",") + "]"
}

// attackFilter returns the most expensive filter of the attack's shape
// that where.Compile accepts.
func attackFilter(b *testing.B) (src, what string) {
	if s := os.Getenv("VARBRIDGE_ATTACK_WHERE"); s != "" {
		return s, "VARBRIDGE_ATTACK_WHERE"
	}
	l := attackList(100)
	if src := l + ".all(a, " + l + ".all(b, " + l + ".all(c, true)))"; compiles(src) {
		return src, "issue 10's: L.all(a, L.all(b, L.all(c, true))), L of 100 elements"
	}
	for n := 100; n > 1; n-- {
		l := attackList(n)
		if src := l + ".all(a, " + l + ".all(b, true))"; compiles(src) {
			return src, fmt.Sprintf("L.all(a, L.all(b, true)), L of %d elements", n)
		}
	}
	b.Fatal("no attack filter compiles")
	return "", ""
}

func compiles(src string) bool { _, err := where.Compile(src); return err == nil }

func BenchmarkFilterAttack(b *testing.B) {
	filter, what := attackFilter(b)
	b.Logf("attack filter: %s (%d bytes)", what, len(filter))
	for _, c := range []struct {
		name    string
		attack  bool
		session string // the attacked session
		reopen  bool   // open a watch again when the server ends it
		churn   bool   // no filter: close each watch as soon as it is open
	}{
		{"baseline", false, "", false, false},
		{"attack-other-session", true, "attack", false, false},
		{"attack-same-session", true, "victim", false, false},
		{"reopening-attack-other-session", true, "attack", true, false},
		{"reopening-attack-same-session", true, "victim", true, false},
		{"plain-churn-same-session", true, "victim", true, true},
	} {
		f := filter
		if c.churn {
			f = ""
		}
		b.Run(c.name, func(b *testing.B) { runFilterAttack(b, f, c.attack, c.session, c.reopen, c.churn) })
	}
}

func runFilterAttack(b *testing.B, filter string, attack bool, attacked string, reopen, churn bool) {
	srv := servertest.Start(b, store.Options{})
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		return conn
	}
	conn := dial()
	defer conn.Close()
	c := pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, id := range []string{"victim", "attack"} {
		if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: id}); err != nil {
			b.Fatal(err)
		}
		if _, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: id, Name: "x", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: intVal(0)}); err != nil {
			b.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	var reopened atomic.Int64
	var conns []*grpc.ClientConn
	actx, stopAttack := context.WithCancel(ctx)
	defer func() {
		stopAttack()
		wg.Wait()
		for _, ac := range conns {
			ac.Close()
		}
	}()
	if attack {
		started := make(chan struct{}, attackWatches)
		for range attackConns {
			ac := dial()
			conns = append(conns, ac)
			client := pb.NewBridgeServiceClient(ac)
			for range attackWatches / attackConns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					first := true
					for actx.Err() == nil {
						sctx, closeStream := context.WithCancel(actx)
						ws, err := client.WatchVariables(sctx, &pb.WatchVariablesRequest{SessionId: attacked, VariableIdentifiers: []string{"x"}, Where: filter})
						if err == nil {
							_, err = ws.Header()
						}
						if first {
							first = false
							started <- struct{}{}
						}
						if churn {
							closeStream()
						}
						for err == nil {
							_, err = ws.Recv()
						}
						closeStream()
						if actx.Err() == nil {
							reopened.Add(1)
						}
						if !reopen {
							return
						}
					}
				}()
			}
		}
		for range attackWatches {
			<-started
		}
		if attacked != "victim" { // someone writes to the attacked session, as often as the victim's writer
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := int64(1); actx.Err() == nil; n++ {
					_, _ = c.SetVariable(actx, &pb.SetVariableRequest{SessionId: "attack", VariableIdentifier: "x", Value: intVal(n)})
					time.Sleep(time.Millisecond)
				}
			}()
		}
	}

	ws, err := c.WatchVariables(ctx, &pb.WatchVariablesRequest{SessionId: "victim", VariableIdentifiers: []string{"x"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ws.Header(); err != nil {
		b.Fatal(err)
	}
	writer := make([]time.Duration, 0, b.N)
	watcher := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		v := int64(1_000_000 + i)
		start := time.Now()
		if _, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "victim", VariableIdentifier: "x", Value: intVal(v)}); err != nil {
			b.Fatal(err)
		}
		writer = append(writer, time.Since(start))
		for {
			u, err := ws.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if u.GetVariable().GetValue().GetIntValue() == v {
				break
			}
		}
		watcher = append(watcher, time.Since(start))
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(writer), "writer-p50-ms")
	b.ReportMetric(p50(watcher), "watcher-p50-ms")
	b.ReportMetric(float64(reopened.Load()), "attack-watches-ended")
}
