package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/jsonview"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
	"github.com/varbridge/varbridge/proto/varbridge/v1/varbridgev1connect"
)

// The Server-Sent Events watch: GET /v1/sessions/{session}/watch.
//
// Query parameters: var (repeated; none: every variable of the session,
// including ones registered later), initial (bool: current values first),
// where (a CEL filter, as WatchVariablesRequest.where), coalesce (bool),
// start_revision and incarnation (resume, as on gRPC), heartbeat (a Go
// duration such as 5s; default the server's). The session token goes in an
// "Authorization: Bearer <token>" header or, because a browser's
// EventSource cannot set headers, in the token parameter (it then shows in
// URLs and access logs: prefer the header where the client can send one).
//
// The stream is text/event-stream:
//
//   - "retry: <ms>" first, then an event "watching" whose data is
//     {"revision": R, "incarnation": "..."}: the watch is registered and
//     every write after revision R will reach it.
//   - one event per update (event type "message", so EventSource.onmessage
//     sees it) whose data is the JSON object `varbridge watch -o json`
//     prints (internal/jsonview): update is initial, change, resync or
//     deleted.
//   - "heartbeat" events: {"revision": R, "incarnation": "..."}, R the
//     revision the stream has covered.
//   - an "error" event with the Connect error JSON ({"code": ...,
//     "message": ..., "details": [...]}) when the watch fails after it
//     started (its session ended, a filter cost too much); the stream ends.
//
// Only the event that completes a revision (the last of its updates, and
// every heartbeat) carries an id, "<incarnation>:<revision>". A client that
// reconnects sends it back as Last-Event-ID (EventSource does so by itself)
// and the watch resumes after that revision: nothing lost, nothing twice,
// even when the connection was cut in the middle of a revision's updates.
// A session created again meanwhile (another incarnation) resumes with
// resync updates, as on gRPC. Errors before the stream starts are answered
// with the Connect error JSON and the HTTP status of its code.

// sseRetry is the reconnection delay the stream asks EventSource to use.
const sseRetry = time.Second

// sseWriteTimeout bounds the writing of one batch of events, so that a
// client that vanished without closing its connection does not keep its
// watch forever (heartbeats make sure something is written regularly).
const sseWriteTimeout = time.Minute

// watchProcedure names SSE watches in the server's logs and metrics.
const watchProcedure = varbridgev1connect.BridgeServiceWatchVariablesProcedure

// sseParams are the query parameters the watch accepts.
var sseParams = map[string]bool{
	"var": true, "initial": true, "where": true, "coalesce": true, "start_revision": true,
	"incarnation": true, "heartbeat": true, "token": true,
}

type sseHandler struct{ s *server.Server }

var errorWriter = connect.NewErrorWriter()

func (h *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, authz, err := watchRequest(r)
	if err != nil {
		_ = errorWriter.Write(w, r, connectError(err))
		return
	}
	ev := &eventStream{w: w, rc: http.NewResponseController(w), byID: map[string]bool{}}
	for _, id := range req.GetVariableIdentifiers() {
		ev.byID[id] = true
	}
	err = h.s.ServeWatch(r.Context(), watchProcedure, credentials(authz, r.RemoteAddr), req, ev.start, ev.send)
	switch {
	case !ev.started:
		_ = errorWriter.Write(w, r, connectError(err))
	case err == nil || r.Context().Err() != nil || status.Code(err) == codes.Canceled || ev.broken:
		// The client left, or the server is stopping: a client that is
		// still there reconnects with its Last-Event-ID.
	default:
		ev.fail(r, connectError(err))
	}
}

// watchRequest reads the watch request from r's path, query and
// Last-Event-ID header, and the authorization it presents.
func watchRequest(r *http.Request) (*pb.WatchVariablesRequest, []string, error) {
	q := r.URL.Query()
	for k := range q {
		if !sseParams[k] {
			return nil, nil, badParam(k, "is not a parameter of the watch (want var, initial, where, coalesce, start_revision, incarnation, heartbeat or token)")
		}
	}
	req := &pb.WatchVariablesRequest{
		SessionId: r.PathValue("session"), VariableIdentifiers: q["var"], Where: q.Get("where"),
		Incarnation: q.Get("incarnation"),
	}
	var err error
	if req.IncludeInitialValues, err = boolParam(q, "initial"); err != nil {
		return nil, nil, err
	}
	if req.Coalesce, err = boolParam(q, "coalesce"); err != nil {
		return nil, nil, err
	}
	if s := q.Get("start_revision"); s != "" {
		if req.StartRevision, err = strconv.ParseInt(s, 10, 64); err != nil || req.StartRevision < 0 {
			return nil, nil, badParam("start_revision", "must be a revision (an integer >= 0), got %q", s)
		}
	}
	if s := q.Get("heartbeat"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, nil, badParam("heartbeat", "must be a duration such as 5s or 500ms, got %q", s)
		}
		req.HeartbeatIntervalMs = d.Milliseconds()
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		inc, rev, ok := parseEventID(id)
		if !ok {
			return nil, nil, badParam("Last-Event-ID", "must be an id this watch sent, <incarnation>:<revision>, got %q", id)
		}
		// Resume after the last complete revision the client saw; the
		// initial values were part of what it saw.
		req.StartRevision, req.Incarnation, req.IncludeInitialValues = rev+1, inc, false
	}
	authz := r.Header.Values("Authorization")
	if tok, ok := q["token"]; ok {
		if len(authz) > 0 || len(tok) != 1 {
			return nil, nil, badParam("token", "give the token once: in the Authorization header or in the token parameter")
		}
		authz = []string{"Bearer " + tok[0]}
	}
	return req, authz, nil
}

