package main

import (
	"context"

	"github.com/spf13/cobra"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newListCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [PATTERN]",
		Short: "List the session's variables, optionally by name glob",
		Long: `List the session's variables, sorted by name. PATTERN is a glob on names
("*", "?", "[a-z]"); without it every variable is listed. The session must
exist (list never creates it). -o json prints one JSON object per variable,
in the shape get prints.`,
		Example: `  varbridge list
  varbridge list 'temp*' -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pattern := ""
			if len(args) == 1 {
				pattern = args[0]
			}
			return g.run(cmd, existingSession, func(ctx context.Context, c *client) error {
				resp, err := c.api.ListVariables(c.ctx(ctx), &varbridgev1.ListVariablesRequest{
					SessionId: c.session,
					Pattern:   pattern,
				})
				if err != nil {
					return opError("list", err)
				}
				if c.cfg.output == outProtoJSON {
					return c.printProtoJSON(resp)
				}
				for _, v := range resp.GetVariables() {
					if err := c.printVariable(v, nil, ""); err != nil {
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
