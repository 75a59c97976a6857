package server

import (
	"context"
	"fmt"
	"sort"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/codec"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Request limits the server checks before a request reaches the store. The
// store checks its own (sessions, variables, watches, identifiers per watch,
// value size); both fail with a status whose message names the limit.
const (
	// DefaultMaxRecvMsgBytes is the largest request message accepted; it
	// leaves room for a value of store.DefaultMaxValueBytes and its envelope.
	// A larger message fails with RESOURCE_EXHAUSTED from gRPC itself.
	DefaultMaxRecvMsgBytes = 8 << 20
	// DefaultMaxMetadataEntries bounds every metadata map in a request.
	DefaultMaxMetadataEntries = 64
	// DefaultMaxMetadataKeyBytes bounds each metadata key.
	DefaultMaxMetadataKeyBytes = 256
	// DefaultMaxMetadataValueBytes bounds each metadata value.
	DefaultMaxMetadataValueBytes = 4096
	// MaxIdentifierBytes bounds session ids and variable identifiers; the
	// store accepts no longer session id or variable name.
	MaxIdentifierBytes = 256
	// maxStatusMessageBytes bounds the message of an error status, which
	// travels in HTTP/2 trailers (grpcio clients refuse trailers past 8 KiB).
	maxStatusMessageBytes = 2048
)

// RequestLimits bound the parts of a request the store does not check.
// Zero fields take the defaults above.
type RequestLimits struct {
	MaxRecvMsgBytes       int // the whole request message (grpc.MaxRecvMsgSize)
	MaxMetadataEntries    int // entries in one metadata map
	MaxMetadataKeyBytes   int // bytes in one metadata key
	MaxMetadataValueBytes int // bytes in one metadata value
}

func (l *RequestLimits) withDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&l.MaxRecvMsgBytes, DefaultMaxRecvMsgBytes)
	def(&l.MaxMetadataEntries, DefaultMaxMetadataEntries)
	def(&l.MaxMetadataKeyBytes, DefaultMaxMetadataKeyBytes)
	def(&l.MaxMetadataValueBytes, DefaultMaxMetadataValueBytes)
}

// WithRequestLimits sets the request limits (zero fields keep the defaults).
func WithRequestLimits(l RequestLimits) Option { return func(o *options) { o.limits = l } }

type (
	withMetadata    interface{ GetMetadata() map[string]string }
	withIdentifier  interface{ GetVariableIdentifier() string }
	withIdentifiers interface{ GetVariableIdentifiers() []string }
	withUpdates     interface{ GetUpdates() map[string]*pb.Value }
)

// checkRequest applies the request limits to any request message.
func (s *Server) checkRequest(req any) error {
	if r, ok := req.(sessionScoped); ok {
		if err := checkIdent("session_id", r.GetSessionId()); err != nil {
			return err
		}
	}
	if r, ok := req.(withIdentifier); ok {
		if err := checkIdent("variable_identifier", r.GetVariableIdentifier()); err != nil {
			return err
		}
	}
	if r, ok := req.(withIdentifiers); ok {
		for _, id := range r.GetVariableIdentifiers() {
			if err := checkIdent("variable_identifiers", id); err != nil {
				return err
			}
		}
	}
	if r, ok := req.(withUpdates); ok {
		for id := range r.GetUpdates() {
			if err := checkIdent("updates", id); err != nil {
				return err
			}
		}
	}
	if r, ok := req.(withMetadata); ok {
		return checkMetadata(&s.opts.limits, r.GetMetadata())
	}
	return nil
}

func checkIdent(field, s string) error {
	if len(s) > MaxIdentifierBytes {
		return &store.FieldError{Field: field, Reason: fmt.Sprintf("is %d bytes long; the limit is %d", len(s), MaxIdentifierBytes)}
	}
	return nil
}

// checkMetadata bounds a metadata map. When several entries break a limit,
// the one with the smallest key is reported, so the error is stable.
func checkMetadata(l *RequestLimits, md map[string]string) error {
	if len(md) > l.MaxMetadataEntries {
		return &store.LimitError{Limit: "max_metadata_entries", Max: int64(l.MaxMetadataEntries), What: fmt.Sprintf("metadata has %d entries", len(md))}
	}
	var bad []string
	for k, v := range md {
		if len(k) > l.MaxMetadataKeyBytes || len(v) > l.MaxMetadataValueBytes {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	k := bad[0]
	if len(k) > l.MaxMetadataKeyBytes {
		return &store.LimitError{Limit: "max_metadata_key_bytes", Max: int64(l.MaxMetadataKeyBytes), What: fmt.Sprintf("metadata key %s is %d bytes", abbreviate(k, 32), len(k))}
	}
	return &store.LimitError{Limit: "max_metadata_value_bytes", Max: int64(l.MaxMetadataValueBytes), What: fmt.Sprintf("metadata[%s] is %d bytes", abbreviate(k, 32), len(md[k]))}
}

// abbreviate quotes s, cut to about n bytes.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return fmt.Sprintf("%q", s)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...", s[:cut])
}

func (s *Server) limitsUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isBridge(info.FullMethod) {
		if err := checkDecoded(req); err != nil {
			return nil, err
		}
		if err := s.checkRequest(req); err != nil {
			return nil, toStatus(err)
		}
	}
	resp, err := handler(ctx, req)
	return resp, boundStatus(err)
}

// limitsStream checks a stream's first request and bounds its final status.
type limitsStream struct {
	grpc.ServerStream
	s       *Server
	checked bool
}

func (l *limitsStream) RecvMsg(m any) error {
	if err := l.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !l.checked {
		l.checked = true
		if err := checkDecoded(m); err != nil {
			return err
		}
		if err := l.s.checkRequest(m); err != nil {
			return toStatus(err)
		}
	}
	return nil
}

func (s *Server) limitsStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isBridge(info.FullMethod) {
		return handler(srv, ss)
	}
	return boundStatus(handler(srv, &limitsStream{ServerStream: ss, s: s}))
}

// boundStatus shortens an error status whose message would not fit in the
// trailers every client accepts (an identifier list echoed back, say). The
// details, which repeat the message, are dropped then.
func boundStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || len(st.Message()) <= maxStatusMessageBytes {
		return err
	}
	msg := st.Message()
	cut := maxStatusMessageBytes - 64
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return status.Errorf(st.Code(), "%s... (message cut; %d bytes in all)", msg[:cut], len(msg))
}

// checkDecoded fails a request that did not decode (truncated bytes, a
// string that is not UTF-8) with INVALID_ARGUMENT, the client's fault,
// where grpc-go itself would say INTERNAL; see codec.DecodeError.
func checkDecoded(req any) error {
	if err := codec.DecodeError(req); err != nil {
		return invalidField("request", "the message does not decode: %v", err)
	}
	return nil
}
