package disk

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// Large records (tensors, long strings) are kept in chunks of chunkBytes,
// each under its own key: the record's key holds a marker with the count,
// and chunk i sits at the record's key followed by i (4 bytes, big endian),
// which sorts right after it and before the next record. Small blocks keep
// Pebble's corruption diagnostics bounded: on a bad checksum Pebble tries
// every single-bit flip of the block, which for one block of megabytes
// takes hours (and would stall a startup that should refuse the file).
const chunkBytes = 4 << 10

// chunkMarker starts a chunked record's value. No record starts with it:
// records are protobuf messages, whose first byte is a field tag with a
// small field number.
const chunkMarker = 0xff

func chunkKey(key []byte, i int) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), key...), uint32(i))
}

// chunkCount is how many chunks a value of n bytes takes (0: not chunked).
func chunkCount(n int) int {
	if n <= chunkBytes {
		return 0
	}
	return (n + chunkBytes - 1) / chunkBytes
}

// chunks remembers, per session, the keys whose records are chunked and
// into how many chunks, so that a record overwritten or deleted takes its
// chunks with it (without a range deletion for every small record).
type chunks struct {
	mu sync.Mutex
	m  map[string]map[string]int // session id -> record key -> chunks
}

func (c *chunks) get(session string, key []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[session][string(key)]
}

func (c *chunks) set(session string, key []byte, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == 0 {
		delete(c.m[session], string(key))
		return
	}
	if c.m == nil {
		c.m = map[string]map[string]int{}
	}
	if c.m[session] == nil {
		c.m[session] = map[string]int{}
	}
	c.m[session][string(key)] = n
}

func (c *chunks) drop(session string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, session)
}

// chunkEdit is a change to the chunks map, made once its batch is applied
// (a batch refused for want of space changes nothing).
type chunkEdit struct {
	session string
	key     []byte // nil: the whole session is gone
	n       int
}

func (c *chunks) apply(edits []chunkEdit) {
	for _, ed := range edits {
		if ed.key == nil {
			c.drop(ed.session)
		} else {
			c.set(ed.session, ed.key, ed.n)
		}
	}
}

// put sets key to val in b, in chunks when it is large, and removes the
// chunks of the record it replaces beyond the new ones.
func (e *Engine) put(b *pebble.Batch, edits *[]chunkEdit, session string, key, val []byte) {
	n, old := chunkCount(len(val)), e.chunks.get(session, key)
	if n == 0 {
		_ = b.Set(key, val, nil)
	} else {
		head := protowire.AppendVarint([]byte{chunkMarker}, uint64(len(val)))
		_ = b.Set(key, protowire.AppendVarint(head, uint64(n)), nil)
		for i := range n {
			_ = b.Set(chunkKey(key, i), val[i*chunkBytes:min(len(val), (i+1)*chunkBytes)], nil)
		}
	}
	if old > n {
		_ = b.DeleteRange(chunkKey(key, n), chunkKey(key, old), nil)
	}
	if n != old {
		*edits = append(*edits, chunkEdit{session, key, n})
	}
}

// del deletes key's record and its chunks.
func (e *Engine) del(b *pebble.Batch, edits *[]chunkEdit, session string, key []byte) {
	_ = b.Delete(key, nil)
	if old := e.chunks.get(session, key); old > 0 {
		_ = b.DeleteRange(chunkKey(key, 0), chunkKey(key, old), nil)
		*edits = append(*edits, chunkEdit{session, key, 0})
	}
}

// value returns the record at the iterator's key, reading its chunks
// (and leaving the iterator on the last) when it is chunked.
func (e *Engine) value(it *pebble.Iterator, session string) ([]byte, error) {
	val, err := it.ValueAndErr()
	if err != nil || len(val) == 0 || val[0] != chunkMarker {
		return val, err
	}
	total, k := protowire.ConsumeVarint(val[1:])
	n, k2 := protowire.ConsumeVarint(val[1+max(k, 0):])
	if k < 0 || k2 < 0 || int(n) != chunkCount(int(total)) {
		return nil, fmt.Errorf("bad chunk marker %x", val)
	}
	key := append([]byte(nil), it.Key()...)
	out := make([]byte, 0, total)
	for i := range int(n) {
		if !it.Next() || string(it.Key()) != string(chunkKey(key, i)) {
			return nil, fmt.Errorf("chunk %d of %d is missing", i, n)
		}
		part, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	if uint64(len(out)) != total {
		return nil, fmt.Errorf("chunks hold %d bytes, want %d", len(out), total)
	}
	e.chunks.set(session, key, int(n))
	return out, nil
}
