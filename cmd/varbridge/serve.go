package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/varbridge/varbridge/internal/metrics"
	"github.com/varbridge/varbridge/internal/server"
	"github.com/varbridge/varbridge/internal/store"
)

// defaultDrainTimeout is how long a stopping server lets calls finish before
// it cuts the remaining streams (watches never finish by themselves).
const defaultDrainTimeout = 10 * time.Second

// envOperatorToken is read when --operator-token is not given, so the token
// need not appear in the process list.
const envOperatorToken = "VARBRIDGE_OPERATOR_TOKEN"

// newLogger makes the server's logger: text or JSON lines on w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func newServeCmd() *cobra.Command {
	var (
		listen    string
		logLevel  string
		logFormat string
		drain     time.Duration
		opToken   string
		so        store.Options
		kaTime    time.Duration
		kaTimeout time.Duration

		tlsCert, tlsKey string
		requireAuth     bool
		metricsListen   string
		limits          server.RequestLimits
		httpf           httpFlags // serve_http.go
		dataf           dataFlags // serve_data.go
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the varbridge server (data kept in --data-dir)",
		Long: `Run the varbridge gRPC server.

Data: sessions (with their incarnation, metadata, TTL, expiry deadline and
token hash), variables (every field, constraints included), revisions and
the watch history window are kept in --data-dir (default ./varbridge.data,
created when missing), so a restart or a crash loses no acknowledged write
and watchers resume where they were. --fsync says when a write is
acknowledged (always: once on disk; batch: once the OS has it, on disk
within 10 ms; never: once the OS has it). --memory keeps everything in
memory instead. A data directory that cannot be read is refused with the
file at fault; it is never started over empty. "varbridge snapshot save"
copies the data of a running server; --restore starts from such a copy.
A nearly full disk refuses writes (RESOURCE_EXHAUSTED, STORAGE_FULL) until
space is freed; reads and watches go on.

It serves varbridge.v1.BridgeService, grpc.health.v1.Health and server
reflection, so "grpcurl -plaintext ADDR list" works. SIGINT or SIGTERM stop it.

Security: --tls-cert and --tls-key serve TLS. --require-auth makes
InitializeSession return a session_token for each session it creates; every
later call on that session must send "authorization: Bearer <token>"
(missing: UNAUTHENTICATED; another session's token: PERMISSION_DENIED;
initializing an existing session without its token: ALREADY_EXISTS).

Limits (sessions, variables and watches per session, identifiers per watch,
value size, request size and metadata) fail with RESOURCE_EXHAUSTED or
INVALID_ARGUMENT naming the limit.

--operator-token (or $VARBRIDGE_OPERATOR_TOKEN) is the token ListSessions
("varbridge sessions") needs with auth on.

--metrics-listen serves Prometheus metrics on http://ADDR/metrics, with
varbridge_build_info{version,goversion,revision}.

Logs go to stderr as text or JSON lines (--log-format). At --log-level debug
every call gets one line: method, session, code and duration (never values
or tokens). Refused credentials (warn) and expired sessions (info) are
logged at most once per 10 s each.

On SIGINT or SIGTERM the server first reports NOT_SERVING on its health
service, then lets calls finish for up to --drain-timeout, then cuts what is
left (open watches, which reconnect elsewhere or when it is back).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			if drain < 0 {
				return fmt.Errorf("--drain-timeout must not be negative, got %s", drain)
			}
			if !cmd.Flags().Changed("operator-token") {
				opToken = os.Getenv(envOperatorToken)
			}
			sopts := []server.Option{
				server.WithLogger(log), server.WithKeepalive(kaTime, kaTimeout), server.WithRequestLimits(limits),
			}
			if (tlsCert == "") != (tlsKey == "") {
				return errors.New("--tls-cert and --tls-key go together")
			}
			if tlsCert != "" {
				cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
				if err != nil {
					return fmt.Errorf("--tls-cert/--tls-key: %w", err)
				}
				creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
				sopts = append(sopts, server.WithGRPCOptions(grpc.Creds(creds)))
			}
			if opToken != "" {
				sopts = append(sopts, server.WithOperatorToken(opToken))
			}
			if requireAuth {
				sopts = append(sopts, server.WithAuth())
				if tlsCert == "" {
					log.Warn("--require-auth without TLS: session tokens travel in plaintext")
				}
			}
			var m *metrics.Metrics
			var mlis net.Listener
			if metricsListen != "" {
				if mlis, err = net.Listen("tcp", metricsListen); err != nil {
					return fmt.Errorf("--metrics-listen %s: %w", metricsListen, err)
				}
				defer mlis.Close()
				m = metrics.New()
				sopts = append(sopts, server.WithMetrics(m))
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", listen, err)
			}
			// The store is made before the server that logs its expiries.
			var logExpired atomic.Pointer[server.Server]
			so.OnExpire = func(ids []string) {
				if srv := logExpired.Load(); srv != nil {
					srv.LogSessionsExpired(ids)
				}
			}
			// A where filter is judged against the sizes this server accepts.
			so.Filter.Compile.MaxMetadataEntries = uint64(limits.MaxMetadataEntries)
			so.Filter.Compile.MaxMetadataKeyBytes = uint64(limits.MaxMetadataKeyBytes)
			so.Filter.Compile.MaxMetadataValueBytes = uint64(limits.MaxMetadataValueBytes)
			eng, err := dataf.open(log, cmd.Flags().Changed) // serve_data.go
			if err != nil {
				return err
			}
			st, dopts, err := openStore(log, so, eng)
			if err != nil {
				return err
			}
			defer st.Close()
			srv := server.New(st, append(sopts, dopts...)...)
			logExpired.Store(srv)
			g := srv.GRPCServer()
			if m != nil {
				hs := m.NewHTTPServer()
				go func() {
					if err := hs.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error("metrics server stopped", "err", err)
					}
				}()
				defer func() {
					ctx, cancel := context.WithTimeout(context.Background(), drain)
					defer cancel()
					_ = hs.Shutdown(ctx)
				}()
				log.Info("metrics serving", "url", "http://"+mlis.Addr().String()+"/metrics")
				// Scripts read this line to learn the port when --metrics-listen ends in :0.
				fmt.Fprintf(cmd.OutOrStdout(), "metrics on http://%s/metrics\n", mlis.Addr())
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			stopHTTP, err := httpf.serve(ctx, cmd, log, srv, drain, tlsCert, tlsKey) // serve_http.go
			if err != nil {
				return err
			}
			defer stopHTTP()
			served := make(chan error, 1)
			go func() { served <- g.Serve(lis) }()
			log.Info("varbridge serving", "addr", lis.Addr().String(), "tls", tlsCert != "", "auth", requireAuth)
			// Scripts read this line to learn the port when --listen ends in :0.
			fmt.Fprintf(cmd.OutOrStdout(), "listening on %s\n", lis.Addr())

			select {
			case err := <-served:
				return err
			case <-ctx.Done():
			}
			// Health first, so that checkers stop sending work here before
			// the listener closes.
			srv.Drain()
			log.Info("stopping: health NOT_SERVING, draining calls", "drain_timeout", drain)
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(drain):
				log.Info("drain timeout: cutting the remaining streams")
				g.Stop()
				<-stopped
			}
			log.Info("stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:50051", "address to listen on")
	f.StringVar(&logLevel, "log-level", "info", "debug (one line per call), info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json (one JSON object per line)")
	f.DurationVar(&drain, "drain-timeout", defaultDrainTimeout, "on SIGINT/SIGTERM, how long calls may finish before the rest are cut")
	f.StringVar(&opToken, "operator-token", "", "token that ListSessions needs with auth on (env "+envOperatorToken+")")
	f.DurationVar(&so.TTL, "session-ttl", store.DefaultTTL, "idle time before a session expires")
	f.IntVar(&so.HistoryLimit, "history-limit", store.DefaultHistoryLimit, "changes kept per session for watch resume")
	f.DurationVar(&so.HistoryAge, "history-age", store.DefaultHistoryAge, "oldest change kept for watch resume")
	f.Int64Var(&so.HistoryBytes, "history-bytes", store.DefaultHistoryBytes, "approximate bytes of history kept per session")
	f.IntVar(&so.MaxSessions, "max-sessions", store.DefaultMaxSessions, "sessions the server holds")
	f.IntVar(&so.MaxVariables, "max-variables", store.DefaultMaxVariables, "variables per session")
	f.IntVar(&so.MaxWatches, "max-watches", store.DefaultMaxWatches, "watches per session")
	f.IntVar(&so.MaxWatchIdentifiers, "max-watch-identifiers", store.DefaultMaxWatchIdentifiers, "variables named by one watch")
	f.IntVar(&so.MaxValueBytes, "max-value-bytes", store.DefaultMaxValueBytes, "encoded size of one value")
	f.Int64Var(&so.Filter.CostPerSecond, "filter-cost-per-second", store.DefaultFilterCostPerSecond,
		"CEL cost units the where filters of one session's watches may spend per second (negative: unlimited)")
	f.IntVar(&limits.MaxRecvMsgBytes, "max-recv-msg-bytes", server.DefaultMaxRecvMsgBytes, "largest request message accepted")
	f.IntVar(&limits.MaxMetadataEntries, "max-metadata-entries", server.DefaultMaxMetadataEntries, "entries in one request metadata map")
	f.IntVar(&limits.MaxMetadataKeyBytes, "max-metadata-key-bytes", server.DefaultMaxMetadataKeyBytes, "bytes in one metadata key")
	f.IntVar(&limits.MaxMetadataValueBytes, "max-metadata-value-bytes", server.DefaultMaxMetadataValueBytes, "bytes in one metadata value")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM certificate (chain) file; with --tls-key, serve TLS")
	f.StringVar(&tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.BoolVar(&requireAuth, "require-auth", false, "require each session's token (authorization: Bearer) on every call")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address (empty: off)")
	f.DurationVar(&kaTime, "keepalive-time", 30*time.Second, "ping an idle client after this long")
	f.DurationVar(&kaTimeout, "keepalive-timeout", 10*time.Second, "drop a client that does not answer a ping within this")
	httpf.register(f)
	dataf.register(f)
	return cmd
}
