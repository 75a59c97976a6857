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
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

// globalOptions are the root command's persistent flags, shared by every
// client subcommand.
type globalOptions struct {
	addr    string
	session string
	json    bool
	timeout time.Duration
	token   string
}

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
	root := &cobra.Command{
		Use:   "varbridge",
		Short: "Typed, session-scoped variables shared between Go and Python over gRPC",
		Long: `varbridge serves sessions of typed variables over gRPC, and reads and writes
them from the command line.

Client commands act on the session named by --session, creating it first if it
does not exist, on the server at --addr.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", "127.0.0.1:50051", "server address (host:port)")
	pf.StringVar(&g.session, "session", "default", "session id")
	pf.BoolVar(&g.json, "json", false, "print responses as protobuf JSON")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline for the whole command (0: none)")
	pf.StringVar(&g.token, "token", "",
		"session token sent as 'authorization: Bearer <token>' (default $VARBRIDGE_TOKEN)")

	root.AddCommand(
		newServeCmd(),
		newRegisterCmd(g),
		newGetCmd(g),
		newSetCmd(g),
		newListCmd(g),
		newWatchCmd(g),
		newSessionCmd(g),
	)
	return root
}

// printError writes err to w; a gRPC status shows its code and message.
func printError(w io.Writer, err error) {
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
