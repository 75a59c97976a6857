package etcdtest

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
)

// StartMain starts an n-member cluster for a whole test binary, from
// TestMain, where there is no test to own it: a test binary whose tests
// each run on one cluster (under a key prefix of their own) pays for the
// members' start once rather than per test. stop kills the members,
// removes their data and reports a member that exited by itself, with the
// tails of the logs; call it after m.Run, before checking for leaks.
//
// Tests share such a cluster: they may read Endpoints (and call Leader),
// but Client and Restart belong to a test's own cluster (Start), since
// they fail the test that owns the cluster, and Kill and Stop would break
// the other tests.
func StartMain(n int, opts ...Option) (c *Cluster, stop func() error, err error) {
	tb := &mainTB{}
	// Start reports failures through tb.Fatalf, which, as testing's does,
	// ends the goroutine that calls it: run it on a goroutine of its own.
	done := make(chan struct{})
	go func() {
		defer close(done)
		c = Start(tb, n, opts...)
	}()
	<-done
	if err := tb.err(); err != nil {
		return nil, nil, errors.Join(err, tb.runCleanups())
	}
	return c, tb.runCleanups, nil
}

// mainTB is the testing.TB a StartMain cluster reports to, for the methods
// Start and the Cluster call outside Client and Restart: failures are
// collected, logs go to stderr, cleanups run at stop. The embedded
// interface is nil; it only makes mainTB a testing.TB.
type mainTB struct {
	testing.TB

	mu       sync.Mutex
	errs     []error
	dirs     []string
	cleanups []func()
}

func (tb *mainTB) Helper()      {}
func (tb *mainTB) Name() string { return "etcdtest.StartMain" }

func (tb *mainTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcdtest: "+format+"\n", args...)
}

func (tb *mainTB) Errorf(format string, args ...any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.errs = append(tb.errs, fmt.Errorf(format, args...))
}

// Fatalf records the failure and ends the calling goroutine, as testing's
// Fatalf does; StartMain runs Start on a goroutine of its own for that.
func (tb *mainTB) Fatalf(format string, args ...any) {
	tb.Errorf(format, args...)
	runtime.Goexit()
}

func (tb *mainTB) Failed() bool { return tb.err() != nil }

func (tb *mainTB) err() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return errors.Join(tb.errs...)
}

func (tb *mainTB) TempDir() string {
	dir, err := os.MkdirTemp("", "etcdtest-main-")
	if err != nil {
		tb.Fatalf("TempDir: %v", err)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.dirs = append(tb.dirs, dir)
	return dir
}

func (tb *mainTB) Cleanup(f func()) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.cleanups = append(tb.cleanups, f)
}

// runCleanups runs the cleanups, last registered first, removes the
// temporary directories and returns every failure reported.
func (tb *mainTB) runCleanups() error {
	tb.mu.Lock()
	fs := tb.cleanups
	tb.cleanups = nil
	tb.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	tb.mu.Lock()
	dirs := tb.dirs
	tb.dirs = nil
	tb.mu.Unlock()
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	return tb.err()
}
