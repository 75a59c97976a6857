package varbridge

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/backend"
	"github.com/varbridge/varbridge/internal/verr"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// streamConsumer is the StreamConsumer of one BridgedState watch, its
// backend.Feed. One goroutine (Run) owns all of its state: it reads the stream,
// hands each update to the watch, and on a broken stream reconnects with
// exponential backoff and jitter, resuming exactly after what it delivered.
//
// The resume point is the watch's progress (watch.Complete, what
// ListWatchers reports as LastRevision): updates of one revision share it,
// and the server flags the last one it sends for a revision
// (last_in_revision). After a flagged update or a heartbeat at revision r,
// the watch resumes at r+1. Cut in the middle of a revision's group, it
// resumes at that revision and skips the variable ids it already delivered
// there.
//
// Initial values: BridgedState reads them itself (GetVariables, or
// ListVariables, at revision R) and opens the stream at R+1, where the
// Python client asks the server for them (include_initial_values). The
// client then holds its own snapshot, so a cut while the initial values are
// being delivered loses nothing and asks the server for nothing again: the
// stream resumes after R however far the delivery got. It costs one round
// trip per watch opened.
type streamConsumer struct {
	conn streamConn
	w    *watch

	initial    []*pb.Variable // initial values to deliver first, at initialRev
	initialRev int64
	stream     updateStream // the stream opened while the watch was set up, read first

	partialRev int64               // a revision whose group is open (its last member not seen yet), or 0
	partialIDs []string            // variable ids delivered at partialRev, reused between groups
	skip       map[string]struct{} // after a break inside partialRev's group: partialIDs, to skip when resent
	gone       map[string]bool     // identifiers whose variable was deleted
	failures   int                 // consecutive failures; a message resets it
	failovers  int                 // consecutive failovers (failover); a message resets it
	failedAt   time.Time           // when the current run of failures began
	single     bool                // the server lacks WatchVariableBatches
	noMux      bool                // the server lacks Watch, or the watch opted out
	// incarnation is the session incarnation the resume point belongs to:
	// sent on every resume, so that a server whose session was created
	// again answers with RESYNC instead of silence at revisions that now
	// mean something else.
	incarnation string
	// nextIncarnation is a new incarnation a stream reported whose RESYNC
	// has not been delivered completely yet. Until it has, resumes keep
	// naming the old one, so that a break inside the RESYNC asks for it
	// again instead of resuming quietly after it.
	nextIncarnation string
}

// streamConn is all a stream consumer needs from its BridgedState: the
// session it watches, the credentials its calls carry, and the pooled
// connection it leased, given back when it ends.
type streamConn struct {
	session string
	auth    bearer
	pool    *connPool
	lease   *pooledConn
}

func (c streamConn) release() {
	if c.pool != nil {
		c.pool.release(c.lease)
	}
}

// newStreamConsumer builds the consumer of w: it delivers initial (at
// revision initialRev) first, then reads the stream, resuming after w's
// progress and naming incarnation ("" when not known yet).
func newStreamConsumer(conn streamConn, w *watch, initial []*pb.Variable, initialRev int64, incarnation string) *streamConsumer {
	return &streamConsumer{conn: conn, w: w, initial: initial, initialRev: initialRev, incarnation: incarnation}
}

// incarnationHeader is the response header with the session's incarnation.
const incarnationHeader = "varbridge-watch-incarnation"

// request is the WatchVariables request that resumes the watch.
func (c *streamConsumer) request() *pb.WatchVariablesRequest {
	cfg := c.w.cfg
	start := c.w.resumeAt()
	if c.partialRev != 0 {
		start = c.partialRev
	}
	if c.nextIncarnation != "" {
		start = max(start, 1) // 0 would be a fresh watch: no RESYNC
	}
	idents := c.w.identifiers
	if len(c.gone) > 0 { // a deleted variable's identifier would fail the request
		idents = nil
		for _, id := range c.w.identifiers {
			if !c.gone[id] {
				idents = append(idents, id)
			}
		}
	}
	return &pb.WatchVariablesRequest{
		SessionId: c.conn.session, VariableIdentifiers: idents, StartRevision: start, Incarnation: c.incarnation,
		Where: cfg.Where, Coalesce: cfg.Coalesce, HeartbeatIntervalMs: backend.HeartbeatMs(cfg.Heartbeat),
		// watch.Deliver reads only type, value and version of a change's
		// variable; the rest is in the update itself.
		Compact: true,
	}
}

