package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// pyLatency starts a Python watcher script (args after the script path),
// waits for its "ready", runs the paced writer, and reads its samples.
func pyLatency(ctx context.Context, python string, args []string, n, rate int, write func(int64) error) (latSamples, error) {
	var ls latSamples
	p, err := startPython(ctx, python, args...)
	if err != nil {
		return ls, err
	}
	defer p.kill()
	for {
		l, err := p.waitLine(60 * time.Second)
		if err != nil {
			return ls, err
		}
		if l == "ready" {
			break
		}
	}
	if err := pacedWriter(ctx, n, rate, write); err != nil {
		return ls, err
	}
	l, err := p.waitLine(latTimeout)
	if err != nil {
		return ls, err
	}
	var out struct {
		Send   []int64 `json:"send"`
		Commit []int64 `json:"commit"`
	}
	if err := json.Unmarshal([]byte(l), &out); err != nil {
		return ls, fmt.Errorf("python output %.200q: %w", l, err)
	}
	ls.send, ls.commit = out.Send, out.Commit
	ls.missed = n - len(ls.send)
	return ls, nil
}

// pyThroughput runs vb_watch.py tput and returns updates per second and the
// CPU seconds the script spent reading them.
func pyThroughput(ctx context.Context, python string, args []string) (float64, float64, error) {
	p, err := startPython(ctx, python, args...)
	if err != nil {
		return 0, 0, err
	}
	defer p.kill()
	l, err := p.waitLine(5 * time.Minute)
	if err != nil {
		return 0, 0, err
	}
	var out struct {
		Count   int     `json:"count"`
		Seconds float64 `json:"seconds"`
		CPU     float64 `json:"cpu_seconds"`
	}
	if err := json.Unmarshal([]byte(l), &out); err != nil {
		return 0, 0, fmt.Errorf("python output %.200q: %w", l, err)
	}
	if out.Count < 2 || out.Seconds <= 0 {
		return 0, 0, fmt.Errorf("python read %d updates in %gs", out.Count, out.Seconds)
	}
	return float64(out.Count) / out.Seconds, out.CPU, nil
}
