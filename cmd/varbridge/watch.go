package main

import (
	"context"
	"fmt"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/internal/jsonview"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
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

The session must exist (watch never creates it). When the server lost the
session (restarted without it, or it was cleaned up and created again) the
watch says so: it prints every watched variable's current value as a resync
line and goes on, or fails if the session or a variable is gone.

Each line reads
  revision=3 update=change name=temperature old=0.7 new=0.9 type=float source=tuner
with values whole; with -o json it is one JSON object per line with the
fields revision, update (initial, change, resync or deleted), identifier,
name, id, type, old, new, version, source, metadata and timestamp, values
decoded as get -o json prints them. --initial prints the current values
first (default: off). --timeout applies to connecting only; the watch itself
has no deadline.`,
		Example: `  varbridge watch temperature model
  varbridge watch --initial -o json
  varbridge watch temperature --where 'new > 1.0'
  varbridge watch temperature --from-revision 42`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWatch(cmd, g, f, args)
		},
	}
	g.clientFlags(cmd, outText, outJSON)
	fl := cmd.Flags()
	fl.Int64Var(&f.fromRevision, "from-revision", 0, "resume: print every update from this revision on (inclusive)")
	fl.StringVar(&f.where, "where", "", "server-side CEL filter over old, new, name and metadata")
	fl.BoolVar(&f.initial, "initial", false, "print each variable's current value first")
	fl.BoolVar(&f.coalesce, "coalesce", false, "when behind, print only the latest value per variable")
	fl.DurationVar(&f.heartbeat, "heartbeat", 0, "server heartbeat interval (0: the server's default)")
	return cmd
}

// runWatch tails updates to cmd's output until its context ends (nil) or the
// watch fails. It goes through the Go client library, dialed from the same
// client configuration as the unary commands.
func runWatch(cmd *cobra.Command, g *globalOptions, f watchFlags, idents []string) error {
	cc, err := g.resolve(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	out := cmd.OutOrStdout()
	connCtx := ctx
	if cc.timeout > 0 {
		var cancel context.CancelFunc
		connCtx, cancel = context.WithTimeout(ctx, cc.timeout)
		defer cancel()
	}
	// Watching never creates the session: NewBridgedState would (it
	// initializes), so make sure first that it exists.
	if err := checkSession(connCtx, cc, cmd); err != nil {
		return err
	}
	// Failures are returned and printed; the library's log would repeat them.
	opts := append(cc.stateOptions(), varbridge.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	state, err := varbridge.NewBridgedState(connCtx, cc.addr, opts...)
	if err != nil {
		return opError("connect to "+cc.addr, err)
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
	for u := range ch {
		if u.Err != nil {
			return opError("watch", u.Err)
		}
		if cc.output == outJSON {
			err = printJSONLine(out, updateJSON(u))
		} else {
			_, err = fmt.Fprintln(out, updateLine(u))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkSession fails, NotFound naming it, when the session does not exist,
// and says how to get a token when the server wants one.
func checkSession(ctx context.Context, cc *clientConfig, cmd *cobra.Command) error {
	conn, err := cc.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &client{cfg: cc, conn: conn, api: varbridgev1.NewBridgeServiceClient(conn), session: cc.session,
		token: cc.token, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
	_, err = c.api.GetSession(c.ctx(ctx), &varbridgev1.GetSessionRequest{SessionId: c.session})
	return c.hint(opError("watch", err))
}

// updateLine is the readable one-line form of an update.
func updateLine(u varbridge.Update) string {
	m := u.Meta
	var b strings.Builder
	fmt.Fprintf(&b, "revision=%d update=%s name=%s", m.Revision, jsonview.Kind(m), quoteIfNeeded(m.Name))
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
	return values.FormatValue(pv)
}
