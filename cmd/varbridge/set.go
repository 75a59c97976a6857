package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newSetCmd(g *globalOptions) *cobra.Command {
	var (
		expectedVersion int64
		meta            []string
		source          string
		batch           bool
	)
	cmd := &cobra.Command{
		Use:   "set ID_OR_NAME VALUE | set --batch ID_OR_NAME=VALUE...",
		Short: "Write a variable, or several atomically",
		Long: `Write a variable's value. VALUE is parsed per the variable's type (see
'varbridge register --help'). Writing the value it already has changes nothing.

--expected-version makes the write a compare-and-set: it applies only when the
variable is at that version, and fails with FailedPrecondition otherwise.

--batch writes several variables atomically at one revision: all or nothing.

The session is created first when it does not exist (the variable still has
to be registered).`,
		Example: `  varbridge set temperature 0.9
  varbridge set temperature 1.1 --expected-version 2 --meta reason=tuning
  varbridge set --batch temperature=0.5 model=claude`,
		Args: func(cmd *cobra.Command, args []string) error {
			if batch {
				return cobra.MinimumNArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := parseMeta(meta)
			if err != nil {
				return err
			}
			if batch {
				if cmd.Flags().Changed("expected-version") {
					return errors.New("--expected-version applies to one variable; it cannot be used with --batch")
				}
				updates, err := parseBatchArgs(args)
				if err != nil {
					return err
				}
				return g.run(cmd, createSession, func(ctx context.Context, c *client) error {
					return setBatch(ctx, c, updates, md, source)
				})
			}
			ident, text := args[0], args[1]
			return g.run(cmd, createSession, func(ctx context.Context, c *client) error {
				cur, err := c.api.GetVariable(c.ctx(ctx), &varbridgev1.GetVariableRequest{
					SessionId:          c.session,
					VariableIdentifier: ident,
				})
				if err != nil {
					return opError("set "+strconv.Quote(ident), err)
				}
				v := cur.GetVariable()
				value, err := values.ParseValue(v.GetType(), text, v.GetConstraints())
				if err != nil {
					return fmt.Errorf("value for %s %q: %w", values.TypeName(v.GetType()), v.GetName(), err)
				}
				req := &varbridgev1.SetVariableRequest{
					SessionId:          c.session,
					VariableIdentifier: ident,
					Value:              value,
					Metadata:           md,
					Source:             source,
				}
				if cmd.Flags().Changed("expected-version") {
					req.ExpectedVersion = &expectedVersion
				}
				resp, err := c.api.SetVariable(c.ctx(ctx), req)
				if err != nil {
					return opError("set "+strconv.Quote(ident), err)
				}
				suffix := ""
				if !resp.GetChanged() {
					suffix = " (unchanged)"
				}
				return c.printVariable(resp.GetVariable(), resp, suffix)
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	f := cmd.Flags()
	f.Int64Var(&expectedVersion, "expected-version", 0, "write only if the variable is at this version (compare-and-set)")
	f.StringArrayVar(&meta, "meta", nil, "writer's metadata key=value, delivered to watchers (repeatable)")
	f.StringVar(&source, "source", "cli", "who writes")
	f.BoolVar(&batch, "batch", false, "arguments are ID_OR_NAME=VALUE pairs written atomically")
	return cmd
}

// batchUpdate is one ID_OR_NAME=VALUE argument of `set --batch`.
type batchUpdate struct {
	ident, text string
}

// parseBatchArgs splits ID_OR_NAME=VALUE arguments at the first '='.
func parseBatchArgs(args []string) ([]batchUpdate, error) {
	seen := make(map[string]bool, len(args))
	updates := make([]batchUpdate, 0, len(args))
	for _, a := range args {
		ident, text, ok := strings.Cut(a, "=")
		if !ok || ident == "" {
			return nil, fmt.Errorf("--batch argument %q: want ID_OR_NAME=VALUE", a)
		}
		if seen[ident] {
			return nil, fmt.Errorf("--batch: %q is given twice", ident)
		}
		seen[ident] = true
		updates = append(updates, batchUpdate{ident: ident, text: text})
	}
	return updates, nil
}

func setBatch(ctx context.Context, c *client, updates []batchUpdate, md map[string]string, source string) error {
	idents := make([]string, len(updates))
	for i, u := range updates {
		idents[i] = u.ident
	}
	cur, err := c.api.GetVariables(c.ctx(ctx), &varbridgev1.GetVariablesRequest{
		SessionId:           c.session,
		VariableIdentifiers: idents,
	})
	if err != nil {
		return opError("set --batch", err)
	}
	if missing := cur.GetMissing(); len(missing) > 0 {
		return opError("set --batch", status.Errorf(codes.NotFound,
			"no variable named %s in session %q", strings.Join(missing, ", "), c.session))
	}
	vals := make(map[string]*varbridgev1.Value, len(updates))
	for _, u := range updates {
		v := cur.GetVariables()[u.ident]
		value, err := values.ParseValue(v.GetType(), u.text, v.GetConstraints())
		if err != nil {
			return fmt.Errorf("value for %s %q: %w", values.TypeName(v.GetType()), v.GetName(), err)
		}
		vals[u.ident] = value
	}
	resp, err := c.api.SetVariables(c.ctx(ctx), &varbridgev1.SetVariablesRequest{
		SessionId: c.session,
		Updates:   vals,
		Metadata:  md,
		Source:    source,
	})
	if err != nil {
		return opError("set --batch", err)
	}
	if c.cfg.output == outProtoJSON {
		return c.printProtoJSON(resp)
	}
	changed := make(map[string]bool, len(resp.GetChanged()))
	for _, id := range resp.GetChanged() {
		changed[id] = true
	}
	for _, u := range updates {
		suffix := ""
		if !changed[u.ident] {
			suffix = " (unchanged)"
		}
		if err := c.printVariable(resp.GetVariables()[u.ident], nil, suffix); err != nil {
			return err
		}
	}
	if c.cfg.output == outJSON {
		return nil // each line carries the revision
	}
	_, err = fmt.Fprintf(c.out, "revision=%d changed=%d\n", resp.GetRevision(), len(resp.GetChanged()))
	return err
}
