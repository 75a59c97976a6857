package main

// End-to-end tests of the CLI against the real server on loopback.

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/varbridge/varbridge/internal/servertest"
	"github.com/varbridge/varbridge/internal/store"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// cli runs one varbridge command line against addr and returns its stdout,
// the error text main would print, and the error.
func cli(t *testing.T, addr string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(append([]string{"--addr", addr, "--session", "clitest"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err != nil {
		printError(&errOut, err)
	}
	return out.String(), errOut.String(), err
}

// mustCLI runs a command line that must succeed.
func mustCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errText, err := cli(t, addr, args...)
	if err != nil {
		t.Fatalf("varbridge %s: %v\n%s", strings.Join(args, " "), err, errText)
	}
	return out
}

// failCLI runs a command line that must fail with code.
func failCLI(t *testing.T, addr string, code codes.Code, args ...string) string {
	t.Helper()
	out, errText, err := cli(t, addr, args...)
	if err == nil {
		t.Fatalf("varbridge %s succeeded, want %s:\n%s", strings.Join(args, " "), code, out)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("varbridge %s: code %s, want %s: %s", strings.Join(args, " "), got, code, errText)
	}
	if !strings.Contains(errText, code.String()) {
		t.Fatalf("error text %q does not name the code %s", errText, code)
	}
	return errText
}

func TestCLIAgainstServer(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	addr := srv.Addr

	out := mustCLI(t, addr, "register", "temperature", "float", "0.7", "--min", "0", "--max", "2")
	if !strings.HasPrefix(out, "temperature id=") || !strings.Contains(out, "type=float value=0.7 version=1") {
		t.Fatalf("register output = %q", out)
	}
	id := strings.Fields(out)[1][len("id="):]

	out = mustCLI(t, addr, "set", "temperature", "0.9", "--source", "tuner", "--meta", "why=test")
	if !strings.Contains(out, "value=0.9 version=2") || !strings.Contains(out, "source=tuner") {
		t.Fatalf("set output = %q", out)
	}

	errText := failCLI(t, addr, codes.InvalidArgument, "set", "temperature", "3.5")
	if !strings.Contains(errText, "max") {
		t.Errorf("constraint error %q does not name the constraint", errText)
	}

	// By name and by id: the same line, unchanged by the rejected write.
	byName := mustCLI(t, addr, "get", "temperature")
	byID := mustCLI(t, addr, "get", id)
	if byName != byID || !strings.Contains(byName, "value=0.9 version=2") {
		t.Fatalf("get by name = %q, by id = %q", byName, byID)
	}

	failCLI(t, addr, codes.FailedPrecondition, "set", "temperature", "1.1", "--expected-version", "1")
	mustCLI(t, addr, "set", "temperature", "1.1", "--expected-version", "2")

	// Writing the current value is a no-op.
	if out := mustCLI(t, addr, "set", "temperature", "1.1"); !strings.Contains(out, "version=3") || !strings.Contains(out, "(unchanged)") {
		t.Fatalf("no-op set output = %q", out)
	}

	mustCLI(t, addr, "register", "model", "choice", "gpt-4", "--choices", "gpt-4,claude")
	mustCLI(t, addr, "register", "big", "integer", "9007199254740993")
	mustCLI(t, addr, "register", "w", "tensor", "[[1,2],[3,4]]", "--dtype", "float32", "--shape", "2,2")
	failCLI(t, addr, codes.InvalidArgument, "set", "model", "llama")

	// An atomic batch shares one revision.
	out = mustCLI(t, addr, "set", "--batch", "temperature=0.5", "model=claude")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "revision=") || !strings.HasSuffix(lines[2], "changed=2") {
		t.Fatalf("batch output = %q", out)
	}
	rev := strings.Fields(lines[2])[0]
	for _, l := range lines[:2] {
		if !strings.Contains(l, " "+rev+" ") {
			t.Errorf("batch line %q is not at %s", l, rev)
		}
	}

	// --json is protobuf JSON of the response; values survive exactly.
	out = mustCLI(t, addr, "--json", "get", "big")
	var resp varbridgev1.GetVariableResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("--json get output does not parse: %v\n%s", err, out)
	}
	if got := resp.GetVariable().GetValue().GetIntValue(); got != 9007199254740993 {
		t.Errorf("int64 through the server = %d", got)
	}
	out = mustCLI(t, addr, "--json", "get", "w")
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	want := tensorV([]int64{2, 2}, "float32", f32s(1, 2, 3, 4))
	if !proto.Equal(resp.GetVariable().GetValue(), want) {
		t.Errorf("tensor through the server = %v, want %v", resp.GetVariable().GetValue(), want)
	}
	if out := mustCLI(t, addr, "get", "w"); !strings.Contains(out, `value={"shape":[2,2],"dtype":"float32","data":[1,2,3,4]}`) {
		t.Errorf("tensor line = %q", out)
	}

	// list is sorted by name and takes a glob.
	out = mustCLI(t, addr, "list")
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		names = append(names, strings.Fields(l)[0])
	}
	if strings.Join(names, ",") != "big,model,temperature,w" {
		t.Errorf("list names = %v", names)
	}
	if out := mustCLI(t, addr, "list", "t*"); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "temperature ") {
		t.Errorf("list t* = %q", out)
	}

	// Several at once; a missing one fails the command after printing the rest.
	out, errText, err := cli(t, addr, "get", "model", "nope", "temperature")
	if status.Code(err) != codes.NotFound || !strings.Contains(errText, "nope") {
		t.Errorf("get with a missing name: err = %v, stderr = %q", err, errText)
	}
	if strings.Count(out, "\n") != 2 {
		t.Errorf("get with a missing name printed %q", out)
	}

	// Sessions.
	if out := mustCLI(t, addr, "session", "get"); !strings.Contains(out, "session=clitest") || !strings.Contains(out, "variables=4") {
		t.Errorf("session get = %q", out)
	}
	mustCLI(t, addr, "session", "heartbeat")
	if out := mustCLI(t, addr, "session", "init", "other", "--ttl", "10m"); !strings.Contains(out, "created=true") || !strings.Contains(out, "ttl=10m0s") {
		t.Errorf("session init = %q", out)
	}
	if out := mustCLI(t, addr, "session", "cleanup"); !strings.Contains(out, "variables_removed=4") {
		t.Errorf("session cleanup = %q", out)
	}
	failCLI(t, addr, codes.NotFound, "session", "get")
}

func TestCLIUsageErrors(t *testing.T) {
	srv := servertest.Start(t, store.Options{})
	for _, args := range [][]string{
		{"register", "x", "complex", "1"},
		{"register", "x", "integer", "1.5"},
		{"register", "x", "float"},
		{"set", "--batch", "novalue"},
		{"set", "--batch", "a=1", "--expected-version", "3"},
		{"set", "onlyone"},
		{"set", "x", "1", "--meta", "nokey"},
	} {
		out, errText, err := cli(t, srv.Addr, args...)
		if err == nil {
			t.Errorf("varbridge %q succeeded: %q", args, out)
			continue
		}
		if !strings.HasPrefix(errText, "Error: ") {
			t.Errorf("varbridge %q: error text %q", args, errText)
		}
	}
	// Nothing was registered by the failed commands, nor a session created.
	if n := srv.Store.SessionCount(); n != 0 {
		t.Errorf("usage errors created %d sessions", n)
	}
}

func TestCLIUnreachableServer(t *testing.T) {
	// A port nobody listens on: the command fails quickly with Unavailable.
	_, errText, err := cli(t, "127.0.0.1:1", "list")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("list against a closed port: err = %v (%s), want Unavailable", err, errText)
	}
}
