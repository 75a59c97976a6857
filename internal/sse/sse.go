// Package sse reads a text/event-stream as the HTML standard's EventSource
// does (events, ids, retry), for Go code that consumes varbridge's HTTP
// watch: tests, system suites and the benchmark.
package sse

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// Event is one dispatched event.
type Event struct {
	Name string // the event field; "message" when none was sent
	ID   string // the last event id as of this event ("" until one was sent)
	Data string // data lines joined by "\n"
	// HasID reports whether this event carried an id field itself.
	HasID bool
}

// Reader reads events from a stream.
type Reader struct {
	sc     *bufio.Scanner
	lastID string
	retry  int // ms; 0 until the stream sent one
}

// maxLine bounds one line of the stream (an event's data line holds a whole
// update, values included).
const maxLine = 64 << 20

// NewReader reads events from r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return &Reader{sc: sc}
}

// Retry is the reconnection delay in milliseconds the stream asked for, or
// 0 when it asked for none.
func (r *Reader) Retry() int { return r.retry }

// LastID is the last event id the stream set (what a reconnecting client
// sends as Last-Event-ID).
func (r *Reader) LastID() string { return r.lastID }

// Next returns the next event. At the end of the stream it returns io.EOF
// (or the read error); an event not terminated by a blank line is dropped,
// as EventSource drops it.
func (r *Reader) Next() (Event, error) {
	var (
		ev      Event
		data    strings.Builder
		hasData bool
	)
	for r.sc.Scan() {
		line := r.sc.Text()
		if line == "" {
			if !hasData {
				ev = Event{}
				continue
			}
			ev.ID = r.lastID
			if ev.Name == "" {
				ev.Name = "message"
			}
			ev.Data = data.String()
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Name = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID = value
				ev.HasID = true
			}
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				r.retry = n
			}
		}
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}
