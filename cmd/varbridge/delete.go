package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newDeleteCmd(g *globalOptions) *cobra.Command {
	var (
		meta   []string
		source string
	)
	cmd := &cobra.Command{
		Use:   "delete ID_OR_NAME...",
		Short: "Delete variables by id or name",
		Long: `Delete one or more variables by id or name, one after the other; watchers get
a deleted update for each. It prints each deleted variable as it was, and
stops at the first that does not exist (NotFound). The session must exist
(delete never creates it).`,
		Example: `  varbridge delete temperature
  varbridge delete var_91af3680431a753e --meta reason=cleanup`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := parseMeta(meta)
			if err != nil {
				return err
			}
			return g.run(cmd, existingSession, func(ctx context.Context, c *client) error {
				for _, ident := range args {
					resp, err := c.api.DeleteVariable(c.ctx(ctx), &varbridgev1.DeleteVariableRequest{
						SessionId: c.session, VariableIdentifier: ident, Metadata: md, Source: source,
					})
					if err != nil {
						return opError("delete "+strconv.Quote(ident), err)
					}
					if err := c.printVariable(resp.GetVariable(), resp, " (deleted)"); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	f := cmd.Flags()
	f.StringArrayVar(&meta, "meta", nil, "metadata key=value delivered to watchers with the deletion (repeatable)")
	f.StringVar(&source, "source", "cli", "who deletes")
	return cmd
}