// updateStream is an open watch stream: the watch's part of its
// connection's shared Watch stream (muxSub), or on a server without one,
// WatchVariableBatches, or WatchVariables on a server that lacks that too.
type updateStream interface {
	next() ([]*pb.VariableUpdate, error)
	// close leaves the stream; the consumer calls it once it stops reading.
	close()
}

type batchStream struct {
	s grpc.ServerStreamingClient[pb.VariableUpdateBatch]
}

func (b batchStream) next() ([]*pb.VariableUpdate, error) {
	m, err := b.s.Recv()
	return m.GetUpdates(), err
}

// close does nothing: the stream ends with its context or its error.
func (batchStream) close() {}

type singleStream struct {
	s grpc.ServerStreamingClient[pb.VariableUpdate]
}

func (s singleStream) next() ([]*pb.VariableUpdate, error) {
	u, err := s.s.Recv()
	if err != nil {
		return nil, err
	}
	return []*pb.VariableUpdate{u}, nil
}

// close does nothing: the stream ends with its context or its error.
func (singleStream) close() {}

// open starts a stream and waits for the server's response header, which it
// sends once the observer is registered; a stream the server refuses fails
// here with the server's status (a raw gRPC error). With WithBatchedStream
// it uses WatchVariableBatches, falling back to WatchVariables on a server
// without it.
//
// Unlike unary calls, a stream does not wait for the connection to be
// ready: a watch counts each failed connect towards giving up, on its own
// backoff schedule, instead of hanging without a deadline.
func (c *streamConsumer) open(ctx context.Context) (updateStream, error) {
	c.armSkip()
	if !c.noMux && !c.w.cfg.ownStream {
		s, created, err := c.conn.lease.watchMux(ctx, c.conn.auth, c.request())
		if err == nil {
			c.noteIncarnation(created.GetIncarnation())
			return s, nil
		}
		if status.Code(err) != codes.Unimplemented {
			return nil, err
		}
		c.noMux = true
	}
	api := pb.NewBridgeServiceClient(c.conn.lease.cc)
	ctx = c.conn.auth.attach(ctx)
	if !c.single && c.w.cfg.batched {
		s, err := api.WatchVariableBatches(ctx, c.request(), grpc.WaitForReady(false))
		var md metadata.MD
		if err == nil {
			md, err = waitHeader(s, new(pb.VariableUpdateBatch))
		}
		if err == nil {
			c.started(md)
			return batchStream{s}, nil
		}
		if status.Code(err) != codes.Unimplemented {
			return nil, err
		}
		c.single = true
	}
	s, err := api.WatchVariables(ctx, c.request(), grpc.WaitForReady(false))
	var md metadata.MD
	if err == nil {
		md, err = waitHeader(s, new(pb.VariableUpdate))
	}
	if err != nil {
		return nil, err
	}
	c.started(md)
	return singleStream{s}, nil
}

// Discard implements backend.Feed: a consumer that will never run gives its
// connection back.
func (c *streamConsumer) Discard() {
	if c.stream != nil {
		c.stream.close()
	}
	c.conn.release()
}

// openFirst opens the stream while the watch is set up, so that
// WatchVariables returns once the server registered it; Run reads it first.
func (c *streamConsumer) openFirst(ctx context.Context) error {
	s, err := c.open(ctx)
	c.stream = s
	return err
}

// waitHeader blocks until the stream's header arrives or the stream fails.
func waitHeader(s grpc.ClientStream, probe any) (metadata.MD, error) {
	md, err := s.Header()
	if err == nil && md == nil { // the stream ended without headers: get its status
		err = s.RecvMsg(probe)
		if err == nil || err == io.EOF {
			err = status.Error(codes.Unavailable, "the watch stream ended before it started")
		}
	}
	return md, err
}

