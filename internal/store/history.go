package store

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ItemKind says what happened to a variable in a Change.
type ItemKind int

// Item kinds.
const (
	Registered ItemKind = iota + 1
	Updated
	Deleted
)

// Item is one variable's part of a Change.
type Item struct {
	Kind ItemKind
	// Var is the variable after the change; for Deleted, as it was. Shared
	// and immutable.
	Var *pb.Variable
	// Old is the value before the change; nil for Registered.
	Old *pb.Value
}

// Change is the record of one committed mutation: everything it changed took
// the same revision. Changes are shared by every watch and never modified.
type Change struct {
	Revision int64
	Time     time.Time
	// Timestamp is Time for the wire, built once and shared by every
	// watch's updates (read-only, like the rest of the Change).
	Timestamp *timestamppb.Timestamp
	Source    string
	Metadata  map[string]string
	Items     []Item
	size      int64
}

// history is a session's bounded window of recent changes, with contiguous
// revisions. It is every watch's queue: a watch is a cursor into it, so the
// memory for a slow watcher is bounded by the window, not by its lag.
type history struct {
	limit    int
	maxAge   time.Duration
	maxBytes int64

	buf   []*Change // ring, len(buf) == capacity once grown
	head  int       // index of the oldest change
	n     int
	bytes int64
}

// sizeOf sets and returns c's size as the history counts it.
func sizeOf(c *Change) int64 {
	if c.size == 0 {
		c.size = int64(MapBytes(c.Metadata)) + 64
		for _, it := range c.Items {
			c.size += int64(ApproxVariableBytes(it.Var) + ApproxValueBytes(it.Old))
		}
	}
	return c.size
}

// keptFrom returns the oldest revision the history will hold once c is
// appended, without appending it: an engine drops what is older in the same
// write that adds c.
func (h *history) keptFrom(c *Change) int64 {
	if h.limit <= 0 {
		return 0
	}
	n, bytes, head := h.n, h.bytes, 0 // head counts evictions from h.head
	at := func(i int) *Change { return h.buf[(h.head+i)%len(h.buf)] }
	if n == h.limit {
		bytes -= at(0).size
		head, n = 1, n-1
	}
	n++
	bytes += sizeOf(c)
	for n > 1 && head < h.n && (bytes > h.maxBytes || c.Time.Sub(at(head).Time) > h.maxAge) {
		bytes -= at(head).size
		head++
		n--
	}
	if head < h.n {
		return at(head).Revision
	}
	return c.Revision
}

func (h *history) append(c *Change) {
	if h.limit <= 0 {
		return // closed session
	}
	sizeOf(c)
	if h.n == h.limit {
		h.evict()
	}
	if h.n == len(h.buf) { // grow geometrically up to the limit
		nb := make([]*Change, min(max(2*len(h.buf), 64), h.limit))
		for i := range h.n {
			nb[i] = h.buf[(h.head+i)%len(h.buf)]
		}
		h.buf, h.head = nb, 0
	}
	h.buf[(h.head+h.n)%len(h.buf)] = c
	h.n++
	h.bytes += c.size
	for h.n > 1 && (h.bytes > h.maxBytes || c.Time.Sub(h.buf[h.head].Time) > h.maxAge) {
		h.evict()
	}
}

func (h *history) evict() {
	old := h.buf[h.head]
	h.buf[h.head] = nil
	h.head = (h.head + 1) % len(h.buf)
	h.n--
	h.bytes -= old.size
}

// first returns the oldest revision still held, or 0 when empty.
func (h *history) first() int64 {
	if h.n == 0 {
		return 0
	}
	return h.buf[h.head].Revision
}

// at returns the change with revision rev, which must be held.
func (h *history) at(rev int64) *Change {
	return h.buf[(h.head+int(rev-h.first()))%len(h.buf)]
}

// ApproxValueBytes estimates a value's encoded size without encoding it:
// close enough to bound history memory and batch sizes, and far cheaper than
// proto.Size on the write and send paths.
func ApproxValueBytes(v *pb.Value) int {
	switch x := v.GetKind().(type) {
	case *pb.Value_StringValue:
		return len(x.StringValue) + 8
	case *pb.Value_EmbeddingValue:
		return 8*len(x.EmbeddingValue.GetValues()) + 8
	case *pb.Value_TensorValue:
		t := x.TensorValue
		return len(t.GetData()) + 10*len(t.GetShape()) + len(t.GetDtype()) + 16
	case nil:
		return 0
	}
	return 12
}

// ApproxVariableBytes estimates a variable's encoded size; see ApproxValueBytes.
func ApproxVariableBytes(v *pb.Variable) int {
	n := 96 + len(v.GetId()) + len(v.GetName()) + len(v.GetSource()) + ApproxValueBytes(v.GetValue()) + MapBytes(v.GetMetadata())
	if c := v.GetConstraints(); c != nil {
		n += 64 + len(c.GetPattern()) + 8*len(c.GetShape())
		for _, s := range c.GetChoices() {
			n += len(s) + 2
		}
		for _, s := range c.GetAllowedModules() {
			n += len(s) + 2
		}
	}
	return n
}

// MapBytes estimates the encoded size of a string map.
func MapBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v) + 6
	}
	return n
}
