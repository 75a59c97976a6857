package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newGetCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get ID_OR_NAME...",
		Short: "Read variables by id or name",
		Long: `Read one or more variables by id or name. Several are read together at one
revision; any that do not exist are reported and the command fails. The
session must exist (get never creates it).

Values are printed whole: what get prints as value= can be passed back to set.
-o json prints one JSON object per variable (name, id, type, value, version,
revision, source, metadata, updated_at) with the value decoded: a number, a
string, a boolean, a list of numbers (embedding) or
{"shape":[...],"dtype":"...","data":"<base64>"} (tensor), as list and watch do.
-o protojson prints the response message as protobuf JSON.`,
		Example: `  varbridge get temperature
  varbridge get temperature model -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, existingSession, func(ctx context.Context, c *client) error {
				if len(args) == 1 {
					resp, err := c.api.GetVariable(c.ctx(ctx), &varbridgev1.GetVariableRequest{
						SessionId:          c.session,
						VariableIdentifier: args[0],
					})
					if err != nil {
						return opError("get "+strconv.Quote(args[0]), err)
					}
					return c.printVariable(resp.GetVariable(), resp, "")
				}
				resp, err := c.api.GetVariables(c.ctx(ctx), &varbridgev1.GetVariablesRequest{
					SessionId:           c.session,
					VariableIdentifiers: args,
				})
				if err != nil {
					return opError("get", err)
				}
				if c.cfg.output == outProtoJSON {
					if err := c.printProtoJSON(resp); err != nil {
						return err
					}
				} else {
					// In the order asked for; an identifier given twice prints twice.
					for _, id := range args {
						if v, ok := resp.GetVariables()[id]; ok {
							if err := c.printVariable(v, nil, ""); err != nil {
								return err
							}
						}
					}
				}
				if missing := resp.GetMissing(); len(missing) > 0 {
					return status.Errorf(codes.NotFound, "no variable named %s in session %q",
						strings.Join(missing, ", "), c.session)
				}
				return nil
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	return cmd
}
