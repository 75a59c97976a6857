package varbridge_test

// The tests of this package run each scenario on both providers, a
// BridgedState and a local.State, and so live outside package varbridge
// (package local imports it). The dot import is the one Go allows tests
// that cannot be part of the package they test; the helpers they share
// with the package's own tests (MustRegister, Recorder, ...) are in
// harness_test.go.

import (
	"fmt"
	"sync/atomic"
	"testing"

	. "github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/testhooks"
	"github.com/varbridge/varbridge/local"
)

// env is a provider under test plus direct access to the store behind it:
// the local.State's, or the store of the server the BridgedState talks to.
// In cluster mode (see StartServer) the state's calls and watches go to
// both servers, st is the second server's, and set and setMany take turns
// at the two servers' stores, so that every watch sees writes made through
// the server it is not on, wherever it opened.
type env struct {
	name   string
	p      StateProvider
	st     *store.Store
	stores []*store.Store // every server's, st among them
	turn   *atomic.Int64  // of set and setMany, at stores
}

// writeStore is the store the next direct write goes through.
func (e env) writeStore() *store.Store {
	return e.stores[int(e.turn.Add(1))%len(e.stores)]
}

// watchCount is the number of watches on every server.
func (e env) watchCount() int {
	n := 0
	for _, st := range e.stores {
		n += st.WatchCount()
	}
	return n
}

// sessionWatchCount is the session's watch count summed over every server.
func (e env) sessionWatchCount(t testing.TB) int64 {
	t.Helper()
	var n int64
	for _, st := range e.stores {
		info, err := st.GetSession(e.p.SessionID())
		if err != nil {
			t.Fatalf("session %s: %v", e.p.SessionID(), err)
		}
		n += int64(info.WatchCount)
	}
	return n
}

// set writes through the store, not through the provider.
func (e env) set(t testing.TB, ident string, v any, md map[string]string) int64 {
	t.Helper()
	val, err := ToProto("", v)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.writeStore().Set(e.p.SessionID(), []store.Write{{Identifier: ident, Value: val}}, md, "")
	if err != nil {
		t.Fatalf("store set %s=%v: %v", ident, v, err)
	}
	return res.Revision
}

// setMany writes a batch through the store.
func (e env) setMany(t testing.TB, vals map[string]any) int64 {
	t.Helper()
	var ws []store.Write
	for id, v := range vals {
		val, err := ToProto("", v)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, store.Write{Identifier: id, Value: val})
	}
	res, err := e.writeStore().Set(e.p.SessionID(), ws, nil, "batch")
	if err != nil {
		t.Fatalf("store set many: %v", err)
	}
	return res.Revision
}

// newLocalEnv is a local.State on a store of its own, both closed when the
// test ends.
func newLocalEnv(t testing.TB, opts ...Option) env {
	t.Helper()
	st := store.New(store.Options{})
	t.Cleanup(st.Close)
	return newLocalEnvOn(t, st, opts...)
}

// newLocalEnvOn is a local.State on st (testhooks.LocalOnStore), closed
// when the test ends; st stays open.
func newLocalEnvOn(t testing.TB, st *store.Store, opts ...Option) env {
	t.Helper()
	opts = append([]Option{WithSessionID(fmt.Sprintf("local-%d", SessionSeq.Add(1))), WithLogger(Quiet)}, opts...)
	l, err := testhooks.LocalOnStore.(func(*store.Store, ...Option) (*local.State, error))(st, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return env{name: "local", p: l, st: st, stores: []*store.Store{st}, turn: new(atomic.Int64)}
}

func newBridgedEnv(t testing.TB, storeOpts store.Options, opts ...Option) (env, *TestServer) {
	t.Helper()
	srv := StartServer(t, storeOpts)
	b := DialBridged(t, srv.Addr, opts...)
	return env{name: "bridged", p: b, st: srv.Store, stores: srv.Stores(), turn: new(atomic.Int64)}, srv
}

// both runs f against a local.State and a BridgedState.
func both(t *testing.T, f func(t *testing.T, e env)) {
	t.Run("local", func(t *testing.T) { f(t, newLocalEnv(t)) })
	t.Run("bridged", func(t *testing.T) {
		e, _ := newBridgedEnv(t, store.Options{})
		f(t, e)
	})
}
