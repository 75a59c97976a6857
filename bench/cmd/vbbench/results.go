package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// Result is one entry of results.json.
type Result struct {
	Name   string         `json:"name"`
	Value  *float64       `json:"value"` // null when the figure was skipped (see params.skipped)
	Unit   string         `json:"unit"`
	Params map[string]any `json:"params"`
}

// collector accumulates per-run values of each figure; the figure reported
// is their median.
type collector struct {
	order  []string
	units  map[string]string
	runs   map[string][]float64
	params map[string]map[string]any
	skip   map[string]string
	ratios map[string][2]string // figure -> numerator and denominator figures
}

func newCollector() *collector {
	return &collector{units: map[string]string{}, runs: map[string][]float64{}, params: map[string]map[string]any{}, skip: map[string]string{}, ratios: map[string][2]string{}}
}

func (c *collector) declare(name, unit string, params map[string]any) {
	if _, ok := c.units[name]; !ok {
		c.order = append(c.order, name)
		c.units[name] = unit
		c.params[name] = map[string]any{}
	}
	for k, v := range params {
		c.params[name][k] = v
	}
}

// add records one run's value.
func (c *collector) add(name, unit string, v float64, params map[string]any) {
	c.declare(name, unit, params)
	c.runs[name] = append(c.runs[name], v)
}

// skipped records why a figure has no value.
func (c *collector) skipped(name, unit, why string) {
	c.declare(name, unit, nil)
	c.skip[name] = why
}

// ratio declares a figure computed when results are taken: the median of
// figure num over the median of figure den (a ratio of medians, not a
// median of per-run ratios).
func (c *collector) ratio(name, num, den string, params map[string]any) {
	c.declare(name, "ratio", withKV(params, "how", fmt.Sprintf("ratio of medians: median %s / median %s", num, den)))
	c.ratios[name] = [2]string{num, den}
}

func (c *collector) results() []Result {
	var out []Result
	for _, name := range c.order {
		r := Result{Name: name, Unit: c.units[name], Params: map[string]any{}}
		for k, v := range c.params[name] {
			r.Params[k] = v
		}
		if nd, ok := c.ratios[name]; ok && len(c.runs[nd[0]]) > 0 && len(c.runs[nd[1]]) > 0 {
			m := round3(median(c.runs[nd[0]]) / median(c.runs[nd[1]]))
			r.Value = &m
			r.Params["numerator"], r.Params["denominator"] = nd[0], nd[1]
		} else if vs := c.runs[name]; len(vs) > 0 {
			m := round3(median(vs))
			r.Value = &m
			rs := make([]float64, len(vs))
			for i, v := range vs {
				rs[i] = round3(v)
			}
			r.Params["runs"] = len(vs)
			r.Params["run_values"] = rs
		} else {
			why := c.skip[name]
			if why == "" {
				why = "not measured (failed or not selected)"
			}
			r.Params["skipped"] = why
		}
		if slices.Contains(headline, name) {
			r.Params["headline"] = true
		}
		out = append(out, r)
	}
	return out
}

func writeJSON(path string, f File) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// target is an issue's target: value must be <= max (or >= min).
type target struct {
	op    string // "<=" or ">="
	bound float64
}

var targets = map[string]target{
	"local_set_to_watcher_p50_us":       {"<=", 2},
	"grpc_set_to_go_watcher_p50_us":     {"<=", 60},
	"grpc_set_to_go_watcher_p99_us":     {"<=", 250},
	"grpc_set_to_py_watcher_p50_us":     {"<=", 150},
	"grpc_set_to_py_watcher_p99_us":     {"<=", 600},
	"go_stream_updates_per_s":           {">=", 1e6},
	"py_stream_updates_per_s":           {">=", 200e3},
	"fanout_10k_watchers_p99_ms":        {"<=", 50},
	"idle_watch_server_bytes":           {"<=", 4096},
	"grpc_vs_nats_go_watcher_p50_ratio": {"<=", 0.5},
	"grpc_vs_nats_py_watcher_p50_ratio": {"<=", 0.7},
	"grpc_vs_nats_go_watcher_p99_ratio": {"<=", 0.5},
	"grpc_vs_nats_py_watcher_p99_ratio": {"<=", 0.7},
	// issue 15: from the writer's call, against NATS on memory storage
	// (like-for-like with the in-memory server), ratios of medians.
	"grpc_vs_nats_mem_go_watcher_from_send_p50_ratio": {"<=", 0.8},
	"grpc_vs_nats_mem_py_watcher_from_send_p50_ratio": {"<=", 0.9},
	// issue 15: watches on shared Watch streams.
	"mux_fanout_10k_watchers_p99_ms":            {"<=", 50},
	"mux_idle_watch_server_bytes":               {"<=", 1024},
	"mux_vs_etcd_fanout_10k_watchers_p99_ratio": {"<=", 0.5},
	// issue 11: varbridge --fsync always against etcd (default fsync), in
	// the same run; recovery of 1M revisions and 100k variables.
	"durable_vs_etcd_set_to_go_watcher_p50_ratio": {"<=", 0.5},
	"durable_vs_etcd_writes_per_s_1_ratio":        {">=", 2},
	"durable_vs_etcd_writes_per_s_64_ratio":       {">=", 2},
	"restart_recovery_s":                          {"<=", 5},
	// issue 15: 64 writers of one Go client, pipelined on its write stream.
	"pipelined_writes_per_s_64": {">=", 300e3},
	// issue 12: two servers on one etcd cluster, against etcd's own watch
	// on that cluster in the same run.
	"cluster_vs_etcd_set_to_go_watcher_p50_ratio": {"<=", 1.2},
	"cluster_vs_etcd_set_to_go_watcher_p99_ratio": {"<=", 1.2},
}

