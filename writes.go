package varbridge

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Writes on a stream. A BridgedState's Set and SetMany go over one
// long-lived WriteVariables stream per connection and token, shared by
// every BridgedState of the pool that sends that token: a write on an open
// stream skips the per-call HTTP/2 stream, headers and trailers of a unary
// SetVariable, about half its round trip. Writers do not wait for each
// other's acks: each queues its write and waits for its own ack, which the
// server sends in the order the writes arrived. Whoever holds the send
// turn sends every write queued by then in one message, so writers that
// come together share a message (and the server's acks for them share
// one), while a lone writer sends at once.
//
// The stream is for writers that write often: a write opens it when the
// previous write for the token came less than writeStreamIdle before (a
// lone write goes unary, and costs the server no stream), and it closes
// itself cleanly after writeStreamIdle without writes (an idle stream would
// hold a server goroutine for nothing). A write after it broke opens a new
// one, under the same rule. A write whose ack was lost with a broken stream fails
// with ErrUnavailable, as a unary call cut off by a lost connection does:
// it may or may not have been applied, so it is never sent again behind
// the caller's back. Writes go unary instead when the stream cannot be
// opened right now (no connection: the unary call waits for one within the
// caller's deadline), when the server has no WriteVariables (an older
// server; found out once per pool), when the stream broke before the write
// left the client (gRPC refuses to send on it, so nothing reached the
// server), and when the write is large (maxStreamedWriteBytes), where the
// stream saves nothing worth the risk of a message the server refuses
// ending the stream for every write on it.

// writeStreamIdle is how recent the previous write must be for a write to
// open a stream, and how long an open stream waits for a write before it
// closes.
const writeStreamIdle = 2 * time.Second

// maxStreamedWriteBytes is the largest write sent on the stream.
const maxStreamedWriteBytes = 256 << 10

// maxWriteMessageBytes bounds the writes sent in one message, well under
// the server's request size limit (8 MiB by default).
const maxWriteMessageBytes = 1 << 20

// errNotStreamed says a write did not go on the stream and nothing of it
// reached the server: the caller sends it as a unary call.
var errNotStreamed = errors.New("write not sent on the write stream")

// writeStreams are a pool's write streams, by token.
type writeStreams struct {
	mu          sync.Mutex
	byToken     map[bearer]*writeStream
	lastWrite   map[bearer]time.Time // writes made without a stream
	unsupported bool                 // the server answered UNIMPLEMENTED: no more streams
	closed      bool
}

// writeStream is one open WriteVariables stream. Writers queue their
// writes (under mu) and take turns sending what is queued (sendMu); its
// receiver goroutine hands each ack to the writer waiting for it. The
// receiver never waits for sendMu: a writer blocked in Send by flow
// control must not keep the acks that free it from being read.
type writeStream struct {
	ws     *writeStreams
	token  bearer
	stream grpc.BidiStreamingClient[pb.WriteVariablesRequest, pb.WriteVariablesResponse]
	cancel context.CancelFunc
	done   chan struct{} // closed when the receiver has stopped

	sendMu sync.Mutex

	idle *time.Timer // runs closeIfIdle

	mu       sync.Mutex
	nextID   uint64
	queued   []*queuedWrite // not sent yet, in order
	waiting  map[uint64]*queuedWrite
	broken   bool
	lastUsed time.Time
}

// queuedWrite is a write from its queueing to its ack.
type queuedWrite struct {
	req  *pb.WriteRequest
	size int
	sent bool // guarded by writeStream.mu
	ack  chan writeResult
}

type writeResult struct {
	resp *pb.WriteResponse
	err  error
}

// stream returns the open stream for token, opening one if needed; nil
// when writes go unary.
func (w *writeStreams) stream(cc *grpc.ClientConn, token bearer) *writeStream {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.unsupported || w.closed {
		return nil
	}
	if s := w.byToken[token]; s != nil {
		return s
	}
	now := time.Now()
	last, seen := w.lastWrite[token]
	if w.lastWrite == nil {
		w.lastWrite = map[bearer]time.Time{}
	}
	w.lastWrite[token] = now
	if !seen || now.Sub(last) >= writeStreamIdle {
		return nil // a lone write
	}
	if cc.GetState() != connectivity.Ready {
		return nil // the unary call waits for the connection, within its deadline
	}
	ctx, cancel := context.WithCancel(token.attach(context.Background()))
	// Fail at once without a connection rather than wait: the write goes
	// unary then, and waits for one within its own deadline.
	st, err := pb.NewBridgeServiceClient(cc).WriteVariables(ctx, grpc.WaitForReady(false))
	if err != nil {
		cancel()
		return nil
	}
	s := &writeStream{ws: w, token: token, stream: st, cancel: cancel, done: make(chan struct{}), waiting: map[uint64]*queuedWrite{}}
	if w.byToken == nil {
		w.byToken = map[bearer]*writeStream{}
	}
	w.byToken[token] = s
	delete(w.lastWrite, token)
	s.lastUsed = now
	s.idle = time.AfterFunc(writeStreamIdle, s.closeIfIdle)
	go s.receive()
	return s
}

// closeIfIdle closes s cleanly (the server answers every write sent and
// ends the stream) when no write used it for writeStreamIdle, and checks
// again later otherwise.
func (s *writeStream) closeIfIdle() {
	s.mu.Lock()
	if s.broken {
		s.mu.Unlock()
		return
	}
	if wait := writeStreamIdle - time.Since(s.lastUsed); wait > 0 || len(s.waiting) > 0 || len(s.queued) > 0 {
		s.idle.Reset(max(wait, writeStreamIdle/10))
		s.mu.Unlock()
		return
	}
	s.broken = true // later writes go elsewhere
	s.mu.Unlock()
	s.ws.forget(s, false)
	s.sendMu.Lock()
	_ = s.stream.CloseSend() // the receiver sees the end, and stops
	s.sendMu.Unlock()
}