// started reads a new stream's header. When it names another incarnation
// than the one the resume point belongs to, the session was created again
// while the watch was away: the server starts the stream with RESYNC at its
// current revision R, which may well be lower than the old resume point, so
// the old revision bookkeeping is dropped; keeping it would discard the
// resync and every change up to the old revision as duplicates.
func (c *streamConsumer) started(md metadata.MD) {
	inc := ""
	if v := md.Get(incarnationHeader); len(v) > 0 {
		inc = v[0]
	}
	c.noteIncarnation(inc)
}

// noteIncarnation records the incarnation a stream reports ("" says
// nothing: an older server).
func (c *streamConsumer) noteIncarnation(inc string) {
	if inc == "" || inc == c.incarnation || inc == c.nextIncarnation {
		return
	}
	if c.incarnation == "" {
		c.incarnation = inc
		c.w.setIncarnation(inc)
		return
	}
	c.partialRev, c.partialIDs, c.skip = 0, c.partialIDs[:0], nil
	c.w.restart()
	// Updates from now on are of the new incarnation; requests name it once
	// complete has seen the RESYNC whole.
	c.nextIncarnation = inc
	c.w.setIncarnation(inc)
}

// Run implements backend.Feed: it reads the stream opened at setup, then
// reopens and resumes until the watch ends or fails for good.
func (c *streamConsumer) Run(ctx context.Context) error {
	w := c.w
	defer c.conn.release()
	stream := c.stream
	c.stream = nil
	c.deliverInitial()
	for {
		if stream == nil {
			if len(c.w.identifiers) > 0 && len(c.gone) == len(c.w.identifiers) {
				return verr.NotFound(c.conn.session, c.w.identifiers, "every variable the watch named was deleted")
			}
			s, err := c.open(ctx)
			if err != nil {
				if err := c.failed(ctx, err); err != nil {
					return err
				}
				continue
			}
			stream = s
			w.reconnects.Add(1)
		}
		err := c.consume(stream)
		stream.close()
		stream = nil
		if err == errBehind && ctx.Err() == nil {
			continue // the stream is fine: reopen on it at once, uncounted
		}
		if err := c.failed(ctx, err); err != nil {
			return err
		}
	}
}

func (c *streamConsumer) deliverInitial() {
	for i, v := range c.initial {
		c.w.Deliver(&pb.VariableUpdate{
			VariableId: v.GetId(), Variable: v, UpdateType: pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE,
			Revision: c.initialRev, UpdateSource: v.GetSource(), Timestamp: v.GetUpdatedAt(),
			VariableName: v.GetName(), LastInRevision: i == len(c.initial)-1,
		})
	}
	c.initial = nil
}

// consume reads the stream until it breaks.
func (c *streamConsumer) consume(stream updateStream) error {
	for {
		us, err := stream.next()
		if err != nil {
			return err
		}
		c.failures, c.failovers = 0, 0
		for _, u := range us {
			c.process(u)
		}
	}
}

// process delivers an update unless it was already delivered before a
// reconnect, and moves the resume point.
func (c *streamConsumer) process(u *pb.VariableUpdate) {
	rev := u.GetRevision()
	if c.incarnation == "" {
		c.noteIncarnation(u.GetIncarnation())
	}
	if u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_HEARTBEAT {
		if rev >= c.w.resumeAt() {
			c.complete(rev)
		}
		c.w.Deliver(u)
		return
	}
	switch {
	case c.partialRev != 0 && rev == c.partialRev:
		if _, dup := c.skip[u.GetVariableId()]; dup {
			c.w.duplicates.Add(1)
			if u.GetLastInRevision() {
				c.complete(rev)
			}
			return
		}
	case rev < c.w.resumeAt():
		c.w.duplicates.Add(1)
		return
	case c.partialRev != 0:
		// A later revision although the group at partialRev was not flagged
		// complete: the server sent all of it that this watch gets.
		c.complete(c.partialRev)
	}
	c.w.Deliver(u)
	if u.GetUpdateType() == pb.UpdateType_UPDATE_TYPE_DELETED {
		if id, ok := c.w.identOf(u.GetVariableId()); ok {
			if c.gone == nil {
				c.gone = map[string]bool{}
			}
			c.gone[id] = true
		}
	}
	if u.GetLastInRevision() {
		c.complete(rev)
		return
	}
	if c.partialRev != rev {
		c.partialRev, c.partialIDs, c.skip = rev, c.partialIDs[:0], nil
	}
	// A slice, not a set: only a break inside the group needs lookups
	// (armSkip), and a map insert per member was the consumer's largest
	// cost after decoding when every revision is a batch.
	c.partialIDs = append(c.partialIDs, u.GetVariableId())
}

