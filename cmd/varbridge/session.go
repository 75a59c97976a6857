package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newSessionCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Create, inspect, keep alive or remove a session",
		Long: `Manage sessions. Each subcommand acts on the session named by --session, or by
its SESSION_ID argument when given.`,
	}
	cmd.AddCommand(newSessionInitCmd(g), newSessionGetCmd(g), newSessionHeartbeatCmd(g), newSessionCleanupCmd(g))
	return cmd
}

// sessionArg is the SESSION_ID argument when given, else --session.
func sessionArg(g *globalOptions, args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return g.session
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
lets the server generate one. With auth on, a newly created session's token is
printed; pass it to later commands with --token or $VARBRIDGE_TOKEN.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := parseMeta(meta)
			if err != nil {
				return err
			}
			id := sessionArg(g, args)
			return g.run(cmd, false, func(ctx context.Context, c *client) error {
				req := &varbridgev1.InitializeSessionRequest{SessionId: id, Metadata: md}
				if ttl > 0 {
					req.Ttl = durationpb.New(ttl)
				}
				resp, err := c.api.InitializeSession(c.ctx(ctx), req)
				if err != nil {
					return opError("initialize session "+strconv.Quote(id), err)
				}
				if g.json {
					return c.printJSON(resp)
				}
				line := sessionLine(resp.GetSession()) + fmt.Sprintf(" created=%t", resp.GetCreated())
				if tok := resp.GetSessionToken(); tok != "" {
					line += " token=" + tok
				}
				_, err = fmt.Fprintln(c.out, line)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session time to live (0: the server default, 1h)")
	cmd.Flags().StringArrayVar(&meta, "meta", nil, "session metadata key=value (repeatable)")
	return cmd
}

func newSessionGetCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get [SESSION_ID]",
		Short: "Describe a session (does not extend its TTL)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := sessionArg(g, args)
			return g.run(cmd, false, func(ctx context.Context, c *client) error {
				resp, err := c.api.GetSession(c.ctx(ctx), &varbridgev1.GetSessionRequest{SessionId: id})
				if err != nil {
					return opError("get session "+strconv.Quote(id), err)
				}
				if g.json {
					return c.printJSON(resp)
				}
				_, err = fmt.Fprintln(c.out, sessionLine(resp.GetSession()))
				return err
			})
		},
	}
}

func newSessionHeartbeatCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "heartbeat [SESSION_ID]",
		Short: "Extend a session's TTL",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := sessionArg(g, args)
			return g.run(cmd, false, func(ctx context.Context, c *client) error {
				resp, err := c.api.Heartbeat(c.ctx(ctx), &varbridgev1.HeartbeatRequest{SessionId: id})
				if err != nil {
					return opError("heartbeat session "+strconv.Quote(id), err)
				}
				if g.json {
					return c.printJSON(resp)
				}
				_, err = fmt.Fprintln(c.out, sessionLine(resp.GetSession()))
				return err
			})
		},
	}
}

func newSessionCleanupCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup [SESSION_ID]",
		Short: "Remove a session and its variables, ending its watch streams",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := sessionArg(g, args)
			return g.run(cmd, false, func(ctx context.Context, c *client) error {
				resp, err := c.api.CleanupSession(c.ctx(ctx), &varbridgev1.CleanupSessionRequest{SessionId: id})
				if err != nil {
					return opError("cleanup session "+strconv.Quote(id), err)
				}
				if g.json {
					return c.printJSON(resp)
				}
				_, err = fmt.Fprintf(c.out, "session=%s removed variables_removed=%d\n",
					quoteIfNeeded(id), resp.GetVariablesRemoved())
				return err
			})
		},
	}
}

// sessionLine is the readable one-line form of a session.
func sessionLine(s *varbridgev1.Session) string {
	var b strings.Builder
	fmt.Fprintf(&b, "session=%s revision=%d variables=%d watches=%d",
		quoteIfNeeded(s.GetSessionId()), s.GetRevision(), s.GetVariableCount(), s.GetWatchCount())
	if s.GetTtl() != nil {
		fmt.Fprintf(&b, " ttl=%s", s.GetTtl().AsDuration())
	}
	fmt.Fprintf(&b, " created_at=%s expires_at=%s", formatTime(s.GetCreatedAt()), formatTime(s.GetExpiresAt()))
	for _, k := range sortedKeys(s.GetMetadata()) {
		fmt.Fprintf(&b, " meta.%s=%s", k, quoteIfNeeded(s.GetMetadata()[k]))
	}
	return b.String()
}
