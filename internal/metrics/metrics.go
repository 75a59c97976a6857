// Package metrics holds varbridge's Prometheus metrics for operators: the Go
// runtime and process collectors, gRPC server metrics (calls, codes, messages,
// latency per method) and varbridge's own counts of sessions, watches and
// deliveries.
//
// A nil *Metrics is valid and records nothing, so the server calls its hooks
// unconditionally.
package metrics

import (
	"net/http"
	"runtime/debug"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Metric names, for tests and dashboards.
const (
	SessionsOpen      = "varbridge_sessions_open"
	WatchesOpen       = "varbridge_watches_open"
	WatchesOpened     = "varbridge_watches_opened_total"
	WatchesClosed     = "varbridge_watches_closed_total"
	UpdatesDelivered  = "varbridge_updates_delivered_total"
	WatchResyncs      = "varbridge_watch_resyncs_total"
	WatchSending      = "varbridge_watch_sends_in_flight"
	FilterErrors      = "varbridge_watch_filter_errors_total"
	PanicsRecovered   = "varbridge_panics_recovered_total"
	AuthFailures      = "varbridge_auth_failures_total"
	BuildInfoName     = "varbridge_build_info"
	GRPCServerHandled = "grpc_server_handled_total"
)

// Reasons a watch closes, the values of WatchesClosed's "reason" label.
const (
	ClosedCancelled    = "cancelled"     // the client cancelled or its connection went away
	ClosedSessionEnded = "session_ended" // the session was cleaned up, expired, or the server stopped
	ClosedSendFailed   = "send_failed"   // sending to the stream failed
	ClosedError        = "error"         // anything else
)

// Counts is what the metrics read from the store at scrape time.
type Counts interface {
	SessionCount() int
	WatchCount() int
}

// Metrics is one registry with every varbridge collector. Create it with New.
type Metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	opened       prometheus.Counter
	closed       *prometheus.CounterVec
	updates      map[pb.UpdateType]prometheus.Counter
	resyncs      prometheus.Counter
	sending      prometheus.Gauge
	filterErrors prometheus.Counter
	panics       prometheus.Counter
	authFailures *prometheus.CounterVec
}

// New returns Metrics on a fresh registry holding the Go runtime and process
// collectors, gRPC server metrics and varbridge's counters. Call ObserveStore
// (the server does) to add the session and watch gauges.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5}),
		)),
		opened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: WatchesOpened, Help: "Watch streams opened (observer registered).",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: WatchesClosed, Help: "Watch streams closed, by reason: cancelled, session_ended, send_failed, error.",
		}, []string{"reason"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: WatchResyncs, Help: "Times a watch fell out of the history window and was sent RESYNC.",
		}),
		sending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: WatchSending, Help: "Watch streams inside a send now. Sends take microseconds; a count that stays up is readers that stopped reading (gRPC flow control holds their sends). Each stalls only its own stream.",
		}),
		filterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: FilterErrors, Help: "Server-side where filter evaluations that failed (the update was sent).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: PanicsRecovered, Help: "Panics in request handlers turned into INTERNAL errors.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: AuthFailures, Help: "Calls refused by session auth, by gRPC code.",
		}, []string{"code"}),
		updates: map[pb.UpdateType]prometheus.Counter{},
	}
	delivered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: UpdatesDelivered, Help: "Updates sent on watch streams, by update_type (heartbeats included).",
	}, []string{"update_type"})
	for v, name := range pb.UpdateType_name {
		if t := pb.UpdateType(v); t != pb.UpdateType_UPDATE_TYPE_UNSPECIFIED {
			m.updates[t] = delivered.WithLabelValues(updateLabel(name))
		}
	}
	for _, r := range []string{ClosedCancelled, ClosedSessionEnded, ClosedSendFailed, ClosedError} {
		m.closed.WithLabelValues(r)
	}
	b := ReadBuildInfo()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        BuildInfoName,
		Help:        "Always 1; its labels say which build of varbridge serves (version, Go version, VCS revision).",
		ConstLabels: prometheus.Labels{"version": b.Version, "goversion": b.GoVersion, "revision": b.Revision},
	})
	build.Set(1)
	reg.MustRegister(
		build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc, m.opened, m.closed, delivered, m.resyncs, m.sending, m.filterErrors, m.panics, m.authFailures,
	)
	return m
}

