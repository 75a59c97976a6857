package feed

import (
	"context"
	"fmt"
	"time"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Watch is a watch request turned into a registered store watch and the
// options its feed runs with. Open is the one place that does it, for the
// gRPC server and LocalState alike: it compiles where, checks and clamps the
// heartbeat, registers the observer and computes where the stream starts.
type Watch struct {
	w           *store.Watch
	o           Options
	startsAfter int64
}

// Open registers the watch req asks for. When it returns, every later write
// reaches the watch; Run feeds it, or Close drops it.
func Open(st *store.Store, req *pb.WatchVariablesRequest, hooks Hooks) (*Watch, error) {
	return open(st, req, hooks, nil)
}

// open is Open; a watch with a waker is driven by a Group.
func open(st *store.Store, req *pb.WatchVariablesRequest, hooks Hooks, waker *store.Waker) (*Watch, error) {
	hb := req.GetHeartbeatIntervalMs()
	if hb < 0 {
		return nil, &store.FieldError{Field: "heartbeat_interval_ms", Reason: fmt.Sprintf("must not be negative, got %d", hb)}
	}
	o := Options{Coalesce: req.GetCoalesce(), Compact: req.GetCompact(), Heartbeat: time.Duration(hb) * time.Millisecond, Hooks: hooks}
	if req.GetWhere() != "" {
		f, err := where.CompileWith(req.GetWhere(), st.CompileLimits())
		if err != nil {
			return nil, err
		}
		o.Where = f
	}
	w, err := st.Watch(req.GetSessionId(), req.GetVariableIdentifiers(), store.WatchOptions{
		StartRevision: req.GetStartRevision(), IncludeInitial: req.GetIncludeInitialValues(),
		Incarnation: req.GetIncarnation(), Where: req.GetWhere(), Coalesce: req.GetCoalesce(), Waker: waker,
	})
	if err != nil {
		return nil, err
	}
	_, after := w.Initial()
	// A resume in this incarnation starts where the client asked; one from
	// another incarnation starts with a resync at the snapshot revision.
	if start := req.GetStartRevision(); start > 0 && (req.GetIncarnation() == "" || req.GetIncarnation() == w.Incarnation()) {
		after = start - 1
	}
	return &Watch{w: w, o: o, startsAfter: after}, nil
}

// StartsAfter is the session revision the stream starts after: every change
// with a later revision reaches the watch.
func (w *Watch) StartsAfter() int64 { return w.startsAfter }

// Incarnation is the watched session's incarnation.
func (w *Watch) Incarnation() string { return w.w.Incarnation() }

// Identifier returns the identifier the request used for a variable id, or
// "" when the watch covers every variable.
func (w *Watch) Identifier(varID string) string { return w.w.Identifier(varID) }

// Close unregisters the watch at once; it is idempotent and safe to call
// while Run is running (Run then ends).
func (w *Watch) Close() { w.w.Close() }

// Run feeds the watch to send until ctx ends, the session ends, or send
// fails, and closes it. Only one goroutine runs it.
func (w *Watch) Run(ctx context.Context, send Send) error { return Run(ctx, w.w, w.o, send) }
