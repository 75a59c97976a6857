package server_test

// The bad input table: every RPC with missing, empty, oversized, wrong-type,
// unknown-session and unknown-variable inputs, the status code each gets, the
// words its message must contain to name the problem, and a check that
// nothing was half-applied (sessions, the session revision and every
// variable unchanged, no watch left registered). This is the one place that
// lists them all.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Limits of the table's server.
const (
	biMaxValueBytes  = 256
	biMaxWatchIdents = 4
	biMaxMDEntries   = 4
	biMaxRecvBytes   = 64 << 10
)

type biCase struct {
	rpc   string
	input string // what is wrong
	call  func(ctx context.Context, c pb.BridgeServiceClient) error
	code  codes.Code
	words []string // the message must contain each
}

var (
	biInt   = func(n int64) *pb.Value { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }
	biFloat = func(f float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}} }
	biStr   = func(s string) *pb.Value { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }
	biBool  = func(b bool) *pb.Value { return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: b}} }
	biEmb   = func(xs ...float64) *pb.Value {
		return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: xs}}}
	}
	biTensor = func(dtype string, shape []int64, n int) *pb.Value {
		return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Dtype: dtype, Shape: shape, Data: make([]byte, n)}}}
	}
	biLong     = strings.Repeat("L", server.MaxIdentifierBytes+44) // 300 bytes
	biBigValue = biStr(strings.Repeat("x", biMaxValueBytes+1))
	biHugeMsg  = biStr(strings.Repeat("h", biMaxRecvBytes+1))
	biManyMD   = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
	biLongKey  = map[string]string{strings.Repeat("k", server.DefaultMaxMetadataKeyBytes+1): "v"}
	biLongVal  = map[string]string{"k": strings.Repeat("v", server.DefaultMaxMetadataValueBytes+1)}
	biTypeInt  = pb.VariableType_VARIABLE_TYPE_INTEGER
)

// The variables of session "s" before every case.
var biVars = []*pb.RegisterVariableRequest{
	{Name: "i", Type: biTypeInt, InitialValue: biInt(5), Constraints: &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(100)}},
	{Name: "f", Type: pb.VariableType_VARIABLE_TYPE_FLOAT, InitialValue: biFloat(0.5)},
	{Name: "str", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: biStr("abc"), Constraints: &pb.Constraints{MaxLength: proto.Int64(8), Pattern: proto.String("^[a-z]*$")}},
	{Name: "b", Type: pb.VariableType_VARIABLE_TYPE_BOOLEAN, InitialValue: biBool(true)},
	{Name: "ch", Type: pb.VariableType_VARIABLE_TYPE_CHOICE, InitialValue: biStr("a"), Constraints: &pb.Constraints{Choices: []string{"a", "b"}}},
	{Name: "mod", Type: pb.VariableType_VARIABLE_TYPE_MODULE, InitialValue: biStr("m1"), Constraints: &pb.Constraints{AllowedModules: []string{"m1", "m2"}}},
	{Name: "emb", Type: pb.VariableType_VARIABLE_TYPE_EMBEDDING, InitialValue: biEmb(1, 2, 3), Constraints: &pb.Constraints{Dimensions: proto.Int64(3)}},
	{Name: "ten", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("float32", []int64{2}, 8), Constraints: &pb.Constraints{Shape: []int64{2}, Dtype: proto.String("float32")}},
}

// biSessionRPCs are the session-only RPCs; each gets the same session rows.
func biSessionRows() []biCase {
	type call func(ctx context.Context, c pb.BridgeServiceClient, id string) error
	rpcs := []struct {
		name string
		call call
	}{
		{"GetSession", func(ctx context.Context, c pb.BridgeServiceClient, id string) error {
			_, err := c.GetSession(ctx, &pb.GetSessionRequest{SessionId: id})
			return err
		}},
		{"Heartbeat", func(ctx context.Context, c pb.BridgeServiceClient, id string) error {
			_, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{SessionId: id})
			return err
		}},
		{"CleanupSession", func(ctx context.Context, c pb.BridgeServiceClient, id string) error {
			_, err := c.CleanupSession(ctx, &pb.CleanupSessionRequest{SessionId: id})
			return err
		}},
		{"ListVariables", func(ctx context.Context, c pb.BridgeServiceClient, id string) error {
			_, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: id})
			return err
		}},
		{"ListWatches", func(ctx context.Context, c pb.BridgeServiceClient, id string) error {
			_, err := c.ListWatches(ctx, &pb.ListWatchesRequest{SessionId: id})
			return err
		}},
	}
	var rows []biCase
	for _, r := range rpcs {
		r := r
		rows = append(rows,
			biCase{r.name, "missing session_id", func(ctx context.Context, c pb.BridgeServiceClient) error { return r.call(ctx, c, "") },
				codes.InvalidArgument, []string{"session_id", "is required"}},
			biCase{r.name, "unknown session", func(ctx context.Context, c pb.BridgeServiceClient) error { return r.call(ctx, c, "nope") },
				codes.NotFound, []string{"session not found", `"nope"`}},
			biCase{r.name, "oversized session_id", func(ctx context.Context, c pb.BridgeServiceClient) error { return r.call(ctx, c, biLong) },
				codes.InvalidArgument, []string{"session_id", "300 bytes", "256"}},
		)
	}
	return rows
}