// Version is the release version, set at link time:
//
//	go build -ldflags "-X github.com/varbridge/varbridge/internal/metrics.Version=v1.2.3" ./cmd/varbridge
//
// Without it, the module version Go recorded in the binary is used (a tag
// or a pseudo-version when built from a module; "devel" inside a checkout).
var Version string

// BuildInfo says which build is running: what `varbridge --version` prints
// and the labels of the varbridge_build_info metric.
type BuildInfo struct {
	Version   string // Version, else the main module's version, else "devel"
	GoVersion string // the toolchain that built it, e.g. "go1.26.0"
	Revision  string // the VCS revision, with "-dirty" for local changes; "unknown" without VCS data
}

// ReadBuildInfo reads the build's version data from Version and
// debug.ReadBuildInfo.
func ReadBuildInfo() BuildInfo {
	b := BuildInfo{Version: Version, Revision: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		b.GoVersion = bi.GoVersion
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			b.Revision = rev
			if modified == "true" {
				b.Revision += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.GoVersion == "" {
		b.GoVersion = "unknown"
	}
	return b
}

// updateLabel turns "UPDATE_TYPE_VALUE_CHANGE" into "value_change".
func updateLabel(enumName string) string {
	const prefix = "UPDATE_TYPE_"
	b := []byte(enumName[len(prefix):])
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Registry returns the registry, to add collectors or gather in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveStore adds the gauges read from c at scrape time: open sessions and
// open watches. It fails if a store is already observed.
func (m *Metrics) ObserveStore(c Counts) error {
	if m == nil {
		return nil
	}
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: SessionsOpen, Help: "Live sessions in the store.",
	}, func() float64 { return float64(c.SessionCount()) })
	watches := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: WatchesOpen, Help: "Open watches (registered observers) over all sessions.",
	}, func() float64 { return float64(c.WatchCount()) })
	if err := m.reg.Register(sessions); err != nil {
		return err
	}
	if err := m.reg.Register(watches); err != nil {
		m.reg.Unregister(sessions)
		return err
	}
	return nil
}

// ServerOptions returns the gRPC interceptors that count calls, codes and
// messages per method. The server puts them first in its chains, so they see
// the final status of every call.
func (m *Metrics) ServerOptions() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	return m.grpc.UnaryServerInterceptor(), m.grpc.StreamServerInterceptor()
}

// InitializeGRPC pre-creates the per-method series of every service on g, so
// they read 0 before the first call.
func (m *Metrics) InitializeGRPC(g *grpc.Server) {
	if m != nil {
		m.grpc.InitializeMetrics(g)
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// NewHTTPServer returns an http.Server that serves /metrics (and a plain
// "ok" on /healthz); run it with Serve on a listener.
func (m *Metrics) NewHTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// WatchOpened counts a watch whose observer was registered.
func (m *Metrics) WatchOpened() {
	if m != nil {
		m.opened.Inc()
	}
}

// WatchClosed counts a watch that ended, by one of the Closed* reasons.
func (m *Metrics) WatchClosed(reason string) {
	if m != nil {
		m.closed.WithLabelValues(reason).Inc()
	}
}

// UpdateSent counts one update sent on a watch stream.
func (m *Metrics) UpdateSent(u *pb.VariableUpdate) {
	if m == nil {
		return
	}
	if c, ok := m.updates[u.GetUpdateType()]; ok {
		c.Inc()
	}
}

// SendStarted and SendDone bracket one send on a watch stream.
func (m *Metrics) SendStarted() {
	if m != nil {
		m.sending.Inc()
	}
}

// SendDone ends what SendStarted began.
func (m *Metrics) SendDone() {
	if m != nil {
		m.sending.Dec()
	}
}

// Resync counts a watch that fell out of the history window.
func (m *Metrics) Resync() {
	if m != nil {
		m.resyncs.Inc()
	}
}

// FilterError counts a where filter that failed to evaluate.
func (m *Metrics) FilterError() {
	if m != nil {
		m.filterErrors.Inc()
	}
}

// Panic counts a recovered handler panic.
func (m *Metrics) Panic() {
	if m != nil {
		m.panics.Inc()
	}
}

// AuthFailure counts a call refused by session auth with the given gRPC code
// name ("Unauthenticated", "PermissionDenied", "AlreadyExists").
func (m *Metrics) AuthFailure(code string) {
	if m != nil {
		m.authFailures.WithLabelValues(code).Inc()
	}
}