func boolParam(q map[string][]string, k string) (bool, error) {
	vs, ok := q[k]
	if !ok {
		return false, nil
	}
	if len(vs) != 1 {
		return false, badParam(k, "given %d times", len(vs))
	}
	if vs[0] == "" { // ?initial alone
		return true, nil
	}
	b, err := strconv.ParseBool(vs[0])
	if err != nil {
		return false, badParam(k, "must be true or false, got %q", vs[0])
	}
	return b, nil
}

// badParam is the server's INVALID_ARGUMENT for a request field (with its
// ErrorInfo and BadRequest details).
func badParam(name, format string, args ...any) error {
	return server.StatusOf(&store.FieldError{Field: name, Reason: fmt.Sprintf(format, args...)})
}

// eventID is the SSE id of the event that completes revision rev.
func eventID(incarnation string, rev int64) string {
	return incarnation + ":" + strconv.FormatInt(rev, 10)
}

func parseEventID(id string) (incarnation string, rev int64, ok bool) {
	i := strings.LastIndexByte(id, ':')
	if i < 0 {
		return "", 0, false
	}
	rev, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || rev < 0 {
		return "", 0, false
	}
	return id[:i], rev, true
}

// eventStream writes one watch's events. Only the watch's goroutine uses it.
type eventStream struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	byID        map[string]bool // identifiers the watch named that are variable ids
	incarnation string
	started     bool // the 200 and the first events went out
	broken      bool // a write failed: the client is gone
	buf         bytes.Buffer
}

type position struct {
	Revision    int64  `json:"revision"`
	Incarnation string `json:"incarnation"`
}

// start is the watch's header: the stream begins.
func (e *eventStream) start(md metadata.MD) error {
	rev, inc := first(md, server.RevisionHeader), first(md, server.IncarnationHeader)
	e.incarnation = inc
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // proxies that buffer responses would hold events back
	h.Set(server.RevisionHeader, rev)
	h.Set(server.IncarnationHeader, inc)
	e.w.WriteHeader(http.StatusOK)
	e.started = true
	fmt.Fprintf(&e.buf, "retry: %d\n\n", sseRetry.Milliseconds())
	r, _ := strconv.ParseInt(rev, 10, 64)
	e.event("watching", "", position{Revision: r, Incarnation: inc})
	return e.flush()
}

func first(md metadata.MD, k string) string {
	if vs := md.Get(k); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// send writes a batch of updates as events and flushes them.
func (e *eventStream) send(us []*pb.VariableUpdate) error {
	for _, u := range us {
		id := ""
		if u.GetLastInRevision() {
			id = eventID(e.incarnation, u.GetRevision())
		}
		if u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
			e.event("heartbeat", id, position{Revision: u.GetRevision(), Incarnation: e.incarnation})
			continue
		}
		ident := ""
		if e.byID[u.GetVariableId()] {
			ident = u.GetVariableId()
		}
		e.event("", id, jsonview.FromProto(u, ident))
	}
	return e.flush()
}

// event appends one event to the buffer. JSON encodes newlines inside
// strings, so data is a single line.
func (e *eventStream) event(name, id string, data any) {
	if name != "" {
		e.buf.WriteString("event: ")
		e.buf.WriteString(name)
		e.buf.WriteByte('\n')
	}
	if id != "" {
		e.buf.WriteString("id: ")
		e.buf.WriteString(id)
		e.buf.WriteByte('\n')
	}
	e.buf.WriteString("data: ")
	if err := jsonview.NewEncoder(&e.buf).Encode(data); err != nil { // ends with '\n'
		e.buf.WriteString("{}\n")
	}
	e.buf.WriteByte('\n')
}

// flush writes the buffered events to the client. The buffer holds one
// batch of the feed at most (bounded by the feed's poll size).
func (e *eventStream) flush() error {
	_ = e.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	_, err := e.w.Write(e.buf.Bytes())
	e.buf.Reset()
	if err == nil {
		err = e.rc.Flush()
	}
	if err != nil {
		e.broken = true
		return err
	}
	return nil
}

// fail ends a started stream with an error event.
func (e *eventStream) fail(r *http.Request, err error) {
	var body errorBody
	_ = errorWriter.Write(&body, r, err)
	e.buf.WriteString("event: error\ndata: ")
	e.buf.Write(bytes.TrimSpace(body.buf.Bytes()))
	e.buf.WriteString("\n\n")
	_ = e.flush()
}

// errorBody catches the Connect error JSON connect's ErrorWriter writes.
type errorBody struct {
	h   http.Header
	buf bytes.Buffer
}

func (b *errorBody) Header() http.Header {
	if b.h == nil {
		b.h = http.Header{}
	}
	return b.h
}
func (b *errorBody) Write(p []byte) (int, error) { return b.buf.Write(p) }
func (b *errorBody) WriteHeader(int)             {}
