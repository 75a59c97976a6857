package local

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/store"
)

// Every test ends with no goroutine left: a State's own store is closed
// with it, or when New fails.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// New makes and closes its own store; a session it cannot create fails it
// with the store's error, and the store it made is closed anyway.
func TestNewOwnsItsStore(t *testing.T) {
	if _, err := New(varbridge.WithSessionID("bad\x01id")); !errors.Is(err, varbridge.ErrInvalidArgument) {
		t.Fatalf("New with a control character in the session id: %v", err)
	}
	s, err := New(varbridge.WithSessionID("own"))
	if err != nil {
		t.Fatal(err)
	}
	if s.SessionID() != "own" {
		t.Fatalf("session %q", s.SessionID())
	}
	if _, err := s.Register(context.Background(), "x", varbridge.TypeInteger, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "x"); !errors.Is(err, varbridge.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

// A State on a store it did not make leaves the store, and the session in
// it, open when it closes.
func TestCloseLeavesAGivenStoreOpen(t *testing.T) {
	st := store.New(store.Options{})
	defer st.Close()
	s, err := newState(st, []varbridge.Option{varbridge.WithSessionID("shared")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(context.Background(), "x", varbridge.TypeInteger, 1); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, _, err := st.Get("shared", "x"); err != nil {
		t.Fatalf("the variable after the State closed: %v", err)
	}
}

// A where expression that does not compile fails the watch with
// ErrInvalidArgument, as a BridgedState's does, and still says why.
func TestInvalidWhereIsInvalidArgument(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.WatchVariables(context.Background(), nil, func(string, any, any, varbridge.UpdateMeta) {}, varbridge.WithWhere("new >"))
	if !errors.Is(err, varbridge.ErrInvalidArgument) || err.Error() == "" {
		t.Fatalf("bad where: %v", err)
	}
}
