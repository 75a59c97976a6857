package varbridge

import (
	"context"
	"sync"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The multiplexed watch stream of a pooled connection: the watches a
// connection carries share one Watch stream (per token, since a stream
// carries one authorization header) instead of a stream each, as etcd's
// clients share theirs. Each watch keeps its own streamConsumer, which sees
// its part of the shared stream as an updateStream (muxSub): created,
// updates, ended, exactly what a single-watch stream would give it, so the
// resume rules stay in one place. When the shared stream breaks, every
// watch on it sees the error and resumes on its own schedule, each from
// its own revision and incarnation, on the next shared stream.
//
// One reader goroutine per shared stream hands each response to its watch
// through a small bounded queue, and never waits for one: a watch whose
// handler does not keep up would otherwise stall the reader, and so every
// other watch of its stream (etcd#17529). A watch whose queue is full is
// left behind instead: the reader drops its later responses, and its
// consumer, once it has handled what was queued, reopens it on the stream
// from the revision it reached, as after a cut: nothing lost or repeated,
// and no memory grows for it.

// muxSubQueue bounds the responses waiting for one watch's consumer.
const muxSubQueue = 8

// muxConn is one open Watch stream of a pooled connection.
type muxConn struct {
	pc     *pooledConn
	key    bearer
	stream grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]
	cancel context.CancelFunc

	sendMu sync.Mutex // grpc-go allows one sender at a time

	subs map[int64]*muxSub // guarded by pc.mu

	done       chan struct{} // closed when the stream broke; err says why
	err        error
	readerDone chan struct{}
}

// muxSub is one watch of a shared stream, as its consumer reads it.
type muxSub struct {
	m    *muxConn
	id   int64
	ctx  context.Context
	ch   chan *pb.WatchResponse
	left chan struct{} // closed when the consumer leaves
	once sync.Once
	// behind is closed by the reader when ch was full: the responses
	// after those queued were dropped (see errBehind).
	behind chan struct{}
}

// errBehind ends a watch's part of a shared stream when its consumer fell
// behind; the consumer reopens it at once from the revision it reached.
var errBehind = status.Error(codes.Unavailable, "the watch fell behind its shared stream and is reopened from its revision")

// errNoMux says the server has no Watch method; the watch uses its own
// stream instead.
var errNoMux = status.Error(codes.Unimplemented, "the server has no multiplexed watch stream")

// watchMux opens watch req on the connection's shared stream for auth and
// waits until the server has registered it. It fails with errNoMux (code
// UNIMPLEMENTED) when the server lacks the stream.
func (pc *pooledConn) watchMux(ctx context.Context, auth bearer, req *pb.WatchVariablesRequest) (*muxSub, *pb.WatchCreated, error) {
	pc.mu.Lock()
	if pc.noMux {
		pc.mu.Unlock()
		return nil, nil, errNoMux
	}
	m := pc.muxes[auth]
	if m != nil {
		select {
		case <-m.done: // broke, and its reader has not taken it off yet
			m = nil
		default:
		}
	}
	if m == nil {
		var err error
		if m, err = pc.openMux(auth); err != nil {
			pc.mu.Unlock()
			return nil, nil, err
		}
	}
	pc.nextWatch++
	s := &muxSub{m: m, id: pc.nextWatch, ctx: ctx, ch: make(chan *pb.WatchResponse, muxSubQueue), left: make(chan struct{}), behind: make(chan struct{})}
	m.subs[s.id] = s
	pc.mu.Unlock()
	if err := m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreateRequest{WatchId: s.id, Watch: req}}}); err != nil {
		s.close()
		return nil, nil, err
	}
	select {
	case r := <-s.ch:
		if c := r.GetCreated(); c != nil {
			return s, c, nil
		}
		s.close()
		return nil, nil, responseErr(r)
	case <-m.done:
		s.close()
		return nil, nil, m.err
	case <-ctx.Done():
		s.close()
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	}
}

// openMux opens the connection's shared stream for auth; pc.mu is held.
func (pc *pooledConn) openMux(auth bearer) (*muxConn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	// Like a single watch's stream, it does not wait for the connection:
	// a watch counts a failed connect towards giving up.
	stream, err := pb.NewBridgeServiceClient(pc.cc).Watch(auth.attach(ctx), grpc.WaitForReady(false))
	if err != nil {
		cancel()
		return nil, err
	}
	m := &muxConn{pc: pc, key: auth, stream: stream, cancel: cancel, subs: map[int64]*muxSub{},
		done: make(chan struct{}), readerDone: make(chan struct{})}
	if pc.muxes == nil {
		pc.muxes = map[bearer]*muxConn{}
	}
	pc.muxes[auth] = m
	go m.read()
	return m, nil
}