// close ends every stream and waits for their receivers.
func (w *writeStreams) close() {
	w.mu.Lock()
	w.closed = true
	streams := w.byToken
	w.byToken = nil
	w.mu.Unlock()
	for _, s := range streams {
		s.idle.Stop()
		s.cancel()
		<-s.done
	}
}

// forget drops s, broken, so that the next write opens a new stream.
func (w *writeStreams) forget(s *writeStream, unimplemented bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byToken[s.token] == s {
		delete(w.byToken, s.token)
	}
	if unimplemented {
		w.unsupported = true
	}
}

// write sends req and waits for its ack: the unary call's response or
// error, errNotStreamed when the caller must send it unary, or an
// ErrUnavailable-class status when the stream broke before the ack came.
func (s *writeStream) write(ctx context.Context, req *pb.WriteRequest, size int) (*pb.WriteResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	q := &queuedWrite{req: req, size: size, ack: make(chan writeResult, 1)}
	s.mu.Lock()
	if s.broken {
		s.mu.Unlock()
		return nil, errNotStreamed
	}
	s.nextID++
	s.lastUsed = time.Now()
	req.Id = s.nextID
	s.queued = append(s.queued, q)
	s.waiting[req.Id] = q // before it is sent: the ack may come before Send returns
	s.mu.Unlock()
	s.sendQueued(q)
	select {
	case r := <-q.ack:
		return r.resp, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.waiting, req.Id)
		s.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// sendQueued takes send turns until q has been sent (by this writer or
// another one) or failed; each turn sends what is queued, up to
// maxWriteMessageBytes, in one message.
func (s *writeStream) sendQueued(q *queuedWrite) {
	for {
		s.sendMu.Lock()
		s.mu.Lock()
		if q.sent || s.broken {
			s.mu.Unlock()
			s.sendMu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(s.queued) && (n == 0 || size+s.queued[n].size <= maxWriteMessageBytes) {
			size += s.queued[n].size
			n++
		}
		batch := s.queued[:n:n]
		s.queued = s.queued[n:]
		msg := &pb.WriteVariablesRequest{Writes: make([]*pb.WriteRequest, n)}
		for i, b := range batch {
			b.sent = true
			msg.Writes[i] = b.req
		}
		s.mu.Unlock()
		err := s.stream.Send(msg)
		s.sendMu.Unlock()
		if err != nil {
			// gRPC sends nothing on a stream that has ended (the receiver
			// learns why and fails the writes that were sent): these never
			// left, and go unary; so do the ones queued behind them.
			s.cancel() // the receiver ends, and forgets the stream
			s.mu.Lock()
			s.broken = true
			batch = append(batch, s.queued...)
			s.queued = nil
			for _, b := range batch {
				if s.waiting[b.req.Id] == b {
					delete(s.waiting, b.req.Id)
					b.ack <- writeResult{err: errNotStreamed}
				}
			}
			s.mu.Unlock()
			return
		}
	}
}

// receive hands acks to their writers until the stream ends, then fails
// the writes still waiting.
func (s *writeStream) receive() {
	defer close(s.done)
	var err error
	for {
		var resp *pb.WriteVariablesResponse
		if resp, err = s.stream.Recv(); err != nil {
			break
		}
		s.mu.Lock()
		for _, ack := range resp.GetAcks() {
			if q := s.waiting[ack.GetId()]; q != nil {
				delete(s.waiting, ack.GetId())
				q.ack <- writeResult{resp: ack}
			}
		}
		s.mu.Unlock()
	}
	s.cancel()
	unimplemented := status.Code(err) == codes.Unimplemented
	s.ws.forget(s, unimplemented)
	// A server without the method refused the stream before reading any
	// write: they all go unary. Otherwise each one sent may have been
	// applied; those never sent go unary.
	lost := errNotStreamed
	if !unimplemented {
		msg := "the write stream broke before the write was acknowledged; it may or may not have been applied"
		if err != nil && !errors.Is(err, io.EOF) {
			msg += ": " + status.Convert(err).Message()
		}
		lost = status.Error(codes.Unavailable, msg)
	}
	s.mu.Lock()
	s.broken = true
	for id, q := range s.waiting {
		if q.sent {
			q.ack <- writeResult{err: lost}
		} else {
			q.ack <- writeResult{err: errNotStreamed}
		}
		delete(s.waiting, id)
	}
	s.queued = nil
	s.mu.Unlock()
}

// ackError is a failed ack's status as a gRPC status error, as the unary
// call would have returned it.
func ackError(e *pb.WriteStatus) error {
	return status.ErrorProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
}

// streamWrite sends one write on the pool's write stream for the state's
// token; errNotStreamed when it must go unary.
func (r *remote) streamWrite(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	size := req.SizeVT()
	if size > maxStreamedWriteBytes {
		return nil, errNotStreamed
	}
	s := r.pool.writes.stream(r.pool.unary(), bearer(r.token))
	if s == nil {
		return nil, errNotStreamed
	}
	resp, err := s.write(ctx, req, size)
	if err != nil {
		return nil, err
	}
	if e, ok := resp.GetResult().(*pb.WriteResponse_Error); ok {
		return nil, ackError(e.Error)
	}
	return resp, nil
}