func biRows() []biCase {
	type C = pb.BridgeServiceClient
	type X = context.Context
	initS := func(req *pb.InitializeSessionRequest) func(X, C) error {
		return func(ctx X, c C) error { _, err := c.InitializeSession(ctx, req); return err }
	}
	reg := func(req *pb.RegisterVariableRequest) func(X, C) error {
		return func(ctx X, c C) error {
			if req.SessionId == "" {
				req.SessionId = "s"
			} else if req.SessionId == "-" {
				req.SessionId = ""
			}
			_, err := c.RegisterVariable(ctx, req)
			return err
		}
	}
	get := func(sess, ident string) func(X, C) error {
		return func(ctx X, c C) error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: sess, VariableIdentifier: ident})
			return err
		}
	}
	getMany := func(sess string, idents ...string) func(X, C) error {
		return func(ctx X, c C) error {
			_, err := c.GetVariables(ctx, &pb.GetVariablesRequest{SessionId: sess, VariableIdentifiers: idents})
			return err
		}
	}
	set := func(req *pb.SetVariableRequest) func(X, C) error {
		return func(ctx X, c C) error { _, err := c.SetVariable(ctx, req); return err }
	}
	setMany := func(req *pb.SetVariablesRequest) func(X, C) error {
		return func(ctx X, c C) error { _, err := c.SetVariables(ctx, req); return err }
	}
	list := func(sess, pattern string) func(X, C) error {
		return func(ctx X, c C) error {
			_, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: sess, Pattern: pattern})
			return err
		}
	}
	del := func(req *pb.DeleteVariableRequest) func(X, C) error {
		return func(ctx X, c C) error { _, err := c.DeleteVariable(ctx, req); return err }
	}
	ty := func(t int32) pb.VariableType { return pb.VariableType(t) }
	ups := func(kv ...any) map[string]*pb.Value {
		m := map[string]*pb.Value{}
		for i := 0; i < len(kv); i += 2 {
			v, _ := kv[i+1].(*pb.Value)
			m[kv[i].(string)] = v
		}
		return m
	}
	IA, NF, RE, AE, FP := codes.InvalidArgument, codes.NotFound, codes.ResourceExhausted, codes.AlreadyExists, codes.FailedPrecondition

	rows := []biCase{
		// InitializeSession: an empty id is valid (the server makes one).
		{"InitializeSession", "oversized session_id", initS(&pb.InitializeSessionRequest{SessionId: biLong}), IA, []string{"session_id", "300 bytes"}},
		{"InitializeSession", "control character in session_id", initS(&pb.InitializeSessionRequest{SessionId: "a\nb"}), IA, []string{"session_id", "control character"}},
		{"InitializeSession", "negative ttl", initS(&pb.InitializeSessionRequest{SessionId: "new", Ttl: durationpb.New(-time.Second)}), IA, []string{"ttl", "negative"}},
		{"InitializeSession", "too many metadata entries", initS(&pb.InitializeSessionRequest{SessionId: "new", Metadata: biManyMD}), RE, []string{"metadata has 5 entries", "max_metadata_entries"}},
		{"InitializeSession", "oversized metadata key", initS(&pb.InitializeSessionRequest{SessionId: "new", Metadata: biLongKey}), RE, []string{"metadata key", "max_metadata_key_bytes"}},
		{"InitializeSession", "oversized metadata value", initS(&pb.InitializeSessionRequest{SessionId: "new", Metadata: biLongVal}), RE, []string{`metadata["k"]`, "max_metadata_value_bytes"}},
		{"InitializeSession", "oversized message", initS(&pb.InitializeSessionRequest{SessionId: "new", Metadata: map[string]string{"k": strings.Repeat("m", biMaxRecvBytes)}}), RE, []string{"larger than max", fmt.Sprint(biMaxRecvBytes)}},

		// RegisterVariable
		{"RegisterVariable", "missing session_id", reg(&pb.RegisterVariableRequest{SessionId: "-", Name: "n", Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"session_id", "is required"}},
		{"RegisterVariable", "unknown session", reg(&pb.RegisterVariableRequest{SessionId: "nope", Name: "n", Type: biTypeInt, InitialValue: biInt(1)}), NF, []string{"session not found", `"nope"`}},
		{"RegisterVariable", "oversized session_id", reg(&pb.RegisterVariableRequest{SessionId: biLong, Name: "n", Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"session_id", "300 bytes"}},
		{"RegisterVariable", "missing name", reg(&pb.RegisterVariableRequest{Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"name", "is required"}},
		{"RegisterVariable", "oversized name", reg(&pb.RegisterVariableRequest{Name: biLong, Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"name", "300 bytes", "256"}},
		{"RegisterVariable", "control character in name", reg(&pb.RegisterVariableRequest{Name: "a\x00b", Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"name", "control character"}},
		{"RegisterVariable", "name shaped like an id", reg(&pb.RegisterVariableRequest{Name: "var_0123456789abcdef", Type: biTypeInt, InitialValue: biInt(1)}), IA, []string{"name", "form of a variable id"}},
		{"RegisterVariable", "name taken", reg(&pb.RegisterVariableRequest{Name: "i", Type: biTypeInt, InitialValue: biInt(1)}), AE, []string{`already has a variable named "i"`}},
		{"RegisterVariable", "missing type", reg(&pb.RegisterVariableRequest{Name: "n", InitialValue: biInt(1)}), IA, []string{"type", "must be one of"}},
		{"RegisterVariable", "unknown type", reg(&pb.RegisterVariableRequest{Name: "n", Type: ty(99), InitialValue: biInt(1)}), IA, []string{"type", "99"}},
		{"RegisterVariable", "missing initial_value", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt}), IA, []string{"initial_value", "is required", `"n"`}},
		{"RegisterVariable", "empty initial_value", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: &pb.Value{}}), IA, []string{"initial_value", "is required"}},
		{"RegisterVariable", "wrong-type value (string for integer)", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biStr("1")}), IA, []string{`"n"`, "integer", "string_value"}},
		{"RegisterVariable", "wrong-type value (int for boolean)", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_BOOLEAN, InitialValue: biInt(1)}), IA, []string{`"n"`, "boolean", "int_value"}},
		{"RegisterVariable", "empty tensor", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: &pb.Value{Kind: &pb.Value_TensorValue{}}}), IA, []string{"tensor_value.dtype", `unknown dtype ""`}},
		{"RegisterVariable", "tensor data of the wrong length", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("float32", []int64{2, 2}, 15)}), IA, []string{"tensor_value.data", "15 bytes", "needs 16"}},
		{"RegisterVariable", "tensor of unknown dtype", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("complex256", []int64{1}, 32)}), IA, []string{"dtype", "complex256"}},
		{"RegisterVariable", "tensor whose size overflows 64 bits", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("float64", []int64{1 << 31, 1 << 31}, 8)}), IA, []string{"tensor_value.data", "needs more than 9223372036854775807"}},
		{"RegisterVariable", "tensor with negative axis", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("int8", []int64{-1}, 0)}), IA, []string{"shape", "negative"}},
		{"RegisterVariable", "constraint of another type", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biInt(1), Constraints: &pb.Constraints{Pattern: proto.String("x")}}), IA, []string{"constraints.pattern", "does not apply to an integer variable"}},
		{"RegisterVariable", "min above max", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biInt(1), Constraints: &pb.Constraints{Min: proto.Float64(5), Max: proto.Float64(1)}}), IA, []string{"min 5 is greater than max 1"}},
		{"RegisterVariable", "NaN bound", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biInt(1), Constraints: &pb.Constraints{Min: proto.Float64(nan())}}), IA, []string{"NaN"}},
		{"RegisterVariable", "negative max_length", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: biStr(""), Constraints: &pb.Constraints{MaxLength: proto.Int64(-1)}}), IA, []string{"max_length", "negative"}},
		{"RegisterVariable", "pattern that does not compile", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: biStr(""), Constraints: &pb.Constraints{Pattern: proto.String("(")}}), IA, []string{"constraints.pattern", "missing closing )"}},
		{"RegisterVariable", "choice without choices", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_CHOICE, InitialValue: biStr("a")}), IA, []string{"constraints.choices", "at least one"}},
		{"RegisterVariable", "zero dimensions", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_EMBEDDING, InitialValue: biEmb(), Constraints: &pb.Constraints{Dimensions: proto.Int64(0)}}), IA, []string{"dimensions", "positive"}},
		{"RegisterVariable", "unknown constraint dtype", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_TENSOR, InitialValue: biTensor("int8", []int64{1}, 1), Constraints: &pb.Constraints{Dtype: proto.String("int7")}}), IA, []string{"constraints.dtype", "int7"}},
		{"RegisterVariable", "initial value below min", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biInt(-1), Constraints: &pb.Constraints{Min: proto.Float64(0)}}), IA, []string{`variable "n"`, "value -1", "constraint min"}},
		{"RegisterVariable", "initial value not a choice", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_CHOICE, InitialValue: biStr("z"), Constraints: &pb.Constraints{Choices: []string{"a"}}}), IA, []string{`variable "n"`, `"z"`, "constraint choices"}},
		{"RegisterVariable", "embedding of the wrong dimensions", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_EMBEDDING, InitialValue: biEmb(1), Constraints: &pb.Constraints{Dimensions: proto.Int64(2)}}), IA, []string{`variable "n"`, "constraint dimensions"}},
		{"RegisterVariable", "oversized value", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: biBigValue}), RE, []string{`value for "n"`, "max_value_bytes"}},
		{"RegisterVariable", "too many metadata entries", reg(&pb.RegisterVariableRequest{Name: "n", Type: biTypeInt, InitialValue: biInt(1), Metadata: biManyMD}), RE, []string{"max_metadata_entries"}},
		{"RegisterVariable", "oversized message", reg(&pb.RegisterVariableRequest{Name: "n", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: biHugeMsg}), RE, []string{"larger than max"}},

		// GetVariable
		{"GetVariable", "missing session_id", get("", "i"), IA, []string{"session_id", "is required"}},
		{"GetVariable", "unknown session", get("nope", "i"), NF, []string{"session not found", `"nope"`}},
		{"GetVariable", "missing variable_identifier", get("s", ""), IA, []string{"variable_identifier", "is required"}},
		{"GetVariable", "unknown variable", get("s", "nope"), NF, []string{`session "s" has no variable "nope"`}},
		{"GetVariable", "unknown variable id", get("s", "var_0000000000000000"), NF, []string{`"var_0000000000000000"`}},
		{"GetVariable", "oversized variable_identifier", get("s", biLong), IA, []string{"variable_identifier", "300 bytes"}},

		// GetVariables: unknown identifiers are reported in missing, not as an error.
		{"GetVariables", "missing session_id", getMany("", "i"), IA, []string{"session_id", "is required"}},
		{"GetVariables", "unknown session", getMany("nope", "i"), NF, []string{"session not found", `"nope"`}},
		{"GetVariables", "empty variable_identifiers", getMany("s"), IA, []string{"variable_identifiers", "is empty"}},
		{"GetVariables", "oversized identifier", getMany("s", "i", biLong), IA, []string{"variable_identifiers", "300 bytes"}},

		// SetVariable
		{"SetVariable", "missing session_id", set(&pb.SetVariableRequest{VariableIdentifier: "i", Value: biInt(6)}), IA, []string{"session_id", "is required"}},
		{"SetVariable", "unknown session", set(&pb.SetVariableRequest{SessionId: "nope", VariableIdentifier: "i", Value: biInt(6)}), NF, []string{"session not found", `"nope"`}},
		{"SetVariable", "missing variable_identifier", set(&pb.SetVariableRequest{SessionId: "s", Value: biInt(6)}), IA, []string{"variable_identifier", "is required"}},
		{"SetVariable", "unknown variable", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "nope", Value: biInt(6)}), NF, []string{`session "s" has no variable "nope"`}},
		{"SetVariable", "oversized variable_identifier", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: biLong, Value: biInt(6)}), IA, []string{"variable_identifier", "300 bytes"}},
		{"SetVariable", "missing value", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i"}), IA, []string{"value", "is required", `"i"`}},
		{"SetVariable", "empty value", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: &pb.Value{}}), IA, []string{"value", "is required"}},
		{"SetVariable", "wrong-type value (float for integer)", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biFloat(6)}), IA, []string{`"i"`, "integer", "float_value"}},
		{"SetVariable", "wrong-type value (string for embedding)", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "emb", Value: biStr("x")}), IA, []string{`"emb"`, "embedding", "string_value"}},
		{"SetVariable", "above max", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(101)}), IA, []string{`variable "i"`, "value 101", "constraint max"}},
		{"SetVariable", "string too long", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biStr("abcdefghi")}), IA, []string{`variable "str"`, "constraint max_length"}},
		{"SetVariable", "string off pattern", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biStr("ABC")}), IA, []string{`variable "str"`, `"ABC"`, "constraint pattern"}},
		{"SetVariable", "not a choice", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "ch", Value: biStr("c")}), IA, []string{`variable "ch"`, "constraint choices"}},
		{"SetVariable", "module not allowed", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "mod", Value: biStr("m3")}), IA, []string{`variable "mod"`, "constraint allowed_modules"}},
		{"SetVariable", "embedding of the wrong dimensions", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "emb", Value: biEmb(1, 2)}), IA, []string{`variable "emb"`, "constraint dimensions"}},
		{"SetVariable", "tensor of the wrong shape", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "ten", Value: biTensor("float32", []int64{3}, 12)}), IA, []string{`variable "ten"`, "constraint shape"}},
		{"SetVariable", "tensor of the wrong dtype", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "ten", Value: biTensor("int32", []int64{2}, 8)}), IA, []string{`variable "ten"`, "constraint dtype"}},
		{"SetVariable", "stale expected_version", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(6), ExpectedVersion: proto.Int64(7)}), FP, []string{`variable "i"`, "version 1", "expected 7"}},
		{"SetVariable", "oversized value", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biBigValue}), RE, []string{`value for "str"`, "max_value_bytes"}},
		{"SetVariable", "oversized metadata key", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(6), Metadata: biLongKey}), RE, []string{"max_metadata_key_bytes"}},
		{"SetVariable", "oversized metadata value", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(6), Metadata: biLongVal}), RE, []string{"max_metadata_value_bytes"}},
		{"SetVariable", "oversized message", set(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biHugeMsg}), RE, []string{"larger than max"}},

		// SetVariables: one bad update fails the whole batch.
		{"SetVariables", "missing session_id", setMany(&pb.SetVariablesRequest{Updates: ups("i", biInt(6))}), IA, []string{"session_id", "is required"}},
		{"SetVariables", "unknown session", setMany(&pb.SetVariablesRequest{SessionId: "nope", Updates: ups("i", biInt(6))}), NF, []string{"session not found", `"nope"`}},
		{"SetVariables", "empty updates", setMany(&pb.SetVariablesRequest{SessionId: "s"}), IA, []string{"updates", "is empty"}},
		{"SetVariables", "empty identifier", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("", biInt(6))}), IA, []string{"variable_identifier", "is required"}},
		{"SetVariables", "oversized identifier", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups(biLong, biInt(6))}), IA, []string{"updates", "300 bytes"}},
		{"SetVariables", "unknown variables beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6), "nope1", biInt(1), "nope2", biInt(2))}), NF, []string{`session "s" has no variable`, `"nope1"`, `"nope2"`}},
		{"SetVariables", "missing value beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6), "f", nil)}), IA, []string{"value", "is required", `"f"`}},
		{"SetVariables", "wrong-type value beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6), "b", biStr("yes"))}), IA, []string{`"b"`, "boolean", "string_value"}},
		{"SetVariables", "constraint violation beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("f", biFloat(1.5), "i", biInt(-5))}), IA, []string{`variable "i"`, "constraint min"}},
		{"SetVariables", "one variable named twice (by name and id)", nil, IA, []string{"name the same variable"}}, // call filled in below: needs i's id
		{"SetVariables", "expected_versions for an identifier not in updates", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6)), ExpectedVersions: map[string]int64{"f": 1}}), IA, []string{"expected_versions", `"f"`, "not in updates"}},
		{"SetVariables", "stale expected_version beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6), "f", biFloat(2)), ExpectedVersions: map[string]int64{"f": 9}}), FP, []string{`variable "f"`, "expected 9"}},
		{"SetVariables", "oversized value beside a good one", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6), "str", biBigValue)}), RE, []string{`value for "str"`, "max_value_bytes"}},
		{"SetVariables", "too many metadata entries", setMany(&pb.SetVariablesRequest{SessionId: "s", Updates: ups("i", biInt(6)), Metadata: biManyMD}), RE, []string{"max_metadata_entries"}},

		// ListVariables (session rows are below)
		{"ListVariables", "pattern that is not a glob", list("s", "["), IA, []string{"pattern", `"["`}},

		// DeleteVariable
		{"DeleteVariable", "missing session_id", del(&pb.DeleteVariableRequest{VariableIdentifier: "i"}), IA, []string{"session_id", "is required"}},
		{"DeleteVariable", "unknown session", del(&pb.DeleteVariableRequest{SessionId: "nope", VariableIdentifier: "i"}), NF, []string{"session not found", `"nope"`}},
		{"DeleteVariable", "missing variable_identifier", del(&pb.DeleteVariableRequest{SessionId: "s"}), IA, []string{"variable_identifier", "is required"}},
		{"DeleteVariable", "unknown variable", del(&pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "nope"}), NF, []string{`session "s" has no variable "nope"`}},
		{"DeleteVariable", "oversized variable_identifier", del(&pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: biLong}), IA, []string{"variable_identifier", "300 bytes"}},
		{"DeleteVariable", "too many metadata entries", del(&pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "i", Metadata: biManyMD}), RE, []string{"max_metadata_entries"}},
	}
	rows = append(rows, biSessionRows()...)
	rows = append(rows, biCase{"ListSessions", "bad glob", func(ctx X, c C) error {
		_, err := c.ListSessions(ctx, &pb.ListSessionsRequest{Pattern: "[a-"})
		return err
	}, IA, []string{"pattern", "not a valid glob"}})
	rows = append(rows, biCase{"SaveSnapshot", "server without a data directory", func(ctx X, c C) error {
		s, err := c.SaveSnapshot(ctx, &pb.SaveSnapshotRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}, FP, []string{"keeps nothing on disk", "--memory"}})

	// The watch RPCs take the same request and fail the same way (Watch
	// ends the one watch with the status the others end their stream with).
	for _, rpc := range []string{"WatchVariables", "WatchVariableBatches", "Watch"} {
		watch := func(req *pb.WatchVariablesRequest) func(X, C) error {
			return func(ctx X, c C) error { return biWatchErr(ctx, c, req, rpc) }
		}
		manyIdents := []string{"i", "f", "str", "b", "ch"}
		rows = append(rows, []biCase{
			{rpc, "missing session_id", watch(&pb.WatchVariablesRequest{}), IA, []string{"session_id", "is required"}},
			{rpc, "unknown session", watch(&pb.WatchVariablesRequest{SessionId: "nope"}), NF, []string{"session not found", `"nope"`}},
			{rpc, "oversized session_id", watch(&pb.WatchVariablesRequest{SessionId: biLong}), IA, []string{"session_id", "300 bytes"}},
			{rpc, "unknown variables (all listed)", watch(&pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"i", "nope1", "nope2"}}), NF, []string{`session "s" has no variable`, `"nope1"`, `"nope2"`}},
			{rpc, "empty identifier", watch(&pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{""}}), NF, []string{`has no variable ""`}},
			{rpc, "oversized identifier", watch(&pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: []string{biLong}}), IA, []string{"variable_identifiers", "300 bytes"}},
			{rpc, "too many identifiers", watch(&pb.WatchVariablesRequest{SessionId: "s", VariableIdentifiers: manyIdents}), RE, []string{"names 5 variables", "max_watch_identifiers"}},
			{rpc, "negative start_revision", watch(&pb.WatchVariablesRequest{SessionId: "s", StartRevision: -1}), IA, []string{"start_revision", "negative"}},
			{rpc, "start_revision ahead of the session", watch(&pb.WatchVariablesRequest{SessionId: "s", StartRevision: 1000}), codes.OutOfRange, []string{"start_revision 1000", "revision 8 + 1"}},
			{rpc, "negative heartbeat_interval_ms", watch(&pb.WatchVariablesRequest{SessionId: "s", HeartbeatIntervalMs: -5}), IA, []string{"heartbeat_interval_ms", "negative"}},
			{rpc, "where that does not parse", watch(&pb.WatchVariablesRequest{SessionId: "s", Where: "new >"}), IA, []string{"where", "invalid where expression"}},
			{rpc, "where of the wrong type", watch(&pb.WatchVariablesRequest{SessionId: "s", Where: `name + "x"`}), IA, []string{"where", "not bool"}},
			{rpc, "where naming an unknown variable", watch(&pb.WatchVariablesRequest{SessionId: "s", Where: "value > 1"}), IA, []string{"where", "undeclared reference", "value"}},
			{rpc, "oversized where", watch(&pb.WatchVariablesRequest{SessionId: "s", Where: strings.Repeat("true && ", 600) + "true"}), IA, []string{"where", "the limit is 4096"}},
			{rpc, "oversized message", watch(&pb.WatchVariablesRequest{SessionId: "s", Where: strings.Repeat(" ", biMaxRecvBytes)}), RE, []string{"larger than max"}},
		}...)
	}

	// WriteVariables: each write fails as its unary call does, in its ack;
	// a message over the size limit ends the stream.
	write := func(req *pb.WriteRequest) func(X, C) error {
		return func(ctx X, c C) error { return biWriteErr(ctx, c, req) }
	}
	wset := func(r *pb.SetVariableRequest) *pb.WriteRequest {
		return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariable{SetVariable: r}}
	}
	wmany := func(r *pb.SetVariablesRequest) *pb.WriteRequest {
		return &pb.WriteRequest{Write: &pb.WriteRequest_SetVariables{SetVariables: r}}
	}
	rows = append(rows, []biCase{
		{"WriteVariables", "no write", write(&pb.WriteRequest{Id: 1}), IA, []string{"write", "is required"}},
		{"WriteVariables", "missing session_id", write(wset(&pb.SetVariableRequest{VariableIdentifier: "i", Value: biInt(6)})), IA, []string{"session_id", "is required"}},
		{"WriteVariables", "unknown session", write(wset(&pb.SetVariableRequest{SessionId: "nope", VariableIdentifier: "i", Value: biInt(6)})), NF, []string{"session not found", `"nope"`}},
		{"WriteVariables", "unknown variable", write(wset(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "nope", Value: biInt(6)})), NF, []string{`session "s" has no variable "nope"`}},
		{"WriteVariables", "oversized variable_identifier", write(wset(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: biLong, Value: biInt(6)})), IA, []string{"variable_identifier", "300 bytes"}},
		{"WriteVariables", "constraint", write(wset(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(101)})), IA, []string{"max"}},
		{"WriteVariables", "too much metadata", write(wset(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "i", Value: biInt(6), Metadata: biManyMD})), RE, []string{"max_metadata_entries"}},
		{"WriteVariables", "batch with an unknown variable", write(wmany(&pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"i": biInt(7), "nope": biInt(1)}})), NF, []string{`"nope"`}},
		{"WriteVariables", "oversized message", write(wset(&pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "str", Value: biHugeMsg})), RE, []string{"larger than max"}},
	}...)
	return rows
}

