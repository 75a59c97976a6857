package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newGetCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID_OR_NAME...",
		Short: "Read variables by id or name",
		Long: `Read one or more variables by id or name. Several are read together at one
revision; any that do not exist are reported and the command fails.`,
		Example: `  varbridge get temperature
  varbridge get temperature model --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, true, func(ctx context.Context, c *client) error {
				if len(args) == 1 {
					resp, err := c.api.GetVariable(c.ctx(ctx), &varbridgev1.GetVariableRequest{
						SessionId:          c.session,
						VariableIdentifier: args[0],
					})
					if err != nil {
						return opError("get "+strconv.Quote(args[0]), err)
					}
					if g.json {
						return c.printJSON(resp)
					}
					_, err = fmt.Fprintln(c.out, variableLine(resp.GetVariable()))
					return err
				}
				resp, err := c.api.GetVariables(c.ctx(ctx), &varbridgev1.GetVariablesRequest{
					SessionId:           c.session,
					VariableIdentifiers: args,
				})
				if err != nil {
					return opError("get", err)
				}
				if g.json {
					if err := c.printJSON(resp); err != nil {
						return err
					}
				} else {
					// In the order asked for; an identifier given twice prints twice.
					for _, id := range args {
						if v, ok := resp.GetVariables()[id]; ok {
							if _, err := fmt.Fprintln(c.out, variableLine(v)); err != nil {
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
}
