package server_test

// gRPC integration tests for every unary BridgeService RPC, on loopback
// through the real server: success paths, error codes and google.rpc details.

import (
	"context"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	refpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// unaryEnv is a running server and a client connected to it.
type unaryEnv struct {
	t    *testing.T
	srv  *servertest.Server
	conn *grpc.ClientConn
	c    pb.BridgeServiceClient
	ctx  context.Context
}

func startUnary(t *testing.T, opts store.Options) *unaryEnv {
	t.Helper()
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 24 * time.Hour // only the tests' own Sweep calls expire sessions
	}
	srv := servertest.Start(t, opts)
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &unaryEnv{t: t, srv: srv, conn: conn, c: pb.NewBridgeServiceClient(conn), ctx: ctx}
}

func (e *unaryEnv) session(id string) *pb.Session {
	e.t.Helper()
	r, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: id})
	if err != nil {
		e.t.Fatalf("InitializeSession(%q): %v", id, err)
	}
	return r.Session
}

func (e *unaryEnv) register(req *pb.RegisterVariableRequest) *pb.Variable {
	e.t.Helper()
	r, err := e.c.RegisterVariable(e.ctx, req)
	if err != nil {
		e.t.Fatalf("RegisterVariable(%s): %v", req.GetName(), err)
	}
	return r.Variable
}

func (e *unaryEnv) get(sess, ident string) *pb.Variable {
	e.t.Helper()
	r, err := e.c.GetVariable(e.ctx, &pb.GetVariableRequest{SessionId: sess, VariableIdentifier: ident})
	if err != nil {
		e.t.Fatalf("GetVariable(%s): %v", ident, err)
	}
	return r.Variable
}

func (e *unaryEnv) revision(sess string) int64 {
	e.t.Helper()
	r, err := e.c.GetSession(e.ctx, &pb.GetSessionRequest{SessionId: sess})
	if err != nil {
		e.t.Fatalf("GetSession(%s): %v", sess, err)
	}
	return r.Session.Revision
}

func uInt(n int64) *pb.Value     { return &pb.Value{Kind: &pb.Value_IntValue{IntValue: n}} }
func uFloat(f float64) *pb.Value { return &pb.Value{Kind: &pb.Value_FloatValue{FloatValue: f}} }
func uStr(s string) *pb.Value    { return &pb.Value{Kind: &pb.Value_StringValue{StringValue: s}} }
func uBool(b bool) *pb.Value     { return &pb.Value{Kind: &pb.Value_BoolValue{BoolValue: b}} }
func uEmb(xs ...float64) *pb.Value {
	return &pb.Value{Kind: &pb.Value_EmbeddingValue{EmbeddingValue: &pb.Embedding{Values: xs}}}
}
func uTensor(dtype string, shape []int64, data []byte) *pb.Value {
	return &pb.Value{Kind: &pb.Value_TensorValue{TensorValue: &pb.Tensor{Dtype: dtype, Shape: shape, Data: data}}}
}

// wantStatus checks an RPC error's code and that its message contains every
// part, and returns the status for detail checks.
func wantStatus(t *testing.T, err error, code codes.Code, parts ...string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("err = %v, want code %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Errorf("message %q does not contain %q", st.Message(), p)
		}
	}
	return st
}

func badRequest(t *testing.T, st *status.Status) []*errdetails.BadRequest_FieldViolation {
	t.Helper()
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br.GetFieldViolations()
		}
	}
	t.Fatalf("status %v has no google.rpc.BadRequest detail (details %v)", st.Message(), st.Details())
	return nil
}

func wantFieldViolation(t *testing.T, st *status.Status, field, reason string) {
	t.Helper()
	fvs := badRequest(t, st)
	if len(fvs) != 1 || fvs[0].GetField() != field || fvs[0].GetReason() != reason || fvs[0].GetDescription() == "" {
		t.Errorf("field violations = %v, want one on %q with reason %q", fvs, field, reason)
	}
}

func wantQuotaFailure(t *testing.T, st *status.Status, limit string) {
	t.Helper()
	for _, d := range st.Details() {
		if qf, ok := d.(*errdetails.QuotaFailure); ok {
			vs := qf.GetViolations()
			if len(vs) != 1 || vs[0].GetSubject() != limit || !strings.Contains(vs[0].GetDescription(), limit) {
				t.Errorf("quota violations = %v, want one naming %q", vs, limit)
			}
			return
		}
	}
	t.Fatalf("status %v has no google.rpc.QuotaFailure detail", st.Message())
}

type unaryClock struct{ ns atomic.Int64 }

