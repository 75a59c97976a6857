// Package codec holds the gRPC codecs varbridge uses in place of grpc-go's
// default protobuf codec: they marshal and unmarshal the varbridge messages
// with the reflection-free methods protoc-gen-go-vtproto generates (3.9x
// faster marshal and 1.8x faster unmarshal of a batch of updates than
// protobuf-go's reflective code on this project's benchmark machine) and
// fall back to protobuf-go for every other message (health, reflection).
//
// The wire format is protobuf either way and the codec name stays "proto",
// so peers see no difference.
package codec

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	gproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// The generated messages must have the fast methods: if the plugin were
// left out of scripts/genproto.sh, every message would take the fallback
// without anyone noticing. (The tests check every varbridge.v1 message.)
var _ vtMessage = (*pb.VariableUpdateBatch)(nil)

// std is grpc-go's own protobuf codec, for every message without the fast
// methods.
var std = encoding.GetCodecV2(gproto.Name)

// vtMessage is what protoc-gen-go-vtproto adds to a generated message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
	UnmarshalVT(dAtA []byte) error
}

// Server is the codec for the varbridge server: fast marshalling of what it
// sends, and protobuf-go for what it receives, because protobuf-go rejects a
// string field that is not valid UTF-8 (as proto3 requires) and the
// generated UnmarshalVT does not; a bad string stored and sent on would
// break every Python watcher of it.
var Server encoding.CodecV2 = codec{checked: true}

// Client is the codec for a Go client of a varbridge server: fast both ways.
// It trusts the server to send valid UTF-8 (the server's own codec checked
// every string it stored).
var Client encoding.CodecV2 = codec{}

type codec struct {
	checked bool // unmarshal with protobuf-go
}

// Name is the default codec's name, so nothing on the wire changes.
func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return std.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return std.Unmarshal(data, v)
	}
	if c.checked {
		if err := std.Unmarshal(data, v); err != nil {
			markUndecodable(v, err)
		}
		return nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	// UnmarshalVT copies every string and bytes field out of buf, so the
	// buffer can go back to the pool.
	if err := m.UnmarshalVT(buf.ReadOnlyData()); err != nil {
		return fmt.Errorf("unmarshal %T: %w", v, err)
	}
	return nil
}

// A request that does not decode is the client's fault, but grpc-go turns
// every codec error into INTERNAL before any interceptor can see it. So the
// server codec lets such a varbridge request through empty, carrying the
// decode error as an unknown field of its own, and the server's first
// request check (DecodeError) fails the call with INVALID_ARGUMENT. The
// message carries its own error: nothing is kept aside to leak.

// undecodableField is the field number of the mark: the largest a field may
// have, which no varbridge message uses.
const undecodableField = protowire.MaxValidNumber

func markUndecodable(v any, err error) {
	m, ok := v.(proto.Message)
	if !ok {
		return
	}
	proto.Reset(m)
	b := protowire.AppendTag(nil, undecodableField, protowire.BytesType)
	b = protowire.AppendString(b, err.Error())
	m.ProtoReflect().SetUnknown(b)
}

// DecodeError returns why the server codec could not decode v, or nil.
func DecodeError(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	b := m.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == undecodableField && typ == protowire.BytesType {
			msg, n := protowire.ConsumeString(b)
			if n < 0 {
				return nil
			}
			return errors.New(msg)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}
