package server

import (
	"context"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// snapshotChunkBytes is the size of each SnapshotChunk: well under the
// default 4 MiB message limit of every client.
const snapshotChunkBytes = 256 << 10

// WithSnapshots lets SaveSnapshot write the server's data with save (the
// durable engine's Snapshot). Without it, SaveSnapshot fails: the server
// keeps nothing on disk.
func WithSnapshots(save func(w io.Writer) error) Option {
	return func(o *options) { o.snapshot = save }
}

// WithoutSnapshots says why SaveSnapshot has nothing to save, when the
// reason is not that the server keeps nothing on disk (its data is in
// etcd, which has snapshots of its own).
func WithoutSnapshots(why string) Option {
	return func(o *options) { o.noSnapshot = why }
}

// SaveSnapshot implements BridgeService.
func (s *Server) SaveSnapshot(_ *pb.SaveSnapshotRequest, stream grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	return s.StreamSnapshot(stream.Context(), stream.Send)
}

// StreamSnapshot checks the operator token in ctx and sends the snapshot
// in chunks, for every transport. It fails with a status error.
func (s *Server) StreamSnapshot(ctx context.Context, send func(*pb.SnapshotChunk) error) error {
	if err := s.authorizeOperator(ctx, "saving a snapshot"); err != nil {
		return err
	}
	if s.opts.snapshot == nil {
		why := s.opts.noSnapshot
		if why == "" {
			why = "this server keeps nothing on disk (serve --memory), so there is nothing to snapshot"
		}
		return statusError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_NO_DATA_DIR, why, nil)
	}
	w := &chunkWriter{ctx: ctx, send: send, buf: make([]byte, 0, snapshotChunkBytes)}
	if err := s.opts.snapshot(w); err != nil {
		if w.err != nil {
			return w.err
		}
		return toStatus(err)
	}
	if err := w.flush(); err != nil {
		return err
	}
	s.opts.log.Info("snapshot saved", "bytes", w.total)
	return nil
}

// chunkWriter turns the archive into chunks of snapshotChunkBytes.
type chunkWriter struct {
	ctx   context.Context
	send  func(*pb.SnapshotChunk) error
	buf   []byte
	total int64
	err   error // the send's, which ends the snapshot
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.ctx.Err(); err != nil {
		w.err = toStatus(err)
		return w.err
	}
	// The chunk owns its bytes: a transport may hold the message after Send.
	if err := w.send(&pb.SnapshotChunk{Data: append([]byte(nil), w.buf...)}); err != nil {
		w.err = err
		return err
	}
	w.total += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}
