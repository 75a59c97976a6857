package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
)

// drainTimeout is how long a stopping server lets unary calls finish before
// it cuts the remaining streams (watches never finish by themselves).
const drainTimeout = 2 * time.Second

func newServeCmd() *cobra.Command {
	var (
		listen    string
		logLevel  string
		so        store.Options
		kaTime    time.Duration
		kaTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the varbridge server (in-memory store)",
		Long: `Run the varbridge gRPC server with an in-memory store.

It serves varbridge.v1.BridgeService, grpc.health.v1.Health and server
reflection, so "grpcurl -plaintext ADDR list" works. SIGINT or SIGTERM stop it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			st := store.New(so)
			defer st.Close()
			g := server.New(st, server.WithLogger(log), server.WithKeepalive(kaTime, kaTimeout)).GRPCServer()

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			served := make(chan error, 1)
			go func() { served <- g.Serve(lis) }()
			log.Info("varbridge serving", "addr", lis.Addr().String())
			// Scripts read this line to learn the port when --listen ends in :0.
			fmt.Fprintf(cmd.OutOrStdout(), "listening on %s\n", lis.Addr())

			select {
			case err := <-served:
				return err
			case <-ctx.Done():
			}
			log.Info("stopping")
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(drainTimeout):
				g.Stop()
				<-stopped
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:50051", "address to listen on")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&so.TTL, "session-ttl", store.DefaultTTL, "idle time before a session expires")
	f.IntVar(&so.HistoryLimit, "history-limit", store.DefaultHistoryLimit, "changes kept per session for watch resume")
	f.DurationVar(&so.HistoryAge, "history-age", store.DefaultHistoryAge, "oldest change kept for watch resume")
	f.Int64Var(&so.HistoryBytes, "history-bytes", store.DefaultHistoryBytes, "approximate bytes of history kept per session")
	f.IntVar(&so.MaxSessions, "max-sessions", store.DefaultMaxSessions, "sessions the server holds")
	f.IntVar(&so.MaxVariables, "max-variables", store.DefaultMaxVariables, "variables per session")
	f.IntVar(&so.MaxWatches, "max-watches", store.DefaultMaxWatches, "watches per session")
	f.IntVar(&so.MaxWatchIdentifiers, "max-watch-identifiers", store.DefaultMaxWatchIdentifiers, "variables named by one watch")
	f.IntVar(&so.MaxValueBytes, "max-value-bytes", store.DefaultMaxValueBytes, "encoded size of one value")
	f.DurationVar(&kaTime, "keepalive-time", 30*time.Second, "ping an idle client after this long")
	f.DurationVar(&kaTimeout, "keepalive-timeout", 10*time.Second, "drop a client that does not answer a ping within this")
	return cmd
}
