package store_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func TestCreateSession(t *testing.T) {
	clk := newClock()
	st := newStore(t, store.Options{Now: clk.Now, TTL: 10 * time.Minute})

	info, created, err := st.CreateSession("demo", 0, map[string]string{"owner": "go"})
	if err != nil || !created {
		t.Fatalf("CreateSession(demo) = %v, %v", created, err)
	}
	if info.ID != "demo" || info.TTL != 10*time.Minute || !info.CreatedAt.Equal(clk.Now()) ||
		!info.ExpiresAt.Equal(clk.Now().Add(10*time.Minute)) || info.Revision != 0 || info.VariableCount != 0 ||
		info.Metadata["owner"] != "go" {
		t.Errorf("info = %+v", info)
	}
	p := info.Proto()
	if p.SessionId != "demo" || p.Ttl.AsDuration() != 10*time.Minute || !p.ExpiresAt.AsTime().Equal(info.ExpiresAt) {
		t.Errorf("Proto = %v", p)
	}

	register(t, st, "demo", "x", tInt, intV(1), nil)
	clk.Advance(time.Minute)
	again, created, err := st.CreateSession("demo", time.Hour, nil)
	if err != nil || created {
		t.Fatalf("CreateSession(existing) = created %v, %v; want false, nil", created, err)
	}
	if again.Revision != 1 || again.VariableCount != 1 || !again.CreatedAt.Equal(info.CreatedAt) || again.TTL != 10*time.Minute {
		t.Errorf("existing session info = %+v", again)
	}
	if !again.ExpiresAt.Equal(clk.Now().Add(10 * time.Minute)) {
		t.Errorf("creating an existing session did not extend it: expires %v", again.ExpiresAt)
	}

	custom, _, err := st.CreateSession("short", 30*time.Second, nil)
	if err != nil || custom.TTL != 30*time.Second {
		t.Errorf("custom ttl: %+v %v", custom, err)
	}

	seen := map[string]bool{}
	for range 20 {
		info, created, err := st.CreateSession("", 0, nil)
		if err != nil || !created || info.ID == "" || seen[info.ID] {
			t.Fatalf("generated session: %+v %v %v", info, created, err)
		}
		seen[info.ID] = true
	}
	if got := st.SessionCount(); got != 22 {
		t.Errorf("SessionCount = %d, want 22", got)
	}

	for _, tc := range []struct {
		id    string
		ttl   time.Duration
		field string
	}{
		{"neg", -time.Second, "ttl"},
		{"bad\x00id", 0, "session_id"},
		{strings.Repeat("s", 300), 0, "session_id"},
	} {
		_, _, err := st.CreateSession(tc.id, tc.ttl, nil)
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("CreateSession(%q, %v) = %v, want FieldError on %s", tc.id, tc.ttl, err, tc.field)
		}
	}
	if _, err := st.GetSession("neg"); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("a rejected session exists: %v", err)
	}
}

func TestUnknownSession(t *testing.T) {
	st := newStore(t, store.Options{})
	live := newSession(t, st)
	register(t, st, live, "x", tInt, intV(1), nil)
	gone := newSession(t, st)
	if _, err := st.CleanupSession(gone); err != nil {
		t.Fatal(err)
	}
	ops := map[string]func(id string) error{
		"GetSession": func(id string) error { _, err := st.GetSession(id); return err },
		"Heartbeat":  func(id string) error { _, err := st.Heartbeat(id); return err },
		"Cleanup":    func(id string) error { _, err := st.CleanupSession(id); return err },
		"Register": func(id string) error {
			_, _, err := st.Register(id, store.Register{Name: "x", Type: tInt, Value: intV(1)})
			return err
		},
		"Get":     func(id string) error { _, _, err := st.Get(id, "x"); return err },
		"GetMany": func(id string) error { _, _, _, err := st.GetMany(id, []string{"x"}); return err },
		"Set":     func(id string) error { _, err := set1(st, id, "x", intV(2)); return err },
		"List":    func(id string) error { _, _, err := st.List(id, ""); return err },
		"Delete":  func(id string) error { _, _, err := st.Delete(id, "x", nil, ""); return err },
		"Watch": func(id string) error {
			w, err := st.Watch(id, nil, store.WatchOptions{})
			if w != nil {
				w.Close()
			}
			return err
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			for _, id := range []string{"nosuch", gone} {
				err := op(id)
				if !errors.Is(err, store.ErrSessionNotFound) || !strings.Contains(err.Error(), id) {
					t.Errorf("%s(%q) = %v, want ErrSessionNotFound naming it", name, id, err)
				}
			}
			var fe *store.FieldError
			if err := op(""); !errors.As(err, &fe) || fe.Field != "session_id" {
				t.Errorf("%s(\"\") = %v, want FieldError on session_id", name, err)
			}
		})
	}
	if v := mustGet(t, st, live, "x"); v.Version != 1 {
		t.Errorf("the live session was touched: %v", v)
	}
}

