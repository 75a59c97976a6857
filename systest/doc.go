// Package systest holds varbridge's whole-system suites: faults, leaks,
// slow consumers and server restarts, each run against real servers and
// real clients, as grpc-go's test/ and etcd's tests/ do. The package has no
// code of its own; its tests use varbridge as a user does, through the
// exported API of github.com/varbridge/varbridge, with the module's test
// servers (internal/servertest, or the varbridge binary built from this
// tree), its fault proxy (internal/cutproxy) and the server's metrics to
// stand up and observe the other side.
//
//   - chaos_test.go: a proxy cuts, stalls and blackholes watch connections
//     while writers run at full speed; every watch gets every revision
//     exactly once, in order, batches whole; keepalive finds blackholes on
//     both ends; a restarted in-memory server ends old watches with
//     ErrSessionNotFound.
//   - leak_test.go: watch/unwatch churn on both providers and SIGKILLed or
//     vanished client processes leave no goroutine, observer or heap behind;
//     Watch and Updates end with their provider.
//   - slow_test.go: writers keep pace next to watchers that stopped
//     reading, memory stays bounded, and a stalled watcher is resynced.
//   - restart_test.go: the varbridge binary SIGKILLed and restarted under a
//     watch (RESYNC in the new incarnation), resuming across incarnations,
//     waiting for a server that starts late, retried reads.
//   - crash_test.go: the durable binary (--data-dir, --fsync always)
//     SIGKILLed at random moments and restarted on its data directory under
//     Go and Python writers (sets, atomic batches, compare-and-set) and Go
//     and Python watchers behind the cut proxy: every acknowledged write at
//     its version, no batch partly applied, every watcher exactly once and
//     in order without RESYNC (VARBRIDGE_CRASH_KILLS, 5; make chaos: 25).
//   - durable_restart_test.go: durable restarts with watchers idle,
//     mid-batch and behind the history window; session expiry across a
//     restart.
//   - failover_test.go: clients given two addresses (Go writer and watcher,
//     Python watcher) carry on at the second when the durable server on the
//     first is SIGKILLed and one on the same data directory starts there:
//     every change exactly once, in order, no RESYNC; a write cut off fails
//     ErrUnavailable and is never sent again.
//
// The Python parts run crash_client.py (testdata) with the repository's
// virtualenv (.venv, or $VARBRIDGE_PYTHON) and are skipped without one,
// unless VARBRIDGE_REQUIRE_PYTHON is set (make test and make chaos set it,
// and VARBRIDGE_BIN, the binary make just built, which these tests then
// use instead of building their own).
//
// `go test ./systest` (and so `make test`, which runs `go test -race ./...`)
// runs them at short sizes. The long versions:
//
//	make chaos   # the fault suite at 100,000 updates with two blackholes,
//	             # the leak tests, and the strict 10% writer-throughput
//	             # bound without the race detector
//
// or by hand, with the knobs make chaos sets:
//
//	VARBRIDGE_CHAOS_UPDATES=100000 VARBRIDGE_CHAOS_BLACKHOLES=2 \
//	  go test -race -count=1 -timeout 30m -v -run '^(TestChaos|TestLeak)' ./systest
//	VARBRIDGE_CHAOS_STRICT=1 go test -count=1 -timeout 10m -v -run '^TestSlowConsumer' ./systest
//
// (or the flags -chaos.updates, -chaos.blackholes, -chaos.strict, and
// -leak.local, -leak.bridged, or VARBRIDGE_LEAK_LOCAL_CYCLES and
// VARBRIDGE_LEAK_BRIDGED_CYCLES, for the watch/unwatch cycles, 100,000 per
// provider by default).
//
// The soak (make soak, or VARBRIDGE_SOAK=3m go test -run '^TestSoak$'
// ./systest) puts local.State watches on the very store the in-process
// server serves, through package local's test hook (internal/testhooks).
package systest
