package main

import (
	"context"
	"fmt"
	"os"
)

// benchWrites: 64 goroutines of one Go client (one BridgedState, one
// connection) write as fast as the server acknowledges, each Setting its
// own variable, against the in-memory server (issue 15's
// pipelined_writes_per_s_64). BridgedState.Set puts every write on the
// connection's WriteVariables stream, so the writes are pipelined; against
// a server without that RPC (an older binary, the A/B base) the same
// client writes unary.
func benchWrites(ctx context.Context, c *config, col *collector) error {
	srv, stopSrv, err := startServer(c, "writes")
	if err != nil {
		return err
	}
	defer stopSrv()
	const writers = 64
	params := map[string]any{
		"writers": writers, "seconds": c.tputDur.Seconds(),
		"how":    "64 goroutines share one BridgedState (one connection, one session), each Setting its own integer variable in a loop; acknowledged writes per second after a warm-up",
		"server": "varbridge serve --memory",
	}
	for r := range c.runs {
		end := srv.phase("writes-64")
		rate, cpu, err := varbridgeWriteRate(ctx, srv, sessionName("writes"), writers, c.tputDur)
		end()
		if err != nil {
			return fmt.Errorf("run %d: %w", r, err)
		}
		fmt.Fprintf(os.Stderr, "   64 pipelined writers %10.0f writes/s  server CPU %5.1f us/write\n", rate, cpu)
		col.add("pipelined_writes_per_s_64", "writes/s", rate, params)
		col.add("pipelined_writes_server_cpu_us", "us", cpu, withKV(params, "how", "server process CPU time per acknowledged write during the measured window"))
	}
	return nil
}