func (c *unaryClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *unaryClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// ---- sessions ----

func TestUnaryInitializeSession(t *testing.T) {
	e := startUnary(t, store.Options{MaxSessions: 3, TTL: 30 * time.Minute})

	r, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{
		SessionId: "demo", Ttl: durationpb.New(time.Hour), Metadata: map[string]string{"owner": "go"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := r.Session
	if !r.Created || s.SessionId != "demo" || s.Ttl.AsDuration() != time.Hour || s.Metadata["owner"] != "go" ||
		s.Revision != 0 || s.VariableCount != 0 || !s.ExpiresAt.AsTime().Equal(s.CreatedAt.AsTime().Add(time.Hour)) {
		t.Errorf("InitializeSession = %v", r)
	}

	r2, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "demo"})
	if err != nil || r2.Created || r2.Session.SessionId != "demo" || r2.Session.Ttl.AsDuration() != time.Hour {
		t.Errorf("InitializeSession(existing) = %v, %v; want created=false", r2, err)
	}

	gen, err := e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{})
	if err != nil || !gen.Created || gen.Session.SessionId == "" || gen.Session.Ttl.AsDuration() != 30*time.Minute {
		t.Errorf("InitializeSession(generated) = %v, %v", gen, err)
	}

	_, err = e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "neg", Ttl: durationpb.New(-time.Second)})
	st := wantStatus(t, err, codes.InvalidArgument, "ttl")
	wantFieldViolation(t, st, "ttl", "")

	_, err = e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "bad\x01id"})
	wantFieldViolation(t, wantStatus(t, err, codes.InvalidArgument), "session_id", "")

	e.session("third")
	_, err = e.c.InitializeSession(e.ctx, &pb.InitializeSessionRequest{SessionId: "fourth"})
	wantQuotaFailure(t, wantStatus(t, err, codes.ResourceExhausted, "max_sessions", "fourth"), "max_sessions")
}

