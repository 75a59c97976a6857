package sse

import (
	"io"
	"strings"
	"testing"
)

func TestReader(t *testing.T) {
	stream := "retry: 1500\n\n: a comment\nevent: watching\ndata: {\"a\":1}\n\n" +
		"id: inc:3\ndata: line one\ndata:line two\n\n" +
		"data: no id\n\n" +
		"id: inc:4\n\n" + // an id alone moves the last id, dispatches nothing
		"event: heartbeat\ndata: {}\n\n" +
		"data: cut before its blank line"
	r := NewReader(strings.NewReader(stream))
	want := []Event{
		{Name: "watching", Data: `{"a":1}`},
		{Name: "message", ID: "inc:3", Data: "line one\nline two", HasID: true},
		{Name: "message", ID: "inc:3", Data: "no id"},
		{Name: "heartbeat", ID: "inc:4", Data: "{}"},
	}
	for i, w := range want {
		ev, err := r.Next()
		if err != nil || ev != w {
			t.Fatalf("event %d: %+v %v, want %+v", i, ev, err, w)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after the last event: %v, want io.EOF", err)
	}
	if r.Retry() != 1500 || r.LastID() != "inc:4" {
		t.Errorf("retry %d, last id %q", r.Retry(), r.LastID())
	}
}
