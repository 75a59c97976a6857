package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// watching reads the stream's first event and returns the revision the
// watch starts after.
func watching(t testing.TB, s *sseStream) (int64, string) {
	t.Helper()
	ev := s.mustNext(t)
	if ev.Name != "watching" || ev.HasID {
		t.Fatalf("first event %q (id %q), want watching without id", ev.Name, ev.ID)
	}
	var p struct {
		Revision    int64  `json:"revision"`
		Incarnation string `json:"incarnation"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil || p.Incarnation == "" {
		t.Fatalf("watching data %s: %v", ev.Data, err)
	}
	if s.r.Retry() <= 0 {
		t.Errorf("the stream set no retry")
	}
	return p.Revision, p.Incarnation
}

func set(t testing.TB, st *store.Store, session string, kv map[string]float64) int64 {
	t.Helper()
	var ws []store.Write
	for k, v := range kv {
		ws = append(ws, store.Write{Identifier: k, Value: &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: v}}})
	}
	res, err := st.Set(session, ws, map[string]string{"by": "test"}, "go")
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

func TestSSEWatch(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, code, body := ts.openSSE(t, ctx, "/v1/sessions/s1/watch?var=x&var=n&initial=true&heartbeat=20ms", nil)
	if s == nil {
		t.Fatalf("watch refused: %d %v", code, body)
	}
	defer s.close()
	if rev, _ := watching(t, s); rev != 2 {
		t.Errorf("watching after revision %d, want 2", rev)
	}
	var initial []update
	for range 2 {
		ev := s.mustNext(t)
		u := decodeUpdate(t, ev)
		if u.Update != "initial" || u.Revision != 2 {
			t.Errorf("initial update %+v", u)
		}
		if ev.HasID != (len(initial) == 1) {
			t.Errorf("initial %d has id %v: only the last of a revision carries one", len(initial), ev.HasID)
		}
		initial = append(initial, u)
	}
	_, inc := s.resp.Header.Get(server.RevisionHeader), s.resp.Header.Get(server.IncarnationHeader)
	rev := set(t, ts.store, "s1", map[string]float64{"x": 1.25})
	ev := s.mustNext(t)
	u := decodeUpdate(t, ev)
	if u.Update != "change" || u.Name != "x" || u.Identifier != "x" || u.Old != 0.0 || u.New != 1.25 ||
		u.Type != "float" || u.Source != "go" || u.Metadata["by"] != "test" || u.Revision != rev || u.Version != 2 {
		t.Errorf("change %+v", u)
	}
	if want := fmt.Sprintf("%s:%d", inc, rev); ev.ID != want || !ev.HasID {
		t.Errorf("change id %q, want %q", ev.ID, want)
	}
	// A heartbeat carries the covered revision and an id.
	for {
		ev, err := s.r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name == "heartbeat" {
			if want := fmt.Sprintf(`{"revision":%d,"incarnation":%q}`, rev, inc); ev.Data != want || ev.ID != fmt.Sprintf("%s:%d", inc, rev) {
				t.Errorf("heartbeat %q id %q, want %s", ev.Data, ev.ID, want)
			}
			break
		}
	}
	// Deleting a watched variable ends in a deleted update.
	if _, _, err := ts.store.Delete("s1", "n", nil, "go"); err != nil {
		t.Fatal(err)
	}
	if u := decodeUpdate(t, s.mustNext(t)); u.Update != "deleted" || u.Name != "n" || u.New != nil || u.Old != 0.0 {
		t.Errorf("deleted %+v", u)
	}
	// Cleaning the session up ends the stream with an error event.
	if _, err := ts.store.CleanupSession("s1"); err != nil {
		t.Fatal(err)
	}
	ev = s.mustNext(t)
	if ev.Name != "error" {
		t.Fatalf("after cleanup: event %q %s, want error", ev.Name, ev.Data)
	}
	var body2 map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &body2); err != nil {
		t.Fatal(err)
	}
	if e := parseConnectErr(t, body2); e.Code != "not_found" || e.Reason != "SESSION_CLOSED" {
		t.Errorf("error event %+v", e)
	}
	if _, err := s.next(); err != io.EOF {
		t.Errorf("after the error event: %v, want the end of the stream", err)
	}
}

func TestSSEIdOnlyWhereRevisionCompletes(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, _, body := ts.openSSE(t, ctx, "/v1/sessions/s1/watch", nil)
	if s == nil {
		t.Fatal(body)
	}
	defer s.close()
	watching(t, s)
	out := ts.mustCall(t, "SetVariables", "", map[string]any{"sessionId": "s1", "updates": map[string]any{
		"x": map[string]any{"floatValue": 1}, "n": map[string]any{"intValue": "2"},
	}})
	rev, _ := strconv.ParseInt(out["revision"].(string), 10, 64)
	for i := range 2 {
		ev := s.mustNext(t)
		if u := decodeUpdate(t, ev); u.Revision != rev {
			t.Errorf("update %d revision %d, want %d", i, u.Revision, rev)
		}
		if ev.HasID != (i == 1) {
			t.Errorf("update %d of 2 in one revision: has id %v", i, ev.HasID)
		}
	}
}

func TestSSEResumeByLastEventID(t *testing.T) {
	ts := start(t, httpapi.Options{})
	ts.newSession(t, "s1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, _, _ := ts.openSSE(t, ctx, "/v1/sessions/s1/watch?var=x&initial", nil)
	watching(t, s)
	s.mustNext(t) // initial
	set(t, ts.store, "s1", map[string]float64{"x": 1})
	last := s.mustNext(t).ID
	s.close()
	// Written while no one watches.
	r2 := set(t, ts.store, "s1", map[string]float64{"x": 2})
	r3 := set(t, ts.store, "s1", map[string]float64{"x": 3})
	s, code, body := ts.openSSE(t, ctx, "/v1/sessions/s1/watch?var=x&initial", http.Header{"Last-Event-Id": {last}})
	if s == nil {
		t.Fatal(code, body)
	}
	defer s.close()
	watching(t, s)
	for _, want := range []int64{r2, r3} {
		if u := decodeUpdate(t, s.mustNext(t)); u.Update != "change" || u.Revision != want {
			t.Errorf("resumed: %+v, want the change of revision %d", u, want)
		}
	}
	// Another incarnation's id: a resync at the current revision.
	s2, _, _ := ts.openSSE(t, ctx, "/v1/sessions/s1/watch?var=x", http.Header{"Last-Event-Id": {"other:1"}})
	defer s2.close()
	watching(t, s2)
	if u := decodeUpdate(t, s2.mustNext(t)); u.Update != "resync" || u.Revision != r3 || u.New != 3.0 {
		t.Errorf("resume in another incarnation: %+v", u)
	}
}

func TestSSEErrorsBeforeTheStream(t *testing.T) {
	ts := start(t, httpapi.Options{}, server.WithAuth())
	tok := ts.newSession(t, "s1")
	ctx := context.Background()
	cases := []struct {
		what, path string
		header     http.Header
		status     int
		code       string
		reason     string
	}{
		{"no token", "/v1/sessions/s1/watch", nil, 401, "unauthenticated", "TOKEN_REQUIRED"},
		{"wrong token", "/v1/sessions/s1/watch?token=vbt_nope", nil, 403, "permission_denied", "TOKEN_INVALID"},
		{"token twice", "/v1/sessions/s1/watch?token=" + tok, http.Header{"Authorization": {"Bearer " + tok}}, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"no session", "/v1/sessions/nope/watch?token=" + tok, nil, 404, "not_found", "SESSION_NOT_FOUND"},
		{"no variable", "/v1/sessions/s1/watch?var=y&token=" + tok, nil, 404, "not_found", "VARIABLE_NOT_FOUND"},
		{"bad where", "/v1/sessions/s1/watch?where=" + url.QueryEscape("new >") + "&token=" + tok, nil, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"bad initial", "/v1/sessions/s1/watch?initial=maybe&token=" + tok, nil, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"bad heartbeat", "/v1/sessions/s1/watch?heartbeat=5&token=" + tok, nil, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"unknown parameter", "/v1/sessions/s1/watch?variable=x&token=" + tok, nil, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"bad Last-Event-ID", "/v1/sessions/s1/watch?token=" + tok, http.Header{"Last-Event-Id": {"nocolon"}}, 400, "invalid_argument", "INVALID_ARGUMENT"},
		{"revision ahead", "/v1/sessions/s1/watch?start_revision=99&token=" + tok, nil, 400, "out_of_range", "REVISION_OUT_OF_RANGE"},
	}
	for _, c := range cases {
		s, code, body := ts.openSSE(t, ctx, c.path, c.header)
		if s != nil {
			s.close()
			t.Errorf("%s: the stream started", c.what)
			continue
		}
		e := wantErr(t, c.what, code, body, c.status, c.code, c.reason)
		if c.what == "unknown parameter" && !strings.Contains(e.Message, "variable") {
			t.Errorf("unknown parameter: message %q does not name it", e.Message)
		}
	}
	// The right token, in the header or the parameter.
	for _, h := range []http.Header{{"Authorization": {"Bearer " + tok}}, nil} {
		path := "/v1/sessions/s1/watch"
		if h == nil {
			path += "?token=" + url.QueryEscape(tok)
		}
		s, code, body := ts.openSSE(t, ctx, path, h)
		if s == nil {
			t.Fatalf("authorized watch refused: %d %v", code, body)
		}
		watching(t, s)
		s.close()
	}
}
