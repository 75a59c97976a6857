// Command varbridge serves varbridge sessions and reads and writes their
// variables from the command line, in the manner of etcdctl.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		printError(os.Stderr, err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	g := &globalOptions{}
	b := metrics.ReadBuildInfo()
	root := &cobra.Command{
		Use:   "varbridge",
		Short: "Typed, session-scoped variables shared between Go and Python over gRPC",
		Long: `varbridge serves sessions of typed variables over gRPC, and reads and writes
them from the command line.

Client commands act on the session named by --session ($VARBRIDGE_SESSION) on
the server at --addr ($VARBRIDGE_ADDR); flags win over the environment. Only
register, set and "session init" create a session; get, list, watch and
delete fail with NotFound when it does not exist.`,
		Version:       b.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate(fmt.Sprintf("varbridge {{.Version}} (%s, revision %s)\n", b.GoVersion, b.Revision))
	// --json before the subcommand name ("varbridge --json get x") must be
	// known to the root, or cobra takes the next word for its value; it is
	// hidden, and serve ignores it.
	root.PersistentFlags().BoolVar(&g.legacyJSON, "json", false,
		"same as -o protojson (watch: -o json); kept for existing scripts")
	_ = root.PersistentFlags().MarkHidden("json")

	root.AddCommand(
		newServeCmd(),
		newSnapshotCmd(g),
		newRegisterCmd(g),
		newGetCmd(g),
		newSetCmd(g),
		newDeleteCmd(g),
		newListCmd(g),
		newWatchCmd(g),
		newSessionCmd(g),
		newSessionsCmd(g),
	)
	return root
}

// printError writes err to w; a gRPC status shows its code and message, and
// a hint, when the CLI has one, follows on its own line.
func printError(w io.Writer, err error) {
	var he *hintError
	hint := ""
	if errors.As(err, &he) {
		hint = he.hint
	}
	defer func() {
		if hint != "" {
			fmt.Fprintf(w, "Hint: %s\n", hint)
		}
	}()
	var ce *cmdError
	if errors.As(err, &ce) {
		if st, ok := status.FromError(ce.err); ok {
			fmt.Fprintf(w, "Error: %s: %s: %s\n", ce.op, st.Code(), st.Message())
			return
		}
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(w, "Error: %s: %s\n", st.Code(), st.Message())
		return
	}
	fmt.Fprintf(w, "Error: %v\n", err)
}

// cmdError names the operation that failed with a (gRPC) error.
type cmdError struct {
	op  string
	err error
}

func (e *cmdError) Error() string { return e.op + ": " + e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

// opError wraps err, which may be a gRPC status, with the operation that failed.
func opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &cmdError{op: op, err: err}
}

// hintError is an error with advice on what to do about it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