func TestUnaryGetSessionHeartbeatCleanup(t *testing.T) {
	clk := &unaryClock{}
	clk.ns.Store(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e := startUnary(t, store.Options{Now: clk.Now, TTL: time.Minute})
	created := e.session("s1")
	e.register(&pb.RegisterVariableRequest{SessionId: "s1", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: uInt(1)})
	e.register(&pb.RegisterVariableRequest{SessionId: "s1", Name: "b", Type: pb.VariableType_VARIABLE_TYPE_BOOLEAN, InitialValue: uBool(true)})

	// GetSession reports the session and does not extend it.
	clk.Advance(30 * time.Second)
	g, err := e.c.GetSession(e.ctx, &pb.GetSessionRequest{SessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Session.Revision != 2 || g.Session.VariableCount != 2 || g.Session.Ttl.AsDuration() != time.Minute {
		t.Errorf("GetSession = %v", g.Session)
	}
	// The registrations (uses) moved expiry to their time; the clock had not moved then.
	if !g.Session.ExpiresAt.AsTime().Equal(created.ExpiresAt.AsTime()) {
		t.Errorf("GetSession moved expires_at from %v to %v", created.ExpiresAt.AsTime(), g.Session.ExpiresAt.AsTime())
	}

	// Heartbeat extends it: 30 s after the heartbeat the sweep keeps it.
	h, err := e.c.Heartbeat(e.ctx, &pb.HeartbeatRequest{SessionId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(time.Minute); !h.Session.ExpiresAt.AsTime().Equal(want) {
		t.Errorf("Heartbeat expires_at = %v, want %v", h.Session.ExpiresAt.AsTime(), want)
	}
	clk.Advance(45 * time.Second) // 75 s after creation, 45 s after the heartbeat
	if swept := e.srv.Store.Sweep(); len(swept) != 0 {
		t.Fatalf("heartbeat did not extend the session: swept %v", swept)
	}
	if _, err := e.c.GetSession(e.ctx, &pb.GetSessionRequest{SessionId: "s1"}); err != nil {
		t.Fatalf("GetSession after heartbeat: %v", err)
	}

	// CleanupSession removes it with its variables.
	cl, err := e.c.CleanupSession(e.ctx, &pb.CleanupSessionRequest{SessionId: "s1"})
	if err != nil || cl.VariablesRemoved != 2 {
		t.Fatalf("CleanupSession = %v, %v; want 2 variables removed", cl, err)
	}
	for name, call := range map[string]func() error{
		"GetSession": func() error { _, err := e.c.GetSession(e.ctx, &pb.GetSessionRequest{SessionId: "s1"}); return err },
		"Heartbeat":  func() error { _, err := e.c.Heartbeat(e.ctx, &pb.HeartbeatRequest{SessionId: "s1"}); return err },
		"Cleanup": func() error {
			_, err := e.c.CleanupSession(e.ctx, &pb.CleanupSessionRequest{SessionId: "s1"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := wantStatus(t, call(), codes.NotFound, `"s1"`)
			found := false
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.ResourceInfo); ok && ri.ResourceType == "session" {
					found = true
				}
			}
			if !found {
				t.Errorf("no ResourceInfo detail for the session: %v", st.Details())
			}
		})
	}

	// Expiry by TTL: the session is gone for every RPC.
	e.session("s2")
	clk.Advance(time.Minute)
	if swept := e.srv.Store.Sweep(); !slices.Equal(swept, []string{"s2"}) {
		t.Fatalf("Sweep = %v, want [s2]", swept)
	}
	_, err = e.c.Heartbeat(e.ctx, &pb.HeartbeatRequest{SessionId: "s2"})
	wantStatus(t, err, codes.NotFound, `"s2"`)

	for name, call := range map[string]func() error{
		"GetSession": func() error { _, err := e.c.GetSession(e.ctx, &pb.GetSessionRequest{}); return err },
		"Heartbeat":  func() error { _, err := e.c.Heartbeat(e.ctx, &pb.HeartbeatRequest{}); return err },
		"Cleanup":    func() error { _, err := e.c.CleanupSession(e.ctx, &pb.CleanupSessionRequest{}); return err },
	} {
		t.Run(name+"/missing session_id", func(t *testing.T) {
			wantFieldViolation(t, wantStatus(t, call(), codes.InvalidArgument, "session_id"), "session_id", "")
		})
	}
}

// ---- variables ----

func TestUnaryRegisterEveryType(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	f32 := make([]byte, 2*3*4)
	for i := range f32 {
		f32[i] = byte(i)
	}
	cases := []struct {
		name string
		typ  pb.VariableType
		v    *pb.Value
		c    *pb.Constraints
	}{
		{"i", pb.VariableType_VARIABLE_TYPE_INTEGER, uInt(math.MinInt64), &pb.Constraints{Max: proto.Float64(0)}},
		{"f", pb.VariableType_VARIABLE_TYPE_FLOAT, uFloat(0.7), &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(2)}},
		{"nan", pb.VariableType_VARIABLE_TYPE_FLOAT, uFloat(math.NaN()), nil},
		{"s", pb.VariableType_VARIABLE_TYPE_STRING, uStr("héllo"), &pb.Constraints{MinLength: proto.Int64(1), MaxLength: proto.Int64(5), Pattern: proto.String("^h")}},
		{"b", pb.VariableType_VARIABLE_TYPE_BOOLEAN, uBool(true), nil},
		{"c", pb.VariableType_VARIABLE_TYPE_CHOICE, uStr("claude"), &pb.Constraints{Choices: []string{"gpt", "claude"}}},
		{"m", pb.VariableType_VARIABLE_TYPE_MODULE, uStr("dspy.Predict"), &pb.Constraints{AllowedModules: []string{"dspy.Predict"}}},
		{"e", pb.VariableType_VARIABLE_TYPE_EMBEDDING, uEmb(0.1, -0.2, 0.3), &pb.Constraints{Dimensions: proto.Int64(3)}},
		{"t", pb.VariableType_VARIABLE_TYPE_TENSOR, uTensor("float32", []int64{2, 3}, f32), &pb.Constraints{Shape: []int64{-1, 3}, Dtype: proto.String("float32")}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := e.c.RegisterVariable(e.ctx, &pb.RegisterVariableRequest{
				SessionId: "s", Name: tc.name, Type: tc.typ, InitialValue: tc.v, Constraints: tc.c,
				Metadata: map[string]string{"source": "test"},
			})
			if err != nil {
				t.Fatal(err)
			}
			v := r.Variable
			if r.Revision != int64(i+1) || v.Revision != r.Revision || v.Version != 1 || v.Type != tc.typ ||
				v.Name != tc.name || !strings.HasPrefix(v.Id, "var_") || v.Source != "test" ||
				v.CreatedAt == nil || v.UpdatedAt == nil || !proto.Equal(v.Value, tc.v) {
				t.Errorf("RegisterVariable = %v at %d", v, r.Revision)
			}
			if tc.c != nil && !proto.Equal(v.Constraints, tc.c) {
				t.Errorf("constraints %v, want %v", v.Constraints, tc.c)
			}
			for _, ident := range []string{v.Id, tc.name} {
				if got := e.get("s", ident); !proto.Equal(got, v) {
					t.Errorf("GetVariable(%s) = %v, want %v", ident, got, v)
				}
			}
		})
	}
}

// TestUnaryErrorCodes drives every unary RPC into its errors and checks the
// code, the message and the google.rpc details.
func TestUnaryErrorCodes(t *testing.T) {
	e := startUnary(t, store.Options{MaxValueBytes: 256, MaxVariables: 4})
	e.session("s")
	temp := e.register(&pb.RegisterVariableRequest{
		SessionId: "s", Name: "temperature", Type: pb.VariableType_VARIABLE_TYPE_FLOAT, InitialValue: uFloat(0.7),
		Constraints: &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(2)},
	})
	e.register(&pb.RegisterVariableRequest{
		SessionId: "s", Name: "model", Type: pb.VariableType_VARIABLE_TYPE_CHOICE, InitialValue: uStr("gpt"),
		Constraints: &pb.Constraints{Choices: []string{"gpt", "claude"}},
	})
	e.register(&pb.RegisterVariableRequest{
		SessionId: "s", Name: "prompt", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: uStr("hi"),
	})
	big := uStr(strings.Repeat("x", 300))
	c, ctx := e.c, e.ctx
	float := pb.VariableType_VARIABLE_TYPE_FLOAT

	cases := []struct {
		name   string
		call   func() error
		code   codes.Code
		parts  []string
		field  string // BadRequest field violation expected
		reason string
		quota  string // QuotaFailure subject expected
	}{
		// NotFound
		{name: "GetVariable unknown session", call: func() error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "nope", VariableIdentifier: "temperature"})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`, "session"}},
		{name: "GetVariable unknown variable", call: func() error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: "ghost"})
			return err
		}, code: codes.NotFound, parts: []string{`"ghost"`, `"s"`}},
		{name: "GetVariable unknown id", call: func() error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: "var_0000000000000000"})
			return err
		}, code: codes.NotFound, parts: []string{"var_0000000000000000"}},
		{name: "RegisterVariable unknown session", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "nope", Name: "x", Type: float, InitialValue: uFloat(1)})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`}},
		{name: "GetVariables unknown session", call: func() error {
			_, err := c.GetVariables(ctx, &pb.GetVariablesRequest{SessionId: "nope", VariableIdentifiers: []string{"x"}})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`}},
		{name: "SetVariable unknown variable", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "ghost", Value: uFloat(1)})
			return err
		}, code: codes.NotFound, parts: []string{`"ghost"`}},
		{name: "SetVariable unknown session", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "nope", VariableIdentifier: "temperature", Value: uFloat(1)})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`}},
		{name: "SetVariables lists every missing identifier", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{
				"ghost1": uFloat(1), "temperature": uFloat(1), "ghost2": uFloat(1),
			}})
			return err
		}, code: codes.NotFound, parts: []string{`"ghost1"`, `"ghost2"`}},
		{name: "ListVariables unknown session", call: func() error {
			_, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: "nope"})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`}},
		{name: "DeleteVariable unknown variable", call: func() error {
			_, err := c.DeleteVariable(ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: "ghost"})
			return err
		}, code: codes.NotFound, parts: []string{`"ghost"`}},
		{name: "DeleteVariable unknown session", call: func() error {
			_, err := c.DeleteVariable(ctx, &pb.DeleteVariableRequest{SessionId: "nope", VariableIdentifier: "temperature"})
			return err
		}, code: codes.NotFound, parts: []string{`"nope"`}},

		// InvalidArgument: constraint violations
		{name: "SetVariable above max", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "temperature", Value: uFloat(2.5)})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"temperature"`, "max", "2.5"}, field: "constraints.max", reason: "CONSTRAINT_VIOLATION"},
		{name: "SetVariable below min by id", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: temp.Id, Value: uFloat(-1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"temperature"`, "min", "-1"}, field: "constraints.min", reason: "CONSTRAINT_VIOLATION"},
		{name: "SetVariable not a choice", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "model", Value: uStr("llama")})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"model"`, "choices", `"llama"`}, field: "constraints.choices", reason: "CONSTRAINT_VIOLATION"},
		{name: "RegisterVariable initial value violates", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "p", Type: float, InitialValue: uFloat(5),
				Constraints: &pb.Constraints{Max: proto.Float64(1)}})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"p"`, "max", "5"}, field: "constraints.max", reason: "CONSTRAINT_VIOLATION"},
		{name: "SetVariables one violates", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{
				"temperature": uFloat(1), "model": uStr("mistral"),
			}})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"model"`, "choices"}, field: "constraints.choices", reason: "CONSTRAINT_VIOLATION"},

		// InvalidArgument: wrong types and missing or bad fields
		{name: "SetVariable wrong kind", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "temperature", Value: uInt(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"temperature"`, "int_value"}, field: "value"},
		{name: "RegisterVariable wrong kind", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "q", Type: pb.VariableType_VARIABLE_TYPE_BOOLEAN, InitialValue: uStr("true")})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"q"`, "boolean"}, field: "value"},
		{name: "RegisterVariable malformed tensor", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "tt", Type: pb.VariableType_VARIABLE_TYPE_TENSOR,
				InitialValue: uTensor("float32", []int64{2}, make([]byte, 7))})
			return err
		}, code: codes.InvalidArgument, parts: []string{"7 bytes"}, field: "value.tensor_value.data"},
		{name: "RegisterVariable missing name", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Type: float, InitialValue: uFloat(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{"name"}, field: "name"},
		{name: "RegisterVariable missing type", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", InitialValue: uFloat(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{"type"}, field: "type"},
		{name: "RegisterVariable missing initial_value", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: float})
			return err
		}, code: codes.InvalidArgument, parts: []string{"initial_value", `"x"`}, field: "initial_value"},
		{name: "RegisterVariable missing session_id", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{Name: "x", Type: float, InitialValue: uFloat(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{"session_id"}, field: "session_id"},
		{name: "RegisterVariable bad pattern", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_STRING,
				InitialValue: uStr("a"), Constraints: &pb.Constraints{Pattern: proto.String("(")}})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"x"`}, field: "constraints.pattern"},
		{name: "RegisterVariable constraint for another type", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: float,
				InitialValue: uFloat(1), Constraints: &pb.Constraints{Choices: []string{"a"}}})
			return err
		}, code: codes.InvalidArgument, parts: []string{"choices", "float"}, field: "constraints.choices"},
		{name: "RegisterVariable min > max", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: float,
				InitialValue: uFloat(1), Constraints: &pb.Constraints{Min: proto.Float64(3), Max: proto.Float64(1)}})
			return err
		}, code: codes.InvalidArgument, parts: []string{"min", "max"}, field: "constraints"},
		{name: "RegisterVariable choice without choices", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "x", Type: pb.VariableType_VARIABLE_TYPE_CHOICE, InitialValue: uStr("a")})
			return err
		}, code: codes.InvalidArgument, parts: []string{"choice"}, field: "constraints.choices"},
		{name: "RegisterVariable id-shaped name", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "var_0123456789abcdef", Type: float, InitialValue: uFloat(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{"var_0123456789abcdef"}, field: "name"},
		{name: "GetVariable missing identifier", call: func() error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{SessionId: "s"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"variable_identifier"}, field: "variable_identifier"},
		{name: "GetVariable missing session_id", call: func() error {
			_, err := c.GetVariable(ctx, &pb.GetVariableRequest{VariableIdentifier: "temperature"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"session_id"}, field: "session_id"},
		{name: "GetVariables no identifiers", call: func() error {
			_, err := c.GetVariables(ctx, &pb.GetVariablesRequest{SessionId: "s"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"variable_identifiers"}, field: "variable_identifiers"},
		{name: "SetVariable missing value", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "temperature"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"value", "temperature"}, field: "value"},
		{name: "SetVariable missing identifier", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", Value: uFloat(1)})
			return err
		}, code: codes.InvalidArgument, parts: []string{"variable_identifier"}, field: "variable_identifier"},
		{name: "SetVariables no updates", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"updates"}, field: "updates"},
		{name: "SetVariables id and name of one variable", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{
				"temperature": uFloat(1), temp.Id: uFloat(1.5),
			}})
			return err
		}, code: codes.InvalidArgument, parts: []string{`"temperature"`, temp.Id}, field: "updates"},
		{name: "SetVariables expected_versions outside updates", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s",
				Updates: map[string]*pb.Value{"temperature": uFloat(1)}, ExpectedVersions: map[string]int64{"model": 1}})
			return err
		}, code: codes.InvalidArgument, parts: []string{"expected_versions", `"model"`}},
		{name: "ListVariables bad pattern", call: func() error {
			_, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: "s", Pattern: "[a-"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"[a-"}, field: "pattern"},
		{name: "DeleteVariable missing identifier", call: func() error {
			_, err := c.DeleteVariable(ctx, &pb.DeleteVariableRequest{SessionId: "s"})
			return err
		}, code: codes.InvalidArgument, parts: []string{"variable_identifier"}, field: "variable_identifier"},

		// FailedPrecondition
		{name: "SetVariable stale expected_version", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "temperature", Value: uFloat(1), ExpectedVersion: proto.Int64(7)})
			return err
		}, code: codes.FailedPrecondition, parts: []string{`"temperature"`, "version 1", "7"}},
		{name: "SetVariables stale expected_versions", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s",
				Updates:          map[string]*pb.Value{"temperature": uFloat(1), "model": uStr("claude")},
				ExpectedVersions: map[string]int64{"temperature": 1, "model": 3}})
			return err
		}, code: codes.FailedPrecondition, parts: []string{`"model"`, "3"}},

		// AlreadyExists
		{name: "RegisterVariable duplicate name", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "temperature", Type: float, InitialValue: uFloat(1)})
			return err
		}, code: codes.AlreadyExists, parts: []string{`"temperature"`, `"s"`}},

		// ResourceExhausted
		{name: "RegisterVariable value too big", call: func() error {
			_, err := c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "big", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: big})
			return err
		}, code: codes.ResourceExhausted, parts: []string{"max_value_bytes", `"big"`}, quota: "max_value_bytes"},
		{name: "SetVariable value too big", call: func() error {
			_, err := c.SetVariable(ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "prompt", Value: big})
			return err
		}, code: codes.ResourceExhausted, parts: []string{"max_value_bytes", `"prompt"`}, quota: "max_value_bytes"},
		{name: "SetVariables value too big", call: func() error {
			_, err := c.SetVariables(ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"prompt": big, "temperature": uFloat(1)}})
			return err
		}, code: codes.ResourceExhausted, parts: []string{"max_value_bytes"}, quota: "max_value_bytes"},
	}

	before, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := wantStatus(t, tc.call(), tc.code, tc.parts...)
			if tc.field != "" {
				wantFieldViolation(t, st, tc.field, tc.reason)
			}
			if tc.quota != "" {
				wantQuotaFailure(t, st, tc.quota)
			}
		})
	}
	// None of the failed calls changed anything.
	after, err := c.ListVariables(ctx, &pb.ListVariablesRequest{SessionId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision != before.Revision || len(after.Variables) != len(before.Variables) {
		t.Fatalf("failed calls changed the session: revision %d -> %d, %d -> %d variables",
			before.Revision, after.Revision, len(before.Variables), len(after.Variables))
	}
	for i := range before.Variables {
		if !proto.Equal(before.Variables[i], after.Variables[i]) {
			t.Errorf("variable changed by a failed call:\n was %v\n now %v", before.Variables[i], after.Variables[i])
		}
	}

	// The variable limit, last because it fills the session.
	e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "fourth", Type: float, InitialValue: uFloat(0)})
	_, err = c.RegisterVariable(ctx, &pb.RegisterVariableRequest{SessionId: "s", Name: "fifth", Type: float, InitialValue: uFloat(0)})
	wantQuotaFailure(t, wantStatus(t, err, codes.ResourceExhausted, "max_variables_per_session", `"fifth"`), "max_variables_per_session")
}

func TestUnaryGetVariables(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	a := e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: uInt(1)})
	e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "b", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: uStr("x")})

	r, err := e.c.GetVariables(e.ctx, &pb.GetVariablesRequest{SessionId: "s", VariableIdentifiers: []string{"a", a.Id, "zz", "b", "yy"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 2 || len(r.Variables) != 3 || !proto.Equal(r.Variables["a"], a) || !proto.Equal(r.Variables[a.Id], a) ||
		r.Variables["b"].GetValue().GetStringValue() != "x" {
		t.Errorf("GetVariables = %v", r)
	}
	if !slices.Equal(r.Missing, []string{"zz", "yy"}) {
		t.Errorf("missing = %v, want [zz yy]", r.Missing)
	}
}

func TestUnarySetVariable(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	v := e.register(&pb.RegisterVariableRequest{
		SessionId: "s", Name: "temperature", Type: pb.VariableType_VARIABLE_TYPE_FLOAT, InitialValue: uFloat(0.7),
		Constraints: &pb.Constraints{Min: proto.Float64(0), Max: proto.Float64(2)},
	})

	r, err := e.c.SetVariable(e.ctx, &pb.SetVariableRequest{
		SessionId: "s", VariableIdentifier: "temperature", Value: uFloat(0.9), Metadata: map[string]string{"source": "py"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Changed || r.Revision != 2 || r.Variable.Version != 2 || r.Variable.Revision != 2 || r.Variable.Source != "py" ||
		r.Variable.Id != v.Id || r.Variable.GetValue().GetFloatValue() != 0.9 {
		t.Errorf("SetVariable = %v", r)
	}

	// Same value: no change, no version bump, current revision.
	r, err = e.c.SetVariable(e.ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: v.Id, Value: uFloat(0.9)})
	if err != nil || r.Changed || r.Revision != 2 || r.Variable.Version != 2 {
		t.Errorf("no-op SetVariable = %v, %v", r, err)
	}

	// Compare-and-set at the current version applies; the stale one fails and changes nothing.
	r, err = e.c.SetVariable(e.ctx, &pb.SetVariableRequest{
		SessionId: "s", VariableIdentifier: v.Id, Value: uFloat(1.1), ExpectedVersion: proto.Int64(2), Source: "go",
	})
	if err != nil || !r.Changed || r.Variable.Version != 3 || r.Variable.Source != "go" {
		t.Fatalf("CAS SetVariable = %v, %v", r, err)
	}
	_, err = e.c.SetVariable(e.ctx, &pb.SetVariableRequest{
		SessionId: "s", VariableIdentifier: "temperature", Value: uFloat(1.5), ExpectedVersion: proto.Int64(2),
	})
	wantStatus(t, err, codes.FailedPrecondition, `"temperature"`, "version 3", "2")
	if got := e.get("s", "temperature"); got.Version != 3 || got.GetValue().GetFloatValue() != 1.1 {
		t.Errorf("after a stale CAS: %v", got)
	}

	// Constraint violations change nothing either.
	_, err = e.c.SetVariable(e.ctx, &pb.SetVariableRequest{SessionId: "s", VariableIdentifier: "temperature", Value: uFloat(3)})
	wantFieldViolation(t, wantStatus(t, err, codes.InvalidArgument, "temperature", "max", "3"), "constraints.max", "CONSTRAINT_VIOLATION")
	if got := e.get("s", "temperature"); got.Version != 3 || e.revision("s") != 3 {
		t.Errorf("after a rejected write: %v at revision %d", got, e.revision("s"))
	}
}

func TestUnarySetVariables(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	a := e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: uInt(0),
		Constraints: &pb.Constraints{Max: proto.Float64(10)}})
	e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "b", Type: pb.VariableType_VARIABLE_TYPE_EMBEDDING, InitialValue: uEmb(0, 0)})
	e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "c", Type: pb.VariableType_VARIABLE_TYPE_BOOLEAN, InitialValue: uBool(false)})

	r, err := e.c.SetVariables(e.ctx, &pb.SetVariablesRequest{
		SessionId: "s",
		Updates:   map[string]*pb.Value{a.Id: uInt(5), "b": uEmb(1, 2), "c": uBool(false)},
		Metadata:  map[string]string{"source": "batch"},
	})
	if err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(r.Changed)
	sort.Strings(changed)
	want := []string{a.Id, "b"}
	sort.Strings(want)
	if r.Revision != 4 || !slices.Equal(changed, want) || len(r.Variables) != 3 {
		t.Errorf("SetVariables = %v; want revision 4, changed %v", r, want)
	}
	for ident, ver := range map[string]int64{"a": 2, "b": 2, "c": 1} {
		got := e.get("s", ident)
		if got.Version != ver {
			t.Errorf("%s version = %d, want %d", ident, got.Version, ver)
		}
		if ver == 2 && (got.Revision != 4 || got.Source != "batch") {
			t.Errorf("%s = %v, want revision 4 from batch", ident, got)
		}
	}
	if e.revision("s") != 4 {
		t.Errorf("session revision = %d, want 4 (three registrations, one batch)", e.revision("s"))
	}

	// With expected_versions: all match, applies.
	r, err = e.c.SetVariables(e.ctx, &pb.SetVariablesRequest{
		SessionId: "s", Updates: map[string]*pb.Value{"a": uInt(6), "c": uBool(true)},
		ExpectedVersions: map[string]int64{"a": 2, "c": 1},
	})
	if err != nil || r.Revision != 5 || len(r.Changed) != 2 {
		t.Errorf("CAS batch = %v, %v", r, err)
	}

	// One bad member: InvalidArgument, nothing changes, no revision taken.
	_, err = e.c.SetVariables(e.ctx, &pb.SetVariablesRequest{
		SessionId: "s", Updates: map[string]*pb.Value{"a": uInt(11), "b": uEmb(3, 4), "c": uBool(false)},
	})
	wantFieldViolation(t, wantStatus(t, err, codes.InvalidArgument, `"a"`, "max", "11"), "constraints.max", "CONSTRAINT_VIOLATION")
	if e.revision("s") != 5 {
		t.Errorf("a rejected batch took a revision: %d", e.revision("s"))
	}
	if got := e.get("s", "b"); got.Version != 2 || !proto.Equal(got.Value, uEmb(1, 2)) {
		t.Errorf("a rejected batch changed b: %v", got)
	}

	// All no-ops: no revision.
	r, err = e.c.SetVariables(e.ctx, &pb.SetVariablesRequest{SessionId: "s", Updates: map[string]*pb.Value{"a": uInt(6), "b": uEmb(1, 2)}})
	if err != nil || r.Revision != 5 || len(r.Changed) != 0 {
		t.Errorf("no-op batch = %v, %v", r, err)
	}
}

func TestUnaryListVariables(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	for _, n := range []string{"model.top_p", "alpha", "model.temp", "beta"} {
		e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: n, Type: pb.VariableType_VARIABLE_TYPE_INTEGER, InitialValue: uInt(0)})
	}
	for _, tc := range []struct {
		pattern string
		want    []string
	}{
		{"", []string{"alpha", "beta", "model.temp", "model.top_p"}},
		{"model.*", []string{"model.temp", "model.top_p"}},
		{"?eta", []string{"beta"}},
		{"nothing*", nil},
	} {
		r, err := e.c.ListVariables(e.ctx, &pb.ListVariablesRequest{SessionId: "s", Pattern: tc.pattern})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, v := range r.Variables {
			names = append(names, v.Name)
		}
		if !slices.Equal(names, tc.want) || r.Revision != 4 {
			t.Errorf("ListVariables(%q) = %v at %d, want %v at 4", tc.pattern, names, r.Revision, tc.want)
		}
	}
}

func TestUnaryDeleteVariable(t *testing.T) {
	e := startUnary(t, store.Options{})
	e.session("s")
	a := e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "a", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: uStr("x")})
	b := e.register(&pb.RegisterVariableRequest{SessionId: "s", Name: "b", Type: pb.VariableType_VARIABLE_TYPE_STRING, InitialValue: uStr("y")})

	for i, tc := range []struct{ ident, name string }{{a.Id, "a"}, {"b", "b"}} {
		r, err := e.c.DeleteVariable(e.ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: tc.ident})
		if err != nil {
			t.Fatal(err)
		}
		if r.Variable.Name != tc.name || r.Revision != int64(3+i) {
			t.Errorf("DeleteVariable(%s) = %v", tc.ident, r)
		}
		for _, ident := range []string{tc.name, r.Variable.Id} {
			_, err := e.c.GetVariable(e.ctx, &pb.GetVariableRequest{SessionId: "s", VariableIdentifier: ident})
			wantStatus(t, err, codes.NotFound, ident)
		}
	}
	_, err := e.c.DeleteVariable(e.ctx, &pb.DeleteVariableRequest{SessionId: "s", VariableIdentifier: b.Id})
	wantStatus(t, err, codes.NotFound, b.Id)
	if r, err := e.c.ListVariables(e.ctx, &pb.ListVariablesRequest{SessionId: "s"}); err != nil || len(r.Variables) != 0 {
		t.Errorf("ListVariables after deletes = %v, %v", r, err)
	}
}

// ---- health and reflection ----

func TestUnaryHealthServing(t *testing.T) {
	e := startUnary(t, store.Options{})
	hc := healthpb.NewHealthClient(e.conn)
	for _, svc := range []string{"", pb.BridgeService_ServiceDesc.ServiceName} {
		r, err := hc.Check(e.ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, r, err)
		}
	}
	_, err := hc.Check(e.ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	wantStatus(t, err, codes.NotFound)
}

func TestUnaryReflection(t *testing.T) {
	e := startUnary(t, store.Options{})
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stream, err := refpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *refpb.ServerReflectionRequest) *refpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if er := r.GetErrorResponse(); er != nil {
			t.Fatalf("reflection error: %v", er)
		}
		return r
	}

	r := ask(&refpb.ServerReflectionRequest{MessageRequest: &refpb.ServerReflectionRequest_ListServices{}})
	var services []string
	for _, s := range r.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	for _, want := range []string{"varbridge.v1.BridgeService", "grpc.health.v1.Health"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, missing %s", services, want)
		}
	}

	// Every SPEC RPC is described.
	r = ask(&refpb.ServerReflectionRequest{MessageRequest: &refpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "varbridge.v1.BridgeService",
	}})
	var methods []string
	for _, raw := range r.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatal(err)
		}
		for _, s := range fd.GetService() {
			if fd.GetPackage()+"."+s.GetName() == "varbridge.v1.BridgeService" {
				for _, m := range s.GetMethod() {
					methods = append(methods, m.GetName())
				}
			}
		}
	}
	for _, want := range []string{"InitializeSession", "GetSession", "Heartbeat", "CleanupSession", "RegisterVariable",
		"GetVariable", "GetVariables", "SetVariable", "SetVariables", "ListVariables", "DeleteVariable", "WatchVariables"} {
		if !slices.Contains(methods, want) {
			t.Errorf("reflection describes %v, missing %s", methods, want)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("reflection stream end: %v", err)
	}
}
