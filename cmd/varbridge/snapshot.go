package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/disk"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

func newSnapshotCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save a consistent copy of a running server's data",
		Args:  cobra.NoArgs,
	}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent copy of the server's data to FILE, while it serves",
		Long: `Save a consistent copy of a running server's data (as etcdctl snapshot save
does): every session, variable and the watch history at one moment, taken
while writes go on. "varbridge serve --restore FILE --data-dir NEW_DIR"
starts a server from it; its sessions come back with new incarnations, so
watchers that saw later revisions get a RESYNC rather than silence.

FILE appears whole or not at all (written to FILE.part, synced, renamed). On
a server with auth on (or an operator token) this needs the operator token,
passed as --token or $VARBRIDGE_TOKEN.`,
		Example: `  varbridge snapshot save backup.vbsnap
  varbridge serve --restore backup.vbsnap --data-dir ./restored.data`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			return g.run(cmd, noSession, func(ctx context.Context, c *client) error {
				n, err := saveSnapshot(c.ctx(ctx), c.api, path)
				if err != nil {
					err = opError("save snapshot", err)
					if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
						return &hintError{err, "saving a snapshot of a server with auth on needs the operator token it was " +
							"started with (serve --operator-token or $VARBRIDGE_OPERATOR_TOKEN): pass it with --token or $" + envToken}
					}
					return err
				}
				_, err = fmt.Fprintf(c.out, "saved a snapshot of %s to %s (%d bytes)\n", c.cfg.addr, path, n)
				return err
			})
		},
	}
	g.clientFlags(save)
	// A large copy takes longer than a call: no deadline unless asked.
	if f := save.Flags().Lookup("timeout"); f != nil {
		f.DefValue = "0s"
		_ = f.Value.Set("0s")
	}
	cmd.AddCommand(save)
	return cmd
}

// saveSnapshot streams the server's snapshot into path, whole or not at all.
func saveSnapshot(ctx context.Context, api varbridgev1.BridgeServiceClient, path string) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.SaveSnapshot(ctx, &varbridgev1.SaveSnapshotRequest{})
	if err != nil {
		return 0, err
	}
	var n int64
	err = disk.WriteFile(path, func(w io.Writer) error {
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			k, err := w.Write(chunk.GetData())
			n += int64(k)
			if err != nil {
				return err
			}
		}
	})
	return n, err
}
