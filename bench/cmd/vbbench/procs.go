package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// mono is CLOCK_MONOTONIC in nanoseconds: the clock Python's
// time.monotonic_ns() reads too, so timestamps compare across processes on
// the same host.
func mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// proc is a child process that announced "listening on ADDR" on stdout.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	// metrics is the URL of the server's Prometheus endpoint, when it
	// announced one ("metrics on URL") before its address.
	metrics string
	// http is the server's HTTP base URL, when it announced one ("http on
	// URL") before its address.
	http string
	// hook, when the server announced "phase hook on URL", is told of each
	// measured phase (URL+"start?name=...", URL+"stop"): a profiling build
	// of the server profiles exactly that phase.
	hook   string
	stderr *tailBuffer
	stdin  io.WriteCloser
	exited chan struct{}
}

// startListener runs bin with args and waits for its "listening on ADDR" line.
func startListener(name, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, stderr: &tailBuffer{max: 8 << 10}, stdin: stdin, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if h, ok := strings.CutPrefix(sc.Text(), "phase hook on "); ok {
				p.hook = strings.TrimSpace(h)
			}
			if h, ok := strings.CutPrefix(sc.Text(), "http on "); ok {
				p.http = strings.TrimSpace(h) // read after addrc hands over the address
			}
			if m, ok := strings.CutPrefix(sc.Text(), "metrics on "); ok {
				p.metrics = strings.TrimSpace(m) // read after addrc hands over the address
			}
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				select {
				case addrc <- strings.TrimSpace(a):
				default:
				}
			}
		}
	}()
	select {
	case p.addr = <-addrc:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before listening: %s", name, p.stderr)
	case <-time.After(20 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not announce its address within 20s: %s", name, p.stderr)
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after 5 s.
func (p *proc) stop() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// rssBytes reads VmRSS of a process from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// pyProc is a Python helper script: it prints "ready" when its watch is
// open, then one JSON line with its results before exiting.
type pyProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *tailBuffer
	done   chan error
}

func startPython(ctx context.Context, python string, args ...string) (*pyProc, error) {
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &pyProc{cmd: cmd, lines: make(chan string, 16), stderr: &tailBuffer{max: 16 << 10}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", python, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	return p, nil
}

// waitLine returns the next stdout line, or an error when the script ended
// or the timeout passed.
func (p *pyProc) waitLine(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			err := <-p.done
			p.done <- err
			return "", fmt.Errorf("python helper ended (%v): %s", err, p.stderr)
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("python helper silent for %s: %s", timeout, p.stderr)
	}
}

func (p *pyProc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
}

// promGauges reads the named metrics (unlabelled samples) from a
// Prometheus text endpoint.
func promGauges(url string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && want[f[0]] {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, nil
}

// phase tells the server's phase hook, if any, that a measured phase starts;
// the returned function tells it that the phase ended.
func (p *proc) phase(name string) func() {
	if p == nil || p.hook == "" {
		return func() {}
	}
	if resp, err := http.Get(p.hook + "start?name=" + name); err == nil {
		resp.Body.Close()
	}
	return func() {
		if resp, err := http.Get(p.hook + "stop"); err == nil {
			resp.Body.Close()
		}
	}
}

// cpuSeconds is the user+system CPU time a process has used (from
// /proc/PID/stat; clock ticks of 10 ms).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// selfCPUSeconds is this process's user+system CPU time.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// cpuMeter measures the CPU time the server and this process spend in a
// phase: figures that machine noise hardly moves, unlike rates.
type cpuMeter struct {
	pid       int
	srv, self float64
}

func startCPU(p *proc) cpuMeter {
	return cpuMeter{pid: p.pid(), srv: cpuSeconds(p.pid()), self: selfCPUSeconds()}
}

// per returns the server's and this process's CPU nanoseconds per unit.
func (m cpuMeter) per(units int) (srvNs, selfNs float64) {
	return (cpuSeconds(m.pid) - m.srv) * 1e9 / float64(units), (selfCPUSeconds() - m.self) * 1e9 / float64(units)
}