// biWriteErr sends one write on a WriteVariables stream and returns its
// ack's error as a status error, or the stream's.
func biWriteErr(ctx context.Context, c pb.BridgeServiceClient, req *pb.WriteRequest) error {
	s, err := c.WriteVariables(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.WriteVariablesRequest{Writes: []*pb.WriteRequest{req}}); err != nil {
		_, err = s.Recv()
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetAcks()) != 1 {
		return fmt.Errorf("%d acks for one write", len(resp.GetAcks()))
	}
	ack := resp.GetAcks()[0]
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		return fmt.Errorf("the stream did not end cleanly: %v", err)
	}
	if e := ack.GetError(); e != nil {
		return status.ErrorProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
	}
	return nil
}

func nan() float64 { var z float64; return z / z }

// biWatchErr opens a watch and returns the status it ends with, or nil if
// the server registered it (the table expects none to be).
func biWatchErr(ctx context.Context, c pb.BridgeServiceClient, req *pb.WatchVariablesRequest, rpc string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if rpc == "Watch" {
		return biMuxErr(ctx, c, req)
	}
	var s grpc.ClientStream
	var err error
	if rpc == "WatchVariableBatches" {
		s, err = c.WatchVariableBatches(ctx, req)
	} else {
		s, err = c.WatchVariables(ctx, req)
	}
	if err != nil {
		return err
	}
	md, err := s.Header()
	if err != nil {
		return err
	}
	if len(md.Get(server.RevisionHeader)) > 0 {
		return nil // registered: the case fails
	}
	return s.RecvMsg(new(pb.VariableUpdate))
}

