package disk

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/varbridge/varbridge/internal/record"
	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Load gives back every session kept; see store.Engine.
func (e *Engine) Load(fn func(*store.Saved) error) error { return e.scan(fn) }

// scan reads every session kept and gives it to fn.
func (e *Engine) scan(fn func(*store.Saved) error) error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'s'}, UpperBound: []byte{'t'}})
	if err != nil {
		return e.loadErr("", err)
	}
	defer it.Close()
	var (
		cur    *store.Saved
		curID  string
		expInc string
		exp    store.Expiry
		header bool
	)
	flush := func() error {
		if cur == nil || !header {
			return nil // only an expiry outlived its session: nothing to load
		}
		if expInc == cur.Session.Incarnation {
			cur.Expiry = exp
		}
		return fn(cur)
	}
	for it.First(); it.Valid(); it.Next() {
		id, kind, suffix, err := splitKey(it.Key())
		if err != nil {
			return e.loadErr("", err)
		}
		suffix = append([]byte(nil), suffix...) // the iterator's buffer moves on with chunks
		if cur == nil || id != curID {
			if err := flush(); err != nil {
				return err
			}
			cur, curID, expInc, exp, header = &store.Saved{}, id, "", store.Expiry{}, false
		}
		val, err := e.value(it, id)
		if err != nil {
			return e.loadErr(id, fmt.Errorf("record %q: %w", it.Key(), err))
		}
		switch kind {
		case kindHeader:
			if cur.Session, err = record.DecodeHeader(id, val); err != nil {
				return e.loadErr(id, fmt.Errorf("session record: %w", err))
			}
			header = true
		case kindExpiry:
			if expInc, exp, err = record.DecodeExpiry(val); err != nil {
				return e.loadErr(id, fmt.Errorf("expiry record: %w", err))
			}
		case kindHistory:
			c, err := record.DecodeChange(val)
			if err != nil {
				return e.loadErr(id, fmt.Errorf("history record %x: %w", suffix, err))
			}
			cur.History = append(cur.History, c)
		case kindVar:
			v := &pb.Variable{}
			if err := v.UnmarshalVT(val); err != nil {
				return e.loadErr(id, fmt.Errorf("variable %s: %w", suffix, err))
			}
			cur.Variables = append(cur.Variables, v)
		default:
			return e.loadErr(id, fmt.Errorf("unknown record kind %q", kind))
		}
	}
	if err := it.Error(); err != nil {
		return e.loadErr(curID, err)
	}
	return flush()
}

func (e *Engine) loadErr(session string, err error) error {
	if session != "" {
		err = fmt.Errorf("session %q: %w", session, err)
	}
	return &OpenError{Dir: e.dir, File: faultyFile(e.dir, err), Err: err}
}
