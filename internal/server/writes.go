package server

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The write stream (WriteVariables): many writes and their acks on one
// long-lived stream. Each write is the unary call it carries, run through
// the very interceptors and handler of that call (auth against its
// session, request limits, panic recovery, the call's log line), so its
// ack or error is the unary call's, whatever the transport. Only the
// transport's per-call work goes: a new HTTP/2 stream, its headers and
// trailers, and a handler goroutine (issue 15 measured that as nearly all
// of a unary write's round trip).
//
// Writes are applied in the order they arrive, by the goroutine that
// reads them, and acknowledged in that order. On a store that keeps
// nothing on disk that goroutine also sends each ack as soon as the write
// is applied. On a durable store an ack waits for the write's fsync: the
// reader goes on applying the writes that follow while a second goroutine
// waits for each write to be durable, in order, and sends its ack, so that
// a client's pipelined writes share fsyncs (group commit) rather than
// waiting for one each. At most maxUnackedWrites messages of writes are
// applied and not yet acknowledged; beyond that the reader stops reading,
// and gRPC's flow control holds the client back. Writes that arrive in one
// message are answered in one (or a few, when large).

// maxUnackedWrites bounds the messages of writes of one durable write
// stream that are applied but not yet acknowledged.
const maxUnackedWrites = 64

// settleKey carries a *settleSlot from the write stream to the set
// handlers: a handler that finds one applies its write with
// store.SetPipelined and leaves the wait for durability to the stream.
type settleKey struct{}

type settleSlot struct{ settle store.Settle }

// set applies writes as SetVariable(s) do: with store.Set, or pipelined
// when a durable write stream runs the handler.
func (s *Server) set(ctx context.Context, session string, writes []store.Write, md map[string]string, source string) (store.WriteResult, error) {
	if slot, ok := ctx.Value(settleKey{}).(*settleSlot); ok {
		res, settle, err := s.st.SetPipelined(session, writes, md, source)
		slot.settle = settle
		return res, err
	}
	return s.st.Set(session, writes, md, source)
}

// WriteVariables implements BridgeService.
func (s *Server) WriteVariables(stream grpc.BidiStreamingServer[pb.WriteVariablesRequest, pb.WriteVariablesResponse]) error {
	return s.serveWrites(stream.Context(), stream.Recv, stream.Send)
}

// Writes runs a WriteVariables stream that arrived by another transport:
// recv returns the next request (io.EOF when the client has closed its
// side), send sends acks. It returns nil when the client closed and every
// write was answered, or the status error the stream ends with.
func (s *Server) Writes(ctx context.Context, cred Credentials, recv func() (*pb.WriteVariablesRequest, error), send func(*pb.WriteVariablesResponse) error) error {
	return s.serveWrites(cred.Incoming(ctx), recv, send)
}

// writeCalls are the unary calls a write stream carries, each with the
// interceptors of its transport-free form (Server.Unary).
type writeCalls struct {
	set, setMany grpc.UnaryHandler
}

func (s *Server) newWriteCalls() writeCalls {
	in := s.unaryInterceptors()
	return writeCalls{
		set: chainUnary(in, &grpc.UnaryServerInfo{Server: s, FullMethod: pb.BridgeService_SetVariable_FullMethodName},
			func(ctx context.Context, req any) (any, error) {
				return s.SetVariable(ctx, req.(*pb.SetVariableRequest))
			}),
		setMany: chainUnary(in, &grpc.UnaryServerInfo{Server: s, FullMethod: pb.BridgeService_SetVariables_FullMethodName},
			func(ctx context.Context, req any) (any, error) {
				return s.SetVariables(ctx, req.(*pb.SetVariablesRequest))
			}),
	}
}