// biMuxErr creates one watch on a Watch stream and returns the status it
// ends with, or the stream's if the stream fails, or nil if the server
// registered it.
func biMuxErr(ctx context.Context, c pb.BridgeServiceClient, req *pb.WatchVariablesRequest) error {
	s, err := c.Watch(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.WatchRequest{Request: &pb.WatchRequest_Create{Create: &pb.WatchCreateRequest{WatchId: 1, Watch: req}}}); err != nil {
		_, err = s.Recv()
		return err
	}
	r, err := s.Recv()
	if err != nil {
		return err
	}
	if r.GetEnded() == nil {
		return nil // registered: the case fails
	}
	var sp spb.Status
	if err := proto.Unmarshal(r.GetEnded().GetStatus(), &sp); err != nil {
		return err
	}
	return status.FromProto(&sp).Err()
}

// biState is everything a failed call must leave as it was.
type biState struct {
	sessions int
	revision int64
	vars     []*pb.Variable
	watches  int
}

func biSnapshot(t *testing.T, st *store.Store) biState {
	t.Helper()
	info, err := st.GetSession("s")
	if err != nil {
		t.Fatal(err)
	}
	vars, _, err := st.List("s", "")
	if err != nil {
		t.Fatal(err)
	}
	return biState{sessions: st.SessionCount(), revision: info.Revision, vars: vars, watches: st.WatchCount()}
}

