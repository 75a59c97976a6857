// Package goid tells which goroutine is running, so that a blocking stop
// can tell a call from inside the goroutine it would wait for (which must
// not wait) from a call from anywhere else (which must).
package goid

import (
	"bytes"
	"runtime"
	"strconv"
)

// Current returns the running goroutine's id, parsed from the first line of
// its stack trace ("goroutine 42 [running]:"); it costs about a microsecond.
func Current() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