// apply runs one write and returns its ack (without settling it).
func (c writeCalls) apply(ctx context.Context, req *pb.WriteRequest) *pb.WriteResponse {
	ack := &pb.WriteResponse{Id: req.GetId()}
	var err error
	switch w := req.GetWrite().(type) {
	case *pb.WriteRequest_SetVariable:
		var resp any
		if resp, err = c.set(ctx, w.SetVariable); err == nil {
			ack.Result = &pb.WriteResponse_SetVariable{SetVariable: resp.(*pb.SetVariableResponse)}
		}
	case *pb.WriteRequest_SetVariables:
		var resp any
		if resp, err = c.setMany(ctx, w.SetVariables); err == nil {
			ack.Result = &pb.WriteResponse_SetVariables{SetVariables: resp.(*pb.SetVariablesResponse)}
		}
	default:
		err = invalidField("write", "is required: set_variable or set_variables")
	}
	if err != nil {
		ack.Result = &pb.WriteResponse_Error{Error: writeStatus(err)}
	}
	return ack
}

// writeStatus is err as the unary call would have failed with it.
func writeStatus(err error) *pb.WriteStatus {
	st := status.Convert(boundStatus(toStatus(err))).Proto()
	return &pb.WriteStatus{Code: st.GetCode(), Message: st.GetMessage(), Details: st.GetDetails()}
}

func (s *Server) serveWrites(ctx context.Context, recv func() (*pb.WriteVariablesRequest, error), send func(*pb.WriteVariablesResponse) error) error {
	calls := s.newWriteCalls()
	if !s.st.Durable() {
		for {
			req, err := recvWrites(recv)
			if err != nil {
				return endOfWrites(err)
			}
			acks := make([]*pb.WriteResponse, len(req.GetWrites()))
			for i, w := range req.GetWrites() {
				acks[i] = calls.apply(ctx, w)
			}
			if err := sendAcks(acks, send); err != nil {
				return err
			}
		}
	}
	type unacked struct {
		acks    []*pb.WriteResponse
		settles []store.Settle
	}
	queue := make(chan unacked, maxUnackedWrites)
	acked := make(chan error, 1)
	go func() { // the acker: owned by this call, which waits for it below
		var failed error
		for u := range queue {
			if failed != nil {
				continue // the stream is broken: drain, so that the reader never blocks
			}
			for i, settle := range u.settles {
				if settle == nil {
					continue
				}
				if err := settle(); err != nil {
					u.acks[i].Result = &pb.WriteResponse_Error{Error: writeStatus(err)}
				}
			}
			failed = sendAcks(u.acks, send)
		}
		acked <- failed
	}()
	var err error
	for {
		var req *pb.WriteVariablesRequest
		if req, err = recvWrites(recv); err != nil {
			break
		}
		u := unacked{acks: make([]*pb.WriteResponse, len(req.GetWrites())), settles: make([]store.Settle, len(req.GetWrites()))}
		for i, w := range req.GetWrites() {
			slot := &settleSlot{}
			u.acks[i] = calls.apply(context.WithValue(ctx, settleKey{}, slot), w)
			u.settles[i] = slot.settle
		}
		queue <- u
	}
	close(queue)
	if sendErr := <-acked; sendErr != nil {
		return sendErr
	}
	return endOfWrites(err)
}

// maxAckBytes keeps a message of acks well under the 4 MiB gRPC clients
// accept by default; a single larger ack still travels alone.
const maxAckBytes = 1 << 20

// sendAcks sends acks, in order, in messages of about maxAckBytes at most.
func sendAcks(acks []*pb.WriteResponse, send func(*pb.WriteVariablesResponse) error) error {
	for len(acks) > 0 {
		n, size := 0, 0
		for n < len(acks) {
			sz := acks[n].SizeVT()
			if n > 0 && size+sz > maxAckBytes {
				break
			}
			size += sz
			n++
		}
		if err := send(&pb.WriteVariablesResponse{Acks: acks[:n:n]}); err != nil {
			return err
		}
		acks = acks[n:]
	}
	return nil
}

// recvWrites reads the next writes, failing a message that did not decode
// as the first message of every stream fails (limitsStream).
func recvWrites(recv func() (*pb.WriteVariablesRequest, error)) (*pb.WriteVariablesRequest, error) {
	req, err := recv()
	if err != nil {
		return nil, err
	}
	if err := checkDecoded(req); err != nil {
		return nil, err
	}
	return req, nil
}

// endOfWrites is how a write stream ends when reading stops: cleanly when
// the client closed its side, with the status otherwise.
func endOfWrites(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return status.Error(codes.Canceled, "write stream cancelled by the client")
	}
	return toStatus(err)
}
