package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newListCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list [PATTERN]",
		Short: "List the session's variables, optionally by name glob",
		Long: `List the session's variables, sorted by name. PATTERN is a glob on names
("*", "?", "[a-z]"); without it every variable is listed.`,
		Example: `  varbridge list
  varbridge list 'temp*' --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pattern := ""
			if len(args) == 1 {
				pattern = args[0]
			}
			return g.run(cmd, true, func(ctx context.Context, c *client) error {
				resp, err := c.api.ListVariables(c.ctx(ctx), &varbridgev1.ListVariablesRequest{
					SessionId: c.session,
					Pattern:   pattern,
				})
				if err != nil {
					return opError("list", err)
				}
				if g.json {
					return c.printJSON(resp)
				}
				for _, v := range resp.GetVariables() {
					if _, err := fmt.Fprintln(c.out, variableLine(v)); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}
