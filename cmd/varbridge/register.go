package main

import (
	"context"
	"fmt"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newRegisterCmd(g *globalOptions) *cobra.Command {
	var (
		c              varbridgev1.Constraints
		choices        []string
		allowedModules []string
		shape          []int64
		meta           []string
		source         string
	)
	cmd := &cobra.Command{
		Use:   "register NAME TYPE VALUE",
		Short: "Register a typed variable in the session",
		Long: `Register a typed variable with an initial value, optionally constrained.
The session is created first when it does not exist.

TYPE is one of ` + values.TypeList() + `.
VALUE is parsed per TYPE: integers exactly as int64, floats as Go floats (nan
and inf accepted), booleans as true/false, embeddings as a JSON array of
numbers, tensors as JSON {"shape":[2,2],"dtype":"float32","data":[1,2,3,4]}
(shape may be left out when data is nested, dtype when --dtype is given).`,
		Example: `  varbridge register temperature float 0.7 --min 0 --max 2
  varbridge register model choice gpt-4 --choices gpt-4,claude,llama
  varbridge register max_tokens integer 256 --min 1 --max 4096
  varbridge register query_vec embedding '[0.1,0.2,0.3]' --dimensions 3
  varbridge register weights tensor '[[1,2],[3,4]]' --dtype float32 --shape 2,2`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, typeText, valueText := args[0], args[1], args[2]
			t, err := values.ParseType(typeText)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			cons := proto.Clone(&c).(*varbridgev1.Constraints)
			// Optional fields are sent only when their flag is given.
			if !f.Changed("min") {
				cons.Min = nil
			}
			if !f.Changed("max") {
				cons.Max = nil
			}
			if !f.Changed("min-length") {
				cons.MinLength = nil
			}
			if !f.Changed("max-length") {
				cons.MaxLength = nil
			}
			if !f.Changed("pattern") {
				cons.Pattern = nil
			}
			if !f.Changed("dimensions") {
				cons.Dimensions = nil
			}
			if !f.Changed("dtype") {
				cons.Dtype = nil
			}
			cons.Choices = choices
			cons.AllowedModules = allowedModules
			cons.Shape = shape
			value, err := values.ParseValue(t, valueText, cons)
			if err != nil {
				return fmt.Errorf("value for %s %q: %w", values.TypeName(t), name, err)
			}
			md, err := parseMeta(meta)
			if err != nil {
				return err
			}
			return g.run(cmd, createSession, func(ctx context.Context, cl *client) error {
				resp, err := cl.api.RegisterVariable(cl.ctx(ctx), &varbridgev1.RegisterVariableRequest{
					SessionId:    cl.session,
					Name:         name,
					Type:         t,
					InitialValue: value,
					Constraints:  cons,
					Metadata:     md,
					Source:       source,
				})
				if err != nil {
					return opError("register "+strconv.Quote(name), err)
				}
				return cl.printVariable(resp.GetVariable(), resp, "")
			})
		},
	}
	g.clientFlags(cmd, outText, outJSON, outProtoJSON)
	f := cmd.Flags()
	c.Min, c.Max = new(float64), new(float64)
	c.MinLength, c.MaxLength, c.Dimensions = new(int64), new(int64), new(int64)
	c.Pattern, c.Dtype = new(string), new(string)
	f.Float64Var(c.Min, "min", 0, "minimum (inclusive) of an integer or float")
	f.Float64Var(c.Max, "max", 0, "maximum (inclusive) of an integer or float")
	f.Int64Var(c.MinLength, "min-length", 0, "minimum length of a string")
	f.Int64Var(c.MaxLength, "max-length", 0, "maximum length of a string")
	f.StringVar(c.Pattern, "pattern", "", "RE2 pattern a string must match (anchor with ^$)")
	f.StringSliceVar(&choices, "choices", nil, "allowed values of a choice (comma-separated or repeated)")
	f.StringSliceVar(&allowedModules, "allowed-modules", nil, "allowed values of a module (comma-separated or repeated)")
	f.Int64Var(c.Dimensions, "dimensions", 0, "exact length of an embedding")
	f.Int64SliceVar(&shape, "shape", nil, "exact shape of a tensor, e.g. 2,3 (-1: any size on that axis)")
	f.StringVar(c.Dtype, "dtype", "", "exact dtype of a tensor ("+values.DtypeList+")")
	f.StringArrayVar(&meta, "meta", nil, "metadata key=value (repeatable)")
	f.StringVar(&source, "source", "cli", "who registers it")
	return cmd
}
