package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/varbridge/varbridge/internal/dashboard"
	"github.com/varbridge/varbridge/internal/httpapi"
	"github.com/varbridge/varbridge/internal/server"
)

// defaultHTTPListen is where serve's HTTP face listens unless told.
const defaultHTTPListen = "127.0.0.1:50052"

// httpFlags are serve's flags for its HTTP face (internal/httpapi): the
// BridgeService as Connect/JSON, gRPC-Web and gRPC, watches as Server-Sent
// Events, and the dashboard at "/".
type httpFlags struct {
	listen      string
	corsOrigins []string
}

func (h *httpFlags) register(f *pflag.FlagSet) {
	f.StringVar(&h.listen, "http-listen", defaultHTTPListen,
		"serve HTTP on this address: Connect/JSON calls (curl), SSE watches at /v1/sessions/{session}/watch, the dashboard at / (empty: off)")
	f.StringArrayVar(&h.corsOrigins, "http-cors-origin", nil,
		"let pages from this origin (scheme://host:port, or *) call the HTTP API; repeatable (default: same origin only)")
}

// serve starts the HTTP face of srv, when enabled, and returns the function
// that stops it. Stopping begins when ctx ends (with the gRPC server's
// drain: calls in progress get up to drain to finish; watches end at once
// and their clients resume elsewhere) or when the returned function is
// called, which waits for it. An address left at its default that cannot
// be bound (another server has it) is logged and skipped, so that several
// servers can run side by side; one given explicitly must be bound.
func (h *httpFlags) serve(ctx context.Context, cmd *cobra.Command, log *slog.Logger, srv *server.Server,
	drain time.Duration, tlsCert, tlsKey string) (stop func(), err error) {
	if h.listen == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", h.listen)
	if err != nil {
		if !cmd.Flags().Changed("http-listen") {
			log.Warn("HTTP not served: its default address is taken (--http-listen sets another, \"\" turns it off)",
				"addr", h.listen, "err", err)
			return func() {}, nil
		}
		return nil, fmt.Errorf("--http-listen %s: %w", h.listen, err)
	}
	hs := httpapi.NewServer(httpapi.Handler(srv, httpapi.Options{CORSOrigins: h.corsOrigins, Root: dashboard.Handler()}), log)
	scheme := "http"
	served := make(chan error, 1)
	if tlsCert != "" {
		scheme = "https"
		go func() { served <- hs.ServeTLS(lis, tlsCert, tlsKey) }()
	} else {
		go func() { served <- hs.Serve(lis) }()
	}
	url := scheme + "://" + lis.Addr().String()
	log.Info("HTTP serving", "url", url, "cors_origins", h.corsOrigins)
	// Scripts read this line to learn the port when --http-listen ends in :0.
	fmt.Fprintf(cmd.OutOrStdout(), "http on %s\n", url)

	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server stopped", "err", err)
			}
			return
		case <-ctx.Done():
		}
		sctx, scancel := context.WithTimeout(context.Background(), drain)
		defer scancel()
		if err := hs.Shutdown(sctx); err != nil {
			log.Info("HTTP drain timeout: closing the remaining connections")
			_ = hs.Close()
		}
		<-served
	}()
	return func() { cancel(); <-done }, nil
}
