package varbridge

import (
	"context"
	"errors"
	"io"
	"sync"

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
// other: each sends its write and waits for its own ack, which the server
// sends in the order the writes arrived.
//
// The stream is opened by the first write, and again by the first write
// after it broke. A write whose ack was lost with a broken stream fails
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

// maxStreamedWriteBytes is the largest write sent on the stream.
const maxStreamedWriteBytes = 256 << 10

// errNotStreamed says a write did not go on the stream and nothing of it
// reached the server: the caller sends it as a unary call.
var errNotStreamed = errors.New("write not sent on the write stream")

// writeStreams are a pool's write streams, by token.
type writeStreams struct {
	mu          sync.Mutex
	byToken     map[bearer]*writeStream
	unsupported bool // the server answered UNIMPLEMENTED: no more streams
	closed      bool
}

// writeStream is one open WriteVariables stream: writers send one at a
// time (sendMu), and its receiver goroutine hands each ack to the writer
// waiting for it. The receiver never waits for sendMu: a writer blocked
// in Send by flow control must not keep the acks that free it from being
// read.
type writeStream struct {
	ws     *writeStreams
	token  bearer
	stream grpc.BidiStreamingClient[pb.WriteRequest, pb.WriteResponse]
	cancel context.CancelFunc
	done   chan struct{} // closed when the receiver has stopped

	sendMu sync.Mutex
	nextID uint64 // guarded by sendMu

	mu      sync.Mutex
	waiting map[uint64]chan writeResult
	broken  bool
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
	s := &writeStream{ws: w, token: token, stream: st, cancel: cancel, done: make(chan struct{}), waiting: map[uint64]chan writeResult{}}
	if w.byToken == nil {
		w.byToken = map[bearer]*writeStream{}
	}
	w.byToken[token] = s
	go s.receive()
	return s
}

// close ends every stream and waits for their receivers.
func (w *writeStreams) close() {
	w.mu.Lock()
	w.closed = true
	streams := w.byToken
	w.byToken = nil
	w.mu.Unlock()
	for _, s := range streams {
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
func (s *writeStream) write(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	ch := make(chan writeResult, 1)
	s.sendMu.Lock()
	s.nextID++
	id := s.nextID
	s.mu.Lock()
	if s.broken {
		s.mu.Unlock()
		s.sendMu.Unlock()
		return nil, errNotStreamed
	}
	s.waiting[id] = ch // before Send: the ack may come before Send returns
	s.mu.Unlock()
	req.Id = id
	err := s.stream.Send(req)
	s.sendMu.Unlock()
	if err != nil {
		// gRPC sends nothing on a stream that has ended (the receiver
		// learns why and fails the writes that were sent): this one never
		// left, and goes unary.
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
		return nil, errNotStreamed
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// receive hands acks to their writers until the stream ends, then fails
// the writes still waiting.
func (s *writeStream) receive() {
	defer close(s.done)
	var err error
	for {
		var resp *pb.WriteResponse
		if resp, err = s.stream.Recv(); err != nil {
			break
		}
		s.mu.Lock()
		ch := s.waiting[resp.GetId()]
		delete(s.waiting, resp.GetId())
		s.mu.Unlock()
		if ch != nil {
			ch <- writeResult{resp: resp}
		}
	}
	s.cancel()
	unimplemented := status.Code(err) == codes.Unimplemented
	s.ws.forget(s, unimplemented)
	// A server without the method refused the stream before reading any
	// write: they all go unary. Otherwise each may have been applied.
	fail := errNotStreamed
	if !unimplemented {
		msg := "the write stream broke before the write was acknowledged; it may or may not have been applied"
		if err != nil && !errors.Is(err, io.EOF) {
			msg += ": " + status.Convert(err).Message()
		}
		fail = status.Error(codes.Unavailable, msg)
	}
	s.mu.Lock()
	s.broken = true
	waiting := s.waiting
	s.waiting = nil
	s.mu.Unlock()
	for _, ch := range waiting {
		ch <- writeResult{err: fail}
	}
}

// ackError is a failed ack's status as a gRPC status error, as the unary
// call would have returned it.
func ackError(e *pb.WriteStatus) error {
	return status.ErrorProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
}

// streamWrite sends one write on the pool's write stream for the state's
// token; errNotStreamed when it must go unary.
func (r *remote) streamWrite(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	if req.SizeVT() > maxStreamedWriteBytes {
		return nil, errNotStreamed
	}
	s := r.pool.writes.stream(r.pool.unary(), bearer(r.token))
	if s == nil {
		return nil, errNotStreamed
	}
	resp, err := s.write(ctx, req)
	if err != nil {
		return nil, err
	}
	if e, ok := resp.GetResult().(*pb.WriteResponse_Error); ok {
		return nil, ackError(e.Error)
	}
	return resp, nil
}