// headline lists the figures printed first: latency from the writer's call
// (what a user feels), NATS beside it, and the ratios; the from-commit
// figures stay in the full table beside their from-send ones.
var headline = []string{
	"grpc_set_to_go_watcher_from_send_p50_us", "grpc_set_to_go_watcher_from_send_p99_us",
	"nats_mem_set_to_go_watcher_from_send_p50_us", "nats_mem_set_to_go_watcher_from_send_p99_us", "nats_mem_set_to_go_watcher_missed",
	"nats_file_set_to_go_watcher_from_send_p50_us", "nats_file_set_to_go_watcher_from_send_p99_us", "nats_file_set_to_go_watcher_missed",
	"grpc_vs_nats_mem_go_watcher_from_send_p50_ratio", "grpc_vs_nats_mem_go_watcher_from_send_p99_ratio",
	"grpc_set_to_py_watcher_from_send_p50_us", "grpc_set_to_py_watcher_from_send_p99_us",
	"nats_mem_set_to_py_watcher_from_send_p50_us", "nats_mem_set_to_py_watcher_from_send_p99_us", "nats_mem_set_to_py_watcher_missed",
	"nats_file_set_to_py_watcher_from_send_p50_us", "nats_file_set_to_py_watcher_from_send_p99_us", "nats_file_set_to_py_watcher_missed",
	"grpc_vs_nats_mem_py_watcher_from_send_p50_ratio", "grpc_vs_nats_mem_py_watcher_from_send_p99_ratio",
	// issue 11: durable (--fsync always) beside etcd and NATS sync always.
	"durable_set_to_go_watcher_p50_us", "durable_set_to_go_watcher_p99_us",
	"etcd_set_to_go_watcher_p50_us", "etcd_set_to_go_watcher_p99_us",
	"nats_file_sync_set_to_go_watcher_p50_us", "nats_file_sync_set_to_go_watcher_p99_us", "nats_file_sync_set_to_go_watcher_missed",
	"durable_vs_etcd_set_to_go_watcher_p50_ratio", "durable_vs_etcd_set_to_go_watcher_p99_ratio",
	"durable_writes_per_s_1", "etcd_writes_per_s_1", "durable_vs_etcd_writes_per_s_1_ratio",
	"durable_writes_per_s_64", "etcd_writes_per_s_64", "durable_vs_etcd_writes_per_s_64_ratio",
	"restart_recovery_s",
	"pipelined_writes_per_s_64",
}

func printTable(w io.Writer, rs []Result) {
	byName := map[string]Result{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	var head []Result
	for _, n := range headline {
		if r, ok := byName[n]; ok {
			head = append(head, r)
		}
	}
	if len(head) > 0 {
		fmt.Fprintln(w, "headline: latency from the writer's call (what a user feels); NATS beside it; every figure again below")
		printRows(w, head)
		fmt.Fprintln(w, "\nall figures")
	}
	printRows(w, rs)
}

func printRows(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "name\tmedian\tunit\truns (min .. max)\ttarget\t")
	fmt.Fprintln(tw, "----\t------\t----\t-----------------\t------\t")
	for _, r := range rs {
		val, spread, tgt := "-", "", ""
		if r.Value != nil {
			val = fmtNum(*r.Value)
			if vs, ok := r.Params["run_values"].([]float64); ok && len(vs) > 1 {
				spread = fmt.Sprintf("%d (%s .. %s)", len(vs), fmtNum(slices.Min(vs)), fmtNum(slices.Max(vs)))
			} else if _, ok := r.Params["numerator"]; ok {
				spread = "of medians"
			} else {
				spread = "1"
			}
		} else {
			spread = "skipped: " + fmt.Sprint(r.Params["skipped"])
		}
		if t, ok := targets[r.Name]; ok {
			tgt = t.op + " " + fmtNum(t.bound)
			if r.Value != nil {
				ok := (t.op == "<=" && *r.Value <= t.bound) || (t.op == ">=" && *r.Value >= t.bound)
				if ok {
					tgt += "  ok"
				} else {
					tgt += "  MISSED"
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Name, val, r.Unit, spread, tgt)
	}
	_ = tw.Flush()
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// pct returns the p-th percentile (0..100) of samples by nearest rank; it
// sorts samples in place.
func pct(samples []int64, p float64) int64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := int(math.Ceil(p/100*float64(len(samples)))) - 1
	return samples[min(max(i, 0), len(samples)-1)]
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// latencyStats turns nanosecond samples into p50/p99/max in microseconds.
func latencyStats(ns []int64) (p50, p99, pmax float64) {
	if len(ns) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	return float64(pct(ns, 50)) / 1e3, float64(pct(ns, 99)) / 1e3, float64(pct(ns, 100)) / 1e3
}
