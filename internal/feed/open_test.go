package feed_test

import (
	"errors"
	"testing"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Open is where a watch request becomes a watch for every adapter: its
// checks and the revision the stream starts after are decided here.
func TestOpen(t *testing.T) {
	st := newStore(t) // session "s" at revision 1 (x registered)
	info, err := st.GetSession("s")
	if err != nil {
		t.Fatal(err)
	}
	var fe *store.FieldError
	if _, err := feed.Open(st, &pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: -1}, feed.Hooks{}); !errors.As(err, &fe) || fe.Field != "heartbeat_interval_ms" {
		t.Fatalf("negative heartbeat: %v", err)
	}
	if _, err := feed.Open(st, &pb.WatchVariablesRequest{SessionId: "s", Where: "new >"}, feed.Hooks{}); !errors.Is(err, where.ErrInvalid) {
		t.Fatalf("bad where: %v", err)
	}
	if st.WatchCount() != 0 {
		t.Fatalf("a refused request left %d watches", st.WatchCount())
	}
	for _, tc := range []struct {
		name string
		req  *pb.WatchVariablesRequest
		want int64
	}{
		{"from now", &pb.WatchVariablesRequest{SessionId: "s"}, 1},
		{"resume", &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 2}, 1},
		{"resume in this incarnation", &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 1, Incarnation: info.Incarnation}, 0},
		{"resume from another incarnation", &pb.WatchVariablesRequest{SessionId: "s", StartRevision: 9, Incarnation: "0000000000000000"}, 1},
	} {
		w, err := feed.Open(st, tc.req, feed.Hooks{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if w.StartsAfter() != tc.want || w.Incarnation() != info.Incarnation {
			t.Errorf("%s: starts after %d (incarnation %s); want %d (%s)", tc.name, w.StartsAfter(), w.Incarnation(), tc.want, info.Incarnation)
		}
		w.Close()
	}
	if st.WatchCount() != 0 {
		t.Fatalf("Close left %d watches", st.WatchCount())
	}
}

// A filter is judged against the sizes the store accepts: a comprehension
// over a value, refused where values may be 4 MiB, is fine where they are
// at most 1 KiB.
func TestOpenCompilesWithTheStoresLimits(t *testing.T) {
	const comprehension = `new.exists(x, x > 0.5)`
	for _, tc := range []struct {
		maxValue int
		ok       bool
	}{{0, false}, {1 << 10, true}} {
		st := store.New(store.Options{MaxValueBytes: tc.maxValue})
		if _, _, err := st.CreateSession("s", 0, nil); err != nil {
			t.Fatal(err)
		}
		w, err := feed.Open(st, &pb.WatchVariablesRequest{SessionId: "s", Where: comprehension}, feed.Hooks{})
		if (err == nil) != tc.ok {
			t.Errorf("max value bytes %d: Open = %v; want ok=%v", tc.maxValue, err, tc.ok)
		}
		if w != nil {
			w.Close()
		}
		st.Close()
	}
}
