package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newSessionsCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions [PATTERN]",
		Short: "List the server's sessions, optionally by id glob",
		Long: `List the server's sessions, sorted by id, one per line. PATTERN is a glob on
ids ("*", "?", "[a-z]"). On a server with auth on this needs the operator
token the server was started with (serve --operator-token or
$VARBRIDGE_OPERATOR_TOKEN), passed as --token or $VARBRIDGE_TOKEN.
-o json prints one JSON object per session (protobuf field names).`,
		Example: `  varbridge sessions
  VARBRIDGE_TOKEN=$OPERATOR_TOKEN varbridge sessions 'job-*' -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pattern := ""
			if len(args) == 1 {
				pattern = args[0]
			}
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				resp, err := c.api.ListSessions(c.ctx(ctx), &varbridgev1.ListSessionsRequest{Pattern: pattern})
				if err != nil {
					err = opError("list sessions", err)
					if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
						return &hintError{err, "listing sessions on a server with auth on needs the operator token it was " +
							"started with (serve --operator-token or $VARBRIDGE_OPERATOR_TOKEN): pass it with --token or $" + envToken}
					}
					return err
				}
				if c.cfg.output == outProtoJSON {
					return c.printProtoJSON(resp)
				}
				for _, s := range resp.GetSessions() {
					if c.cfg.output == outJSON {
						b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(s)
						if err != nil {
							return err
						}
						_, err = fmt.Fprintf(c.out, "%s\n", b)
						if err != nil {
							return err
						}
						continue
					}
					if _, err := fmt.Fprintln(c.out, sessionLine(s)); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	return cmd
}
