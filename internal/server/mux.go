package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/feed"
	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The multiplexed watch stream (Watch): many watches on one stream, as
// etcd's Watch carries them. An idle watch then costs its store observer
// and its feed state, not a stream and a goroutine: the handler's goroutine
// owns every watch of the stream (a feed.Group), and one more goroutine
// reads the client's requests into a bounded queue, since a gRPC Recv
// cannot be waited on beside anything else.
//
// Each create goes through the rules of a single watch: the request
// limits (checkRequest), auth against the create's own session (the
// stream's one authorization header may serve watches of several sessions
// that share the token), and feed.Open's checks. A create that fails, and
// a watch that ends (its session ended, its filter's budget), end that
// watch alone with the status a single-watch RPC ends with; only a request
// that does not decode, or a transport failure, ends the stream.

// muxQueue bounds the requests read ahead of the owner: when it is full,
// the reader stops reading, and the client's sends wait on flow control.
const muxQueue = 64

// Watch implements BridgeService: one multiplexed watch stream.
func (s *Server) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	return s.serveMux(stream)
}

// mux is the state of one multiplexed stream; only its owner touches it.
type mux struct {
	s       *Server
	ss      grpc.ServerStream
	ctx     context.Context
	g       *feed.Group
	ids     map[int64]*feed.Watch
	byWatch map[*feed.Watch]int64
	sendErr error // the stream is broken: the owner stops
}

// serveMux runs a Watch stream until the client closes its side, the
// transport breaks, or a request does not decode.
func (s *Server) serveMux(ss grpc.ServerStream) error {
	ctx := ss.Context()
	x := &mux{s: s, ss: ss, ctx: ctx, g: feed.NewGroup(ctx), ids: map[int64]*feed.Watch{}, byWatch: map[*feed.Watch]int64{}}
	defer x.close()
	reqs := make(chan *pb.WatchRequest, muxQueue)
	recvErr := make(chan error, 1)
	quit := make(chan struct{})
	defer close(quit)
	// The reader ends when RecvMsg fails, which it does at the latest when
	// the handler returns and gRPC ends the stream.
	go func() {
		for {
			req := new(pb.WatchRequest)
			if err := ss.RecvMsg(req); err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-quit:
				return
			}
		}
	}()
	done := ctx.Done()
	for {
		var err error
		select {
		case <-done:
			return status.Error(codes.Canceled, "watch stream cancelled by the client")
		case err = <-recvErr:
			if errors.Is(err, io.EOF) { // the client closed its side: every watch ends
				return nil
			}
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return status.Error(codes.Canceled, "watch stream cancelled by the client")
			}
			return err
		case req := <-reqs:
			err = x.handle(req)
		case <-x.g.Wake():
			err = x.g.Step(x.ended)
		}
		if err == nil {
			err = x.sendErr
		}
		if err != nil {
			return err
		}
	}
}

// handle serves one request.
func (x *mux) handle(req *pb.WatchRequest) error {
	if err := checkDecoded(req); err != nil {
		return err
	}
	switch r := req.GetRequest().(type) {
	case *pb.WatchRequest_Create:
		x.create(r.Create)
	case *pb.WatchRequest_Cancel:
		id := r.Cancel.GetWatchId()
		if w := x.ids[id]; w != nil {
			x.drop(w)
			x.s.opts.metrics.WatchClosed(metrics.ClosedCancelled)
		}
		x.send(&pb.WatchResponse{WatchId: id, Response: &pb.WatchResponse_Canceled{Canceled: &pb.WatchCanceled{}}})
	default:
		return invalidField("request", "a WatchRequest must hold create or cancel")
	}
	return nil
}