func TestCleanupSession(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	register(t, st, sid, "a", tInt, intV(1), nil)
	register(t, st, sid, "b", tInt, intV(1), nil)
	w, err := st.Watch(sid, nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	n, err := st.CleanupSession(sid)
	if err != nil || n != 2 {
		t.Fatalf("CleanupSession = %d, %v; want 2 variables", n, err)
	}
	select {
	case <-w.Done():
	default:
		t.Fatal("cleanup did not end the session's watch")
	}
	if !errors.Is(w.Err(), store.ErrSessionClosed) || !strings.Contains(w.Err().Error(), "cleaned up") {
		t.Errorf("watch error = %v", w.Err())
	}
	if _, err := w.Poll(10); !errors.Is(err, store.ErrSessionClosed) {
		t.Errorf("Poll after cleanup = %v", err)
	}
	if _, err := st.CleanupSession(sid); !errors.Is(err, store.ErrSessionNotFound) {
		t.Errorf("second cleanup = %v", err)
	}
	if st.SessionCount() != 0 || st.WatchCount() != 0 {
		t.Errorf("sessions %d watches %d after cleanup", st.SessionCount(), st.WatchCount())
	}

	// The id can be used again, for a fresh session.
	info, created, err := st.CreateSession(sid, 0, nil)
	if err != nil || !created || info.Revision != 0 || info.VariableCount != 0 {
		t.Errorf("recreate: %+v %v %v", info, created, err)
	}
}

func TestSessionTTL(t *testing.T) {
	const ttl = time.Minute
	clk := newClock()
	st := newStore(t, store.Options{Now: clk.Now, TTL: ttl})

	t.Run("expires after its TTL", func(t *testing.T) {
		sid := newSession(t, st)
		long, _, _ := st.CreateSession("", 10*ttl, nil)
		clk.Advance(ttl - time.Second)
		if got := st.Sweep(); len(got) != 0 {
			t.Fatalf("Sweep before the TTL expired %v", got)
		}
		clk.Advance(time.Second)
		if got := st.Sweep(); !slices.Equal(got, []string{sid}) {
			t.Fatalf("Sweep = %v, want [%s]", got, sid)
		}
		if _, err := st.GetSession(sid); !errors.Is(err, store.ErrSessionNotFound) {
			t.Errorf("expired session: %v", err)
		}
		if _, err := st.GetSession(long.ID); err != nil {
			t.Errorf("session with a longer TTL expired too: %v", err)
		}
		if _, err := st.CleanupSession(long.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("heartbeat extends", func(t *testing.T) {
		sid := newSession(t, st)
		clk.Advance(50 * time.Second)
		info, err := st.Heartbeat(sid)
		if err != nil {
			t.Fatal(err)
		}
		if !info.ExpiresAt.Equal(clk.Now().Add(ttl)) {
			t.Errorf("heartbeat: expires %v, want %v", info.ExpiresAt, clk.Now().Add(ttl))
		}
		clk.Advance(50 * time.Second) // 100 s after creation, 50 s after the heartbeat
		if got := st.Sweep(); len(got) != 0 {
			t.Fatalf("Sweep expired %v despite the heartbeat", got)
		}
		clk.Advance(10 * time.Second)
		if got := st.Sweep(); !slices.Equal(got, []string{sid}) {
			t.Fatalf("Sweep = %v, want [%s]", got, sid)
		}
	})

	// A worker that only watches a quiet session must keep it: an open watch
	// is use for as long as it is open, and the TTL counts from its end.
	t.Run("an open watch keeps its session", func(t *testing.T) {
		sid := newSession(t, st)
		w, err := st.Watch(sid, nil, store.WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(3 * ttl)
		if got := st.Sweep(); len(got) != 0 {
			t.Fatalf("Sweep expired %v although a watch was open", got)
		}
		select {
		case <-w.Done():
			t.Fatalf("watch ended: %v", w.Err())
		default:
		}
		if info, err := st.GetSession(sid); err != nil || info.ExpiresAt.Before(clk.Now().Add(ttl)) {
			t.Errorf("GetSession of a watched session = %+v, %v; want it to expire no sooner than a TTL from now", info, err)
		}
		w.Close()
		clk.Advance(ttl - time.Second)
		if got := st.Sweep(); len(got) != 0 {
			t.Fatalf("Sweep expired %v before a TTL had passed since the watch closed", got)
		}
		clk.Advance(time.Second)
		if got := st.Sweep(); !slices.Equal(got, []string{sid}) {
			t.Fatalf("Sweep = %v, want [%s] a TTL after the watch closed", got, sid)
		}
	})

	t.Run("cleanup ends watches", func(t *testing.T) {
		sid := newSession(t, st)
		w, err := st.Watch(sid, nil, store.WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := st.CleanupSession(sid); err != nil {
			t.Fatal(err)
		}
		<-w.Done()
		var sc *store.SessionClosedError
		if !errors.As(w.Err(), &sc) || sc.Cause != store.ClosedCleanedUp || !strings.Contains(w.Err().Error(), "cleaned up") {
			t.Errorf("watch error = %v", w.Err())
		}
	})

	// Every use of a session extends it; GetSession only looks.
	uses := []struct {
		name    string
		use     func(sid string) error
		extends bool
	}{
		{"Register", func(sid string) error {
			_, _, err := st.Register(sid, store.Register{Name: "y", Type: tInt, Value: intV(0)})
			return err
		}, true},
		{"Get", func(sid string) error { _, _, err := st.Get(sid, "x"); return err }, true},
		{"GetMany", func(sid string) error { _, _, _, err := st.GetMany(sid, []string{"x"}); return err }, true},
		{"Set", func(sid string) error { _, err := set1(st, sid, "x", intV(9)); return err }, true},
		{"no-op Set", func(sid string) error { _, err := set1(st, sid, "x", intV(0)); return err }, true},
		{"List", func(sid string) error { _, _, err := st.List(sid, ""); return err }, true},
		{"Delete", func(sid string) error { _, _, err := st.Delete(sid, "x", nil, ""); return err }, true},
		{"Watch", func(sid string) error {
			w, err := st.Watch(sid, nil, store.WatchOptions{})
			if err == nil {
				w.Close()
			}
			return err
		}, true},
		{"CreateSession again", func(sid string) error { _, _, err := st.CreateSession(sid, 0, nil); return err }, true},
		{"Heartbeat", func(sid string) error { _, err := st.Heartbeat(sid); return err }, true},
		{"failed Get", func(sid string) error {
			if _, _, err := st.Get(sid, "nope"); !errors.Is(err, store.ErrVariableNotFound) {
				return err
			}
			return nil
		}, true},
		{"GetSession", func(sid string) error { _, err := st.GetSession(sid); return err }, false},
	}
	for _, u := range uses {
		t.Run("use extends/"+u.name, func(t *testing.T) {
			sid := newSession(t, st)
			register(t, st, sid, "x", tInt, intV(0), nil)
			clk.Advance(50 * time.Second)
			if err := u.use(sid); err != nil {
				t.Fatal(err)
			}
			clk.Advance(20 * time.Second) // 70 s after creation
			got := st.Sweep()
			if u.extends {
				if len(got) != 0 {
					t.Fatalf("%s did not extend the session: swept %v", u.name, got)
				}
				clk.Advance(40 * time.Second) // 60 s after the use
				if got := st.Sweep(); !slices.Equal(got, []string{sid}) {
					t.Fatalf("Sweep = %v, want [%s]", got, sid)
				}
			} else if !slices.Equal(got, []string{sid}) {
				t.Fatalf("%s extended the session: Sweep = %v", u.name, got)
			}
		})
	}
}

func TestSessionLimits(t *testing.T) {
	t.Run("max sessions", func(t *testing.T) {
		st := newStore(t, store.Options{MaxSessions: 2})
		newSession(t, st)
		if _, _, err := st.CreateSession("second", 0, nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := st.CreateSession("third", 0, nil)
		checkLimit(t, err, "max_sessions", 2)
		if !strings.Contains(err.Error(), "third") {
			t.Errorf("message %q does not name the session", err)
		}
		// An existing session is still returned at the limit.
		if _, created, err := st.CreateSession("second", 0, nil); err != nil || created {
			t.Errorf("existing at limit: %v %v", created, err)
		}
		if _, err := st.CleanupSession("second"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.CreateSession("third", 0, nil); err != nil {
			t.Errorf("after cleanup: %v", err)
		}
	})

	t.Run("max variables", func(t *testing.T) {
		st := newStore(t, store.Options{MaxVariables: 2})
		sid := newSession(t, st)
		register(t, st, sid, "a", tInt, intV(0), nil)
		register(t, st, sid, "b", tInt, intV(0), nil)
		before := snap(t, st, sid)
		_, _, err := st.Register(sid, store.Register{Name: "c", Type: tInt, Value: intV(0)})
		checkLimit(t, err, "max_variables_per_session", 2)
		if !strings.Contains(err.Error(), `"c"`) {
			t.Errorf("message %q does not name the variable", err)
		}
		before.assertUnchanged(t, st, sid)
		if _, _, err := st.Delete(sid, "a", nil, ""); err != nil {
			t.Fatal(err)
		}
		register(t, st, sid, "c", tInt, intV(0), nil)
		// Other sessions have their own budget.
		register(t, st, newSession(t, st), "a", tInt, intV(0), nil)
	})

	t.Run("max value bytes", func(t *testing.T) {
		st := newStore(t, store.Options{MaxValueBytes: 64})
		sid := newSession(t, st)
		big := strV(strings.Repeat("x", 100))
		before := snap(t, st, sid)
		_, _, err := st.Register(sid, store.Register{Name: "s", Type: tString, Value: big})
		checkLimit(t, err, "max_value_bytes", 64)
		before.assertUnchanged(t, st, sid)

		register(t, st, sid, "s", tString, strV(strings.Repeat("x", 60)), nil)
		register(t, st, sid, "e", tEmb, embV(1), nil)
		before = snap(t, st, sid)
		for ident, v := range map[string]*pb.Value{"s": big, "e": embV(make([]float64, 10)...)} {
			_, err := set1(st, sid, ident, v)
			checkLimit(t, err, "max_value_bytes", 64)
			if !strings.Contains(err.Error(), ident) {
				t.Errorf("message %q does not name %s", err, ident)
			}
		}
		before.assertUnchanged(t, st, sid)
	})
}

func checkLimit(t *testing.T, err error, limit string, max int64) {
	t.Helper()
	var le *store.LimitError
	if !errors.As(err, &le) || !errors.Is(err, store.ErrLimit) {
		t.Fatalf("err = %v (%T), want *store.LimitError", err, err)
	}
	if le.Limit != limit || le.Max != max {
		t.Errorf("LimitError{Limit: %q, Max: %d}, want %q, %d", le.Limit, le.Max, limit, max)
	}
	if !strings.Contains(err.Error(), limit) {
		t.Errorf("message %q does not name the limit", err)
	}
}