func (m *muxConn) send(r *pb.WatchRequest) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	err := m.stream.Send(r)
	if err != nil {
		// Send reports io.EOF on a stream that ended; Recv has its status.
		<-m.done
		return m.err
	}
	return nil
}

// read hands every response to its watch until the stream breaks.
func (m *muxConn) read() {
	defer close(m.readerDone)
	pc := m.pc
	for {
		r, err := m.stream.Recv()
		if err != nil {
			m.fail(err)
			return
		}
		pc.mu.Lock()
		s := m.subs[r.GetWatchId()]
		if s != nil && (r.GetEnded() != nil || r.GetCanceled() != nil) {
			delete(m.subs, s.id) // the server forgot it; a cancel need not be sent
		}
		pc.mu.Unlock()
		if s == nil { // a watch that left: its last responses go nowhere
			continue
		}
		select {
		case <-s.behind: // left behind: it reopens from where it got to
			continue
		default:
		}
		select {
		case s.ch <- r:
		case <-s.left:
		default:
			close(s.behind) // only this goroutine closes it
		}
	}
}

// fail records why the stream broke and takes it off its connection; its
// watches learn it from done.
func (m *muxConn) fail(err error) {
	if status.Code(err) == codes.OK { // io.EOF: the server ended the stream
		err = status.Error(codes.Unavailable, "the watch stream ended")
	}
	m.err = err
	close(m.done)
	pc := m.pc
	pc.mu.Lock()
	if pc.muxes[m.key] == m {
		delete(pc.muxes, m.key)
	}
	if status.Code(err) == codes.Unimplemented {
		pc.noMux = true
	}
	pc.mu.Unlock()
	m.cancel()
}

// next implements updateStream.
func (s *muxSub) next() ([]*pb.VariableUpdate, error) {
	select {
	case r := <-s.ch:
		return s.updates(r)
	case <-s.m.done:
		select { // what arrived before the break is still good
		case r := <-s.ch:
			return s.updates(r)
		default:
		}
		return nil, s.m.err
	case <-s.behind:
		select { // what was queued before it fell behind is still good
		case r := <-s.ch:
			return s.updates(r)
		default:
		}
		return nil, errBehind
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

func (s *muxSub) updates(r *pb.WatchResponse) ([]*pb.VariableUpdate, error) {
	if b := r.GetUpdates(); b != nil {
		return b.GetUpdates(), nil
	}
	return nil, responseErr(r)
}

// responseErr is the error a response that ends a watch stands for: the
// status the server ended it with, as a single watch's stream ends.
func responseErr(r *pb.WatchResponse) error {
	switch {
	case r.GetEnded() != nil:
		var sp spb.Status
		if err := proto.Unmarshal(r.GetEnded().GetStatus(), &sp); err != nil {
			return status.Errorf(codes.Internal, "watch %d ended with a status that does not decode: %v", r.GetWatchId(), err)
		}
		if codes.Code(sp.GetCode()) == codes.OK {
			return status.Errorf(codes.Unavailable, "watch %d ended", r.GetWatchId())
		}
		return status.FromProto(&sp).Err()
	case r.GetCanceled() != nil:
		return status.Errorf(codes.Canceled, "watch %d cancelled", r.GetWatchId())
	}
	return status.Errorf(codes.Internal, "watch %d: unexpected response %T", r.GetWatchId(), r.GetResponse())
}

// close implements updateStream: the consumer leaves. The server is told
// to drop the watch, and the stream closes with its last watch.
func (s *muxSub) close() {
	s.once.Do(func() {
		close(s.left)
		m, pc := s.m, s.m.pc
		pc.mu.Lock()
		_, open := m.subs[s.id]
		delete(m.subs, s.id)
		last := len(m.subs) == 0 && pc.muxes[m.key] == m
		if last {
			delete(pc.muxes, m.key)
		}
		pc.mu.Unlock()
		switch {
		case last:
			m.cancel()
			<-m.readerDone
		case open:
			select {
			case <-m.done:
			default:
				_ = m.send(&pb.WatchRequest{Request: &pb.WatchRequest_Cancel{Cancel: &pb.WatchCancelRequest{WatchId: s.id}}})
			}
		}
	})
}
