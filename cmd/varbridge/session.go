package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newSessionCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Create, inspect, keep alive or remove a session",
		Long: `Manage sessions. Each subcommand acts on the session named by its SESSION_ID
argument when given, else by --session ($VARBRIDGE_SESSION).`,
	}
	cmd.AddCommand(newSessionInitCmd(g), newSessionGetCmd(g), newSessionHeartbeatCmd(g), newSessionCleanupCmd(g))
	return cmd
}

// sessionArg is the SESSION_ID argument when given, else the resolved --session.
func sessionArg(c *client, args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return c.session
}

// printSession writes a session response: a line of text, one line of
// protobuf JSON with the proto's field names (-o json), or indented protobuf
// JSON (-o protojson).
func (c *client) printSession(resp proto.Message, text string) error {
	switch c.cfg.output {
	case outProtoJSON:
		return c.printProtoJSON(resp)
	case outJSON:
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.out, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(c.out, text)
	return err
}

func newSessionInitCmd(g *globalOptions) *cobra.Command {
	var (
		ttl  time.Duration
		meta []string
	)
	cmd := &cobra.Command{
		Use:   "init [SESSION_ID]",
		Short: "Create a session, or get it if it exists",
		Long: `Create a session, or get it if it exists. An empty SESSION_ID (--session "")
lets the server generate one. On a server with auth on (serve --require-auth)
a newly created session's token is printed (token=...); every later command
on the session needs it: pass it with --token or $VARBRIDGE_TOKEN.`,
		Example: `  varbridge session init work --ttl 10m
  export VARBRIDGE_TOKEN=$(varbridge session init work -o json | jq -r .session_token)`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := parseMeta(meta)
			if err != nil {
				return err
			}
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				id := sessionArg(c, args)
				req := &varbridgev1.InitializeSessionRequest{SessionId: id, Metadata: md}
				if ttl > 0 {
					req.Ttl = durationpb.New(ttl)
				}
				resp, err := c.api.InitializeSession(c.ctx(ctx), req)
				if err != nil {
					if c.token == "" && status.Code(err) == codes.AlreadyExists {
						return &hintError{opError("initialize session "+strconv.Quote(id), err),
							"the session exists and only its creator got its token; pass that token with --token or $" + envToken}
					}
					return opError("initialize session "+strconv.Quote(id), err)
				}
				line := sessionLine(resp.GetSession()) + fmt.Sprintf(" created=%t", resp.GetCreated())
				if tok := resp.GetSessionToken(); tok != "" {
					line += " token=" + tok
				}
				return c.printSession(resp, line)
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session time to live (0: the server default, 1h)")
	cmd.Flags().StringArrayVar(&meta, "meta", nil, "session metadata key=value (repeatable)")
	return cmd
}

func newSessionGetCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get [SESSION_ID]",
		Short: "Describe a session (does not extend its TTL)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				id := sessionArg(c, args)
				resp, err := c.api.GetSession(c.ctx(ctx), &varbridgev1.GetSessionRequest{SessionId: id})
				if err != nil {
					return opError("get session "+strconv.Quote(id), err)
				}
				return c.printSession(resp, sessionLine(resp.GetSession()))
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	return cmd
}

func newSessionHeartbeatCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "heartbeat [SESSION_ID]",
		Short: "Extend a session's TTL",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				id := sessionArg(c, args)
				resp, err := c.api.Heartbeat(c.ctx(ctx), &varbridgev1.HeartbeatRequest{SessionId: id})
				if err != nil {
					return opError("heartbeat session "+strconv.Quote(id), err)
				}
				return c.printSession(resp, sessionLine(resp.GetSession()))
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	return cmd
}

func newSessionCleanupCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cleanup [SESSION_ID]",
		Short: "Remove a session and its variables, ending its watch streams",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				id := sessionArg(c, args)
				resp, err := c.api.CleanupSession(c.ctx(ctx), &varbridgev1.CleanupSessionRequest{SessionId: id})
				if err != nil {
					return opError("cleanup session "+strconv.Quote(id), err)
				}
				return c.printSession(resp, fmt.Sprintf("session=%s removed variables_removed=%d",
					quoteIfNeeded(id), resp.GetVariablesRemoved()))
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	return cmd
}

// sessionLine is the readable one-line form of a session.
func sessionLine(s *varbridgev1.Session) string {
	var b strings.Builder
	fmt.Fprintf(&b, "session=%s revision=%d variables=%d watches=%d",
		quoteIfNeeded(s.GetSessionId()), s.GetRevision(), s.GetVariableCount(), s.GetWatchCount())
	if s.GetIncarnation() != "" {
		fmt.Fprintf(&b, " incarnation=%s", s.GetIncarnation())
	}
	if s.GetTtl() != nil {
		fmt.Fprintf(&b, " ttl=%s", s.GetTtl().AsDuration())
	}
	fmt.Fprintf(&b, " created_at=%s expires_at=%s", formatTime(s.GetCreatedAt()), formatTime(s.GetExpiresAt()))
	for _, k := range sortedKeys(s.GetMetadata()) {
		fmt.Fprintf(&b, " meta.%s=%s", k, quoteIfNeeded(s.GetMetadata()[k]))
	}
	return b.String()
}
