package disk

import (
	"encoding/binary"
	"fmt"
)

// Keys. Everything of one session sits together, under
//
//	's' session-id 0x00 kind [suffix]
//
// (ids hold no control characters, so 0x00 ends the id and one session's
// keys sort before any longer id's), which lets Load read the whole store
// in one scan and Drop remove a session with one range deletion. Kinds sort
// header, expiry, history (by revision), variables (by id).
const (
	kindHeader  = 'a'
	kindExpiry  = 'b'
	kindHistory = 'h'
	kindVar     = 'v'
)

func sessionPrefix(id string) []byte {
	k := make([]byte, 0, len(id)+2)
	k = append(k, 's')
	k = append(k, id...)
	return append(k, 0)
}

// sessionEnd is the first key after every key of session id.
func sessionEnd(id string) []byte {
	k := sessionPrefix(id)
	k[len(k)-1] = 1
	return k
}

func sessionKey(id string, kind byte) []byte { return append(sessionPrefix(id), kind) }

func historyKey(id string, rev int64) []byte {
	return binary.BigEndian.AppendUint64(sessionKey(id, kindHistory), uint64(rev))
}

func varKey(id, varID string) []byte { return append(sessionKey(id, kindVar), varID...) }

// splitKey returns the session id, kind and suffix of a key.
func splitKey(k []byte) (id string, kind byte, suffix []byte, err error) {
	if len(k) < 3 || k[0] != 's' {
		return "", 0, nil, fmt.Errorf("unknown key %q", k)
	}
	for i := 1; i < len(k)-1; i++ {
		if k[i] == 0 {
			return string(k[1:i]), k[i+1], k[i+2:], nil
		}
	}
	return "", 0, nil, fmt.Errorf("key %q has no kind", k)
}
