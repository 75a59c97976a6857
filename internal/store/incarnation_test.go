package store_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/varbridge/varbridge/internal/store"
)

// A session id created again is another incarnation: its revisions restart,
// so a resume point taken in the old one means nothing in the new one.
func TestIncarnationIsNewForEachCreation(t *testing.T) {
	st := newStore(t, store.Options{})
	a, _, err := st.CreateSession("r", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, created, err := st.CreateSession("r", 0, nil)
	if err != nil || created || again.Incarnation != a.Incarnation {
		t.Fatalf("joining: created=%v incarnation %q, want %q (%v)", created, again.Incarnation, a.Incarnation, err)
	}
	if _, err := st.CleanupSession("r"); err != nil {
		t.Fatal(err)
	}
	b, _, err := st.CreateSession("r", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Incarnation) != 16 || b.Incarnation == a.Incarnation {
		t.Fatalf("incarnations %q then %q: want 16 hex characters, new on re-creation", a.Incarnation, b.Incarnation)
	}
}

func TestWatchResumeAcrossIncarnations(t *testing.T) {
	st := newStore(t, store.Options{})
	info, _, err := st.CreateSession("r", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	register(t, st, "r", "n", tInt, intV(0), nil)
	mustSet(t, st, "r", "n", intV(1)) // revision 2

	// Ahead of the session in its own incarnation, or with none said.
	for _, inc := range []string{"", info.Incarnation} {
		_, err := st.Watch("r", []string{"n"}, store.WatchOptions{StartRevision: 4, Incarnation: inc})
		var oor *store.OutOfRangeError
		if !errors.As(err, &oor) || oor.StartRevision != 4 || oor.SessionRevision != 2 || oor.Incarnation != info.Incarnation || !errors.Is(err, store.ErrOutOfRange) {
			t.Fatalf("incarnation %q: err = %v; want OutOfRangeError{4, 2}", inc, err)
		}
	}
	// The next revision is a point the session will reach: no error.
	w, err := st.Watch("r", []string{"n"}, store.WatchOptions{StartRevision: 3, Incarnation: info.Incarnation})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()

	// Another incarnation, whatever its start revision: a Resync first.
	for _, start := range []int64{1, 2, 3, 22} {
		cur, err := st.GetSession("r")
		if err != nil {
			t.Fatal(err)
		}
		w, err := st.Watch("r", []string{"n"}, store.WatchOptions{StartRevision: start, Incarnation: "0000000000000000"})
		if err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		<-w.Wake()
		b, err := w.Poll(256)
		if err != nil {
			t.Fatal(err)
		}
		if b.Resync == nil || b.Resync.Revision != cur.Revision || len(b.Resync.Vars) != 1 || b.Resync.Vars[0].GetValue().GetIntValue() != 1 || b.Covered != cur.Revision {
			t.Fatalf("start %d: first poll %+v; want a Resync of n=1 at revision %d", start, b, cur.Revision)
		}
		if w.Incarnation() != info.Incarnation {
			t.Fatalf("watch incarnation %q", w.Incarnation())
		}
		mustSet(t, st, "r", "n", intV(2))
		<-w.Wake()
		b, err = w.Poll(256)
		if err != nil || b.Resync != nil || len(b.Changes) != 1 || b.Changes[0].Revision != cur.Revision+1 {
			t.Fatalf("start %d: after the resync got %+v, %v; want the change at %d", start, b, err, cur.Revision+1)
		}
		w.Close()
		mustSet(t, st, "r", "n", intV(1)) // n=1 again for the next round
	}
}

// The members of an atomic batch reach watchers in one order, by name,
// whatever order the writes came in.
func TestBatchMembersOrderedByName(t *testing.T) {
	st := newStore(t, store.Options{})
	sid := newSession(t, st)
	names := []string{"delta", "alpha", "charlie", "bravo", "echo"}
	for _, n := range names {
		register(t, st, sid, n, tInt, intV(0), nil)
	}
	w, err := st.Watch(sid, nil, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writes := make([]store.Write, len(names))
	for i, n := range names {
		writes[i] = store.Write{Identifier: n, Value: intV(int64(i + 1))}
	}
	res, err := st.Set(sid, writes, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res.Variables { // the result stays in the order of the writes
		if v.GetName() != names[i] {
			t.Fatalf("result %d is %s, want %s", i, v.GetName(), names[i])
		}
	}
	<-w.Wake()
	b, err := w.Poll(256)
	if err != nil || len(b.Changes) != 1 {
		t.Fatalf("poll: %+v, %v", b, err)
	}
	var got []string
	for _, it := range b.Changes[0].Items {
		got = append(got, it.Var.GetName())
	}
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(got, want) {
		t.Fatalf("batch members %v; want %v", got, want)
	}
}