func TestBadInputTable(t *testing.T) {
	srv := servertest.Start(t, store.Options{MaxValueBytes: biMaxValueBytes, MaxWatchIdentifiers: biMaxWatchIdents},
		server.WithRequestLimits(server.RequestLimits{MaxMetadataEntries: biMaxMDEntries, MaxRecvMsgBytes: biMaxRecvBytes}))
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(4*biMaxRecvBytes)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewBridgeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.InitializeSession(ctx, &pb.InitializeSessionRequest{SessionId: "s"}); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, r := range biVars {
		r = proto.CloneOf(r)
		r.SessionId = "s"
		v, err := c.RegisterVariable(ctx, r)
		if err != nil {
			t.Fatalf("register %s: %v", r.Name, err)
		}
		ids[r.Name] = v.Variable.Id
	}

	rows := biRows()
	for i := range rows {
		if rows[i].call == nil { // needs i's id
			rows[i].call = func(ctx context.Context, c pb.BridgeServiceClient) error {
				_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"i": biInt(7), ids["i"]: biInt(8)}})
				return err
			}
		}
	}
	covered := map[string]bool{}
	for _, tc := range rows {
		covered[tc.rpc] = true
		t.Run(tc.rpc+"/"+tc.input, func(t *testing.T) {
			before := biSnapshot(t, srv.Store)
			err := tc.call(ctx, c)
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), tc.code)
			}
			for _, w := range tc.words {
				if !strings.Contains(st.Message(), w) {
					t.Errorf("message %q does not contain %q", st.Message(), w)
				}
			}
			// Watches end asynchronously on the server: wait for the count.
			after := biSnapshot(t, srv.Store)
			for deadline := time.Now().Add(5 * time.Second); after.watches != before.watches && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
				after = biSnapshot(t, srv.Store)
			}
			if after.sessions != before.sessions || after.revision != before.revision || after.watches != before.watches {
				t.Fatalf("half-applied: sessions %d->%d, revision %d->%d, watches %d->%d",
					before.sessions, after.sessions, before.revision, after.revision, before.watches, after.watches)
			}
			if len(after.vars) != len(before.vars) {
				t.Fatalf("half-applied: %d variables -> %d", len(before.vars), len(after.vars))
			}
			for i := range before.vars {
				if !proto.Equal(before.vars[i], after.vars[i]) {
					t.Fatalf("half-applied: %s changed:\n%v\n->\n%v", before.vars[i].Name, before.vars[i], after.vars[i])
				}
			}
		})
	}
	for _, m := range pb.BridgeService_ServiceDesc.Methods {
		if !covered[m.MethodName] {
			t.Errorf("the table has no row for %s", m.MethodName)
		}
	}
	for _, s := range pb.BridgeService_ServiceDesc.Streams {
		if !covered[s.StreamName] {
			t.Errorf("the table has no row for %s", s.StreamName)
		}
	}
}
