package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/varbridge/varbridge/internal/etcd"
	"github.com/varbridge/varbridge/internal/store"
)

// envEtcdPassword carries the etcd password, so that it is not on a
// command line for everyone to read.
const envEtcdPassword = "VARBRIDGE_ETCD_PASSWORD"

// etcdFlags are serve's flags for keeping the data in etcd, shared by many
// servers.
type etcdFlags struct {
	endpoints       []string
	prefix          string
	cacert          string
	cert, key       string
	username        string
	timeout         time.Duration
	maxRequestBytes int
	maxTxnOps       int
}

func (e *etcdFlags) register(f *pflag.FlagSet) {
	f.StringSliceVar(&e.endpoints, "etcd-endpoints", nil,
		"keep the data in this etcd cluster (host:port,host:port,...), shared by every server given the same endpoints and prefix, instead of --data-dir")
	f.StringVar(&e.prefix, "etcd-prefix", etcd.DefaultPrefix, "prefix of every key varbridge keeps in etcd")
	f.StringVar(&e.cacert, "etcd-cacert", "", "CA bundle that verifies etcd's certificates (TLS to etcd)")
	f.StringVar(&e.cert, "etcd-cert", "", "client certificate for etcd (with --etcd-key)")
	f.StringVar(&e.key, "etcd-key", "", "client key for etcd (with --etcd-cert)")
	f.StringVar(&e.username, "etcd-username", "", "etcd user (password in $"+envEtcdPassword+")")
	f.DurationVar(&e.timeout, "etcd-timeout", etcd.DefaultRequestTimeout,
		"bound on each etcd request; cut off from etcd this long, the server ends its watches (UNAVAILABLE) so their clients move")
	f.IntVar(&e.maxRequestBytes, "etcd-max-request-bytes", etcd.DefaultMaxRequestBytes,
		"the etcd cluster's --max-request-bytes: a write larger than this is refused (RESOURCE_EXHAUSTED, limit etcd_max_request_bytes)")
	f.IntVar(&e.maxTxnOps, "etcd-max-txn-ops", etcd.DefaultMaxTxnOps,
		"the etcd cluster's --max-txn-ops: an atomic write of more variables than fit is refused (limit etcd_max_txn_ops)")
}

// open connects to etcd.
func (e *etcdFlags) open(log *slog.Logger) (store.Engine, error) {
	opts := etcd.Options{
		Endpoints: e.endpoints, Prefix: e.prefix, Username: e.username, Password: os.Getenv(envEtcdPassword),
		RequestTimeout: e.timeout, MaxRequestBytes: e.maxRequestBytes, MaxTxnOps: e.maxTxnOps, Logger: log,
	}
	if e.username == "" && opts.Password != "" {
		return nil, fmt.Errorf("$%s is set but --etcd-username is not", envEtcdPassword)
	}
	tc, err := e.tls()
	if err != nil {
		return nil, err
	}
	opts.TLS = tc
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	eng, err := etcd.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	log.Info("keeping the data in etcd, shared with every server on the same endpoints and prefix",
		"endpoints", strings.Join(e.endpoints, ","), "prefix", e.prefix, "tls", tc != nil, "took", time.Since(start).Round(time.Millisecond))
	return eng, nil
}

// tls builds the TLS configuration for etcd; nil without TLS flags.
func (e *etcdFlags) tls() (*tls.Config, error) {
	if e.cacert == "" && e.cert == "" && e.key == "" {
		return nil, nil
	}
	if (e.cert == "") != (e.key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.cacert != "" {
		pem, err := os.ReadFile(e.cacert)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", e.cacert)
		}
		tc.RootCAs = pool
	}
	if e.cert != "" {
		c, err := tls.LoadX509KeyPair(e.cert, e.key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}
