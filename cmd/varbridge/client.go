package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// client is one command's connection to the server, bound to one session.
type client struct {
	g       *globalOptions
	conn    *grpc.ClientConn
	api     varbridgev1.BridgeServiceClient
	session string
	token   string
	out     io.Writer
}

// run dials the server, applies --timeout, optionally initializes the
// --session (create or get) and calls fn. The connection is closed afterwards.
func (g *globalOptions) run(cmd *cobra.Command, initSession bool, fn func(ctx context.Context, c *client) error) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", g.addr, err)
	}
	defer conn.Close()
	c := &client{
		g:       g,
		conn:    conn,
		api:     varbridgev1.NewBridgeServiceClient(conn),
		session: g.session,
		token:   g.token,
		out:     cmd.OutOrStdout(),
	}
	if c.token == "" {
		c.token = os.Getenv("VARBRIDGE_TOKEN")
	}
	if initSession {
		resp, err := c.api.InitializeSession(c.ctx(ctx), &varbridgev1.InitializeSessionRequest{SessionId: g.session})
		if err != nil {
			return opError("initialize session "+strconv.Quote(g.session), err)
		}
		c.session = resp.GetSession().GetSessionId()
		if c.token == "" {
			c.token = resp.GetSessionToken()
		}
	}
	return fn(ctx, c)
}

// ctx adds the session token, when there is one, to an outgoing call's context.
func (c *client) ctx(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// printJSON writes m as indented protobuf JSON.
func (c *client) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

// maxPrintedElems bounds the elements of an embedding or tensor shown in the
// readable output; --json always shows everything.
const maxPrintedElems = 16

// variableLine is the readable one-line form of a variable:
//
//	temperature id=... type=float value=0.9 version=2 revision=3 source=cli
func variableLine(v *varbridgev1.Variable) string {
	var b strings.Builder
	b.WriteString(quoteIfNeeded(v.GetName()))
	value := FormatValue(v.GetValue(), maxPrintedElems)
	if _, isString := v.GetValue().GetKind().(*varbridgev1.Value_StringValue); isString {
		value = quoteIfNeeded(value)
	} // other kinds print as one word: numbers, true/false, compact JSON
	fmt.Fprintf(&b, " id=%s type=%s value=%s version=%d revision=%d",
		quoteIfNeeded(v.GetId()), TypeName(v.GetType()), value, v.GetVersion(), v.GetRevision())
	fmt.Fprintf(&b, " source=%s", quoteIfNeeded(v.GetSource()))
	return b.String()
}

// quoteIfNeeded quotes s (Go syntax) when it is empty or would not read back
// as one word: it has spaces, quotes, '=' or unprintable characters.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	if strings.ContainsAny(s, " \t\n\r\"'=\\`") || strconv.Quote(s) != `"`+s+`"` {
		return strconv.Quote(s)
	}
	return s
}

// parseMeta reads k=v pairs (from repeated --meta flags) into a map.
func parseMeta(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--meta %q: want key=value", p)
		}
		m[k] = v
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatTime is t in RFC 3339 (UTC), or "-" when unset.
func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}