// armSkip runs before a stream opens: if the last one broke inside
// partialRev's group, the new one resumes at that revision and resends the
// group, and the members already delivered are skipped.
func (c *streamConsumer) armSkip() {
	if c.partialRev == 0 {
		return
	}
	c.skip = make(map[string]struct{}, len(c.partialIDs))
	for _, id := range c.partialIDs {
		c.skip[id] = struct{}{}
	}
}

// complete records that everything through rev was delivered.
func (c *streamConsumer) complete(rev int64) {
	c.w.Complete(rev)
	c.partialRev, c.partialIDs, c.skip = 0, c.partialIDs[:0], nil
	if c.nextIncarnation != "" {
		c.incarnation, c.nextIncarnation = c.nextIncarnation, ""
	}
}

// failed handles a failed connect or a broken stream, waiting out the
// backoff before the next attempt. It returns non-nil when the watch is
// over: its context ended (ctx.Err()), the error cannot be fixed by
// retrying (the error), or too many consecutive failures (GaveUpError).
func (c *streamConsumer) failed(ctx context.Context, err error) error {
	w := c.w
	if ctx.Err() != nil {
		return ctx.Err()
	}
	again := retryable(err)
	err = fromStatus(err)
	w.noteError(err)
	if !again {
		return err
	}
	if c.failover() {
		return c.wait(ctx, backoff(w.cfg.backoffBase, w.cfg.backoffCap, 1))
	}
	c.failures++
	if c.failures == 1 {
		c.failedAt = time.Now()
	}
	if c.failures >= w.cfg.maxFailures {
		return &GaveUpError{Attempts: c.failures, Elapsed: time.Since(c.failedAt), Last: err}
	}
	return c.wait(ctx, backoff(w.cfg.backoffBase, w.cfg.backoffCap, c.failures))
}

// wait waits d, or until ctx ends (then it returns ctx.Err()).
func (c *streamConsumer) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxFailovers bounds the consecutive failovers of a watch, so that servers
// that are up but refuse its stream with a retryable status (one cut off
// from its storage, say) cannot make it spin: past it, each failure counts
// towards giving up on the backoff schedule.
const maxFailovers = 3

// failover reports whether a retryable failure is a failover: the watch's
// target names several servers and its connection still has one up (gRPC
// already dropped the one that failed from the rotation, so the next stream
// opens on a live server). A failover neither waits the backoff (only the
// first attempt's jitter, which spreads the watches of a dead server over
// a moment) nor counts towards giving up: another server is there to take
// the watch. A target with one server never fails over.
func (c *streamConsumer) failover() bool {
	if c.conn.pool == nil || !c.conn.pool.balanced || c.failovers >= maxFailovers {
		return false
	}
	if c.conn.lease.cc.GetState() != connectivity.Ready {
		return false
	}
	c.failovers++
	c.w.failovers.Add(1)
	return true
}

// retryable reports whether a stream error may go away by reconnecting: a
// broken connection or a server going away. A session that is gone, a bad
// request, a limit, and missing or refused credentials are final.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	}
	switch st.Code() {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Aborted, codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return false
}

// backoff is the delay before reconnect attempt number failures (1 for the
// first after a break). The first waits only a random fraction (up to the
// jitter, 10%) of base, so that a stream that broke once comes back at once
// while many watches broken together spread out; each further consecutive
// failure waits base doubled per failure after the second, capped at limit,
// +-10%.
func backoff(base, limit time.Duration, failures int) time.Duration {
	if failures <= 1 {
		return time.Duration(float64(base) * BackoffJitter * rand.Float64())
	}
	d := base
	for i := 2; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	j := time.Duration(float64(d) * BackoffJitter * (2*rand.Float64() - 1))
	return d + j
}
