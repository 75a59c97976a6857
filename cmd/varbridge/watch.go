package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/varbridge/varbridge"
)

// watchFlags are the watch command's own flags.
type watchFlags struct {
	fromRevision int64
	where        string
	initial      bool
	coalesce     bool
	heartbeat    time.Duration
}

func newWatchCmd(g *globalOptions) *cobra.Command {
	var f watchFlags
	cmd := &cobra.Command{
		Use:   "watch [ID_OR_NAME...]",
		Short: "Print variable updates as they happen, until interrupted",
		Long: `Watch variables by id or name (none: every variable in the session, including
ones registered later) and print one line per update until interrupted
(Ctrl-C). The watch goes through the same client as Go programs use: when the
connection breaks it reconnects and resumes exactly where it stopped, so no
update is missed or printed twice; after 10 consecutive failed attempts it
gives up with an error.

Each line reads
  revision=3 update=change name=temperature old=0.7 new=0.9 type=float source=tuner
and with --json it is one JSON object per line with the fields revision,
update (initial, change, resync or deleted), identifier, name, id, type, old,
new, version, source, metadata and timestamp. --timeout applies to connecting
only; the watch itself has no deadline.`,
		Example: `  varbridge watch temperature model
  varbridge watch --initial --json
  varbridge watch temperature --where 'new > 1.0'
  varbridge watch temperature --from-revision 42`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWatch(cmd.Context(), g, f, args, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.Int64Var(&f.fromRevision, "from-revision", 0, "resume: print every update from this revision on (inclusive)")
	fl.StringVar(&f.where, "where", "", "server-side CEL filter over old, new, name and metadata")
	fl.BoolVar(&f.initial, "initial", false, "print each variable's current value first")
	fl.BoolVar(&f.coalesce, "coalesce", false, "when behind, print only the latest value per variable")
	fl.DurationVar(&f.heartbeat, "heartbeat", 0, "server heartbeat interval (0: the server's default)")
	return cmd
}

// runWatch tails updates to out until ctx ends (nil) or the watch fails.
func runWatch(ctx context.Context, g *globalOptions, f watchFlags, idents []string, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	connCtx := ctx
	if g.timeout > 0 {
		var cancel context.CancelFunc
		connCtx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	opts := []varbridge.Option{
		varbridge.WithSessionID(g.session),
		// Failures are returned and printed; the library's log would repeat them.
		varbridge.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	if g.token != "" {
		opts = append(opts, varbridge.WithToken(g.token))
	}
	state, err := varbridge.NewBridgedState(connCtx, g.addr, opts...)
	if err != nil {
		return opError("connect to "+g.addr, err)
	}
	defer state.Close()

	wopts := []varbridge.WatchOption{
		varbridge.WithInitialValues(f.initial), varbridge.WithStartRevision(f.fromRevision),
		varbridge.WithWhere(f.where), varbridge.WithCoalesce(f.coalesce), varbridge.WithHeartbeat(f.heartbeat),
	}
	// The watch lives as long as ctx: --timeout bounded connecting only.
	ch, err := varbridge.Watch(ctx, state, idents, wopts...)
	if err != nil {
		return opError("watch", err)
	}
	enc := json.NewEncoder(out)
	for u := range ch {
		if u.Err != nil {
			return opError("watch", u.Err)
		}
		if g.json {
			err = enc.Encode(updateJSON(u))
		} else {
			_, err = fmt.Fprintln(out, updateLine(u))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func updateKind(m varbridge.UpdateMeta) string {
	switch {
	case m.Initial:
		return "initial"
	case m.Resync:
		return "resync"
	case m.Deleted:
		return "deleted"
	}
	return "change"
}

// updateLine is the readable one-line form of an update.
func updateLine(u varbridge.Update) string {
	m := u.Meta
	var b strings.Builder
	fmt.Fprintf(&b, "revision=%d update=%s name=%s", m.Revision, updateKind(m), quoteIfNeeded(m.Name))
	if u.Identifier != m.Name {
		fmt.Fprintf(&b, " identifier=%s", quoteIfNeeded(u.Identifier))
	}
	fmt.Fprintf(&b, " old=%s new=%s type=%s source=%s",
		quoteIfNeeded(readable(m.Type, u.Old)), quoteIfNeeded(readable(m.Type, u.New)), m.Type, quoteIfNeeded(m.Source))
	for _, k := range sortedKeys(m.Metadata) {
		if k != "source" {
			fmt.Fprintf(&b, " meta.%s=%s", k, quoteIfNeeded(m.Metadata[k]))
		}
	}
	return b.String()
}

// readable formats a value as the other commands do; "-" when there is none.
func readable(t varbridge.Type, v any) string {
	if v == nil {
		return "-"
	}
	pv, err := varbridge.ToProto(t, v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return FormatValue(pv, maxPrintedElems)
}

// watchLine is the --json form of an update.
type watchLine struct {
	Revision   int64             `json:"revision"`
	Update     string            `json:"update"`
	Identifier string            `json:"identifier"`
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Old        any               `json:"old"`
	New        any               `json:"new"`
	Version    int64             `json:"version"`
	Source     string            `json:"source"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Timestamp  string            `json:"timestamp,omitempty"`
}

func updateJSON(u varbridge.Update) watchLine {
	m := u.Meta
	l := watchLine{
		Revision: m.Revision, Update: updateKind(m), Identifier: u.Identifier, Name: m.Name, ID: m.VariableID,
		Type: string(m.Type), Old: jsonValue(u.Old), New: jsonValue(u.New), Version: m.Version,
		Source: m.Source, Metadata: maps.Clone(m.Metadata),
	}
	if !m.Timestamp.IsZero() {
		l.Timestamp = m.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return l
}

// jsonValue makes a value encodable: non-finite floats become the strings
// protobuf JSON uses ("NaN", "Infinity", "-Infinity"), a tensor its shape,
// dtype and base64 data.
func jsonValue(v any) any {
	switch x := v.(type) {
	case float64:
		return finiteJSON(x)
	case []float64:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = finiteJSON(f)
		}
		return out
	case varbridge.Tensor:
		return map[string]any{"shape": x.Shape, "dtype": x.DType, "data": base64.StdEncoding.EncodeToString(x.Data)}
	}
	return v
}

func finiteJSON(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}
