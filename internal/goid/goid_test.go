package goid

import "testing"

func TestCurrentDiffersPerGoroutine(t *testing.T) {
	here := Current()
	if here == 0 || Current() != here {
		t.Fatalf("Current() = %d, then %d", here, Current())
	}
	other := make(chan uint64)
	go func() { other <- Current() }()
	if o := <-other; o == 0 || o == here {
		t.Fatalf("another goroutine's id %d, this one's %d", o, here)
	}
}