// create opens a watch: the checks of a single watch, then created, then
// its initial values. A refusal ends this watch alone.
func (x *mux) create(c *pb.WatchCreateRequest) {
	id, req := c.GetWatchId(), c.GetWatch()
	w, err := x.open(id, req)
	if err != nil {
		x.end(id, err)
		return
	}
	m := x.s.opts.metrics
	m.WatchOpened()
	if !x.send(&pb.WatchResponse{WatchId: id, Response: &pb.WatchResponse_Created{Created: &pb.WatchCreated{
		StartsAfter: w.StartsAfter(), Incarnation: w.Incarnation(),
	}}}) {
		w.Close()
		m.WatchClosed(metrics.ClosedSendFailed)
		return
	}
	x.ids[id], x.byWatch[w] = w, id
	sendBatch := func(b *pb.VariableUpdateBatch) error {
		if !x.send(&pb.WatchResponse{WatchId: id, Response: &pb.WatchResponse_Updates{Updates: b}}) {
			return x.sendErr
		}
		return nil
	}
	if err := x.g.Add(w, func(us []*pb.VariableUpdate) error {
		m.SendStarted()
		err := SendBatches(us, sendBatch)
		m.SendDone()
		return err
	}); err != nil {
		delete(x.ids, id)
		delete(x.byWatch, w)
		m.WatchClosed(metrics.ClosedSendFailed)
	}
}

// open checks a create and registers its watch.
func (x *mux) open(id int64, req *pb.WatchVariablesRequest) (*feed.Watch, error) {
	if req == nil {
		return nil, &store.FieldError{Field: "watch", Reason: "is required: it says what to watch"}
	}
	if x.ids[id] != nil {
		return nil, &store.FieldError{Field: "watch_id", Reason: fmt.Sprintf("watch %d is already open on this stream", id)}
	}
	if err := x.s.checkRequest(req); err != nil {
		return nil, err
	}
	if x.s.opts.auth {
		if err := x.s.authorize(x.ctx, req.GetSessionId()); err != nil {
			return nil, err
		}
	}
	m, log, session := x.s.opts.metrics, x.s.opts.log, req.GetSessionId()
	return x.g.Open(x.s.st, req, feed.Hooks{
		OnFilterError: func(err error) {
			m.FilterError()
			log.Debug("where filter failed; update sent", "session", session, "err", err)
		},
		OnSent:   m.UpdateSent,
		OnResync: m.Resync,
	})
}

// ended is the group's report of a watch whose feed stopped.
func (x *mux) ended(w *feed.Watch, err error) error {
	id := x.byWatch[w]
	delete(x.ids, id)
	delete(x.byWatch, w)
	x.s.opts.metrics.WatchClosed(closeReason(x.ctx, err, x.sendErr != nil))
	if x.sendErr != nil {
		return x.sendErr
	}
	x.end(id, err)
	return nil
}

// end tells the client that watch id ended with err, as a single watch's
// final status would.
func (x *mux) end(id int64, err error) {
	st, _ := status.FromError(boundStatus(toStatus(err)))
	b, merr := proto.Marshal(st.Proto())
	if merr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, "the watch ended; its status did not encode").Proto())
	}
	x.send(&pb.WatchResponse{WatchId: id, Response: &pb.WatchResponse_Ended{Ended: &pb.WatchEnded{Status: b}}})
}

// send sends one response; a failure breaks the stream for good.
func (x *mux) send(r *pb.WatchResponse) bool {
	if x.sendErr != nil {
		return false
	}
	if err := x.ss.SendMsg(r); err != nil {
		x.sendErr = err
		return false
	}
	return true
}

// drop ends a watch at the client's request.
func (x *mux) drop(w *feed.Watch) {
	x.g.Remove(w)
	delete(x.ids, x.byWatch[w])
	delete(x.byWatch, w)
}

// close ends the watches still open when the stream ends.
func (x *mux) close() {
	reason := metrics.ClosedCancelled
	if x.sendErr != nil && x.ctx.Err() == nil {
		reason = metrics.ClosedSendFailed
	}
	for range x.ids {
		x.s.opts.metrics.WatchClosed(reason)
	}
	x.g.Close()
}
