// Package record encodes what a storage engine keeps of a session (its
// header, expiry deadline and history changes) as protobuf wire encoding
// (protowire) with fixed field numbers, so that fields can be added later
// and old data still reads. The disk and etcd engines share it: one format,
// one home.
package record

import (
	"errors"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/varbridge/varbridge/internal/store"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Header fields.
const (
	hIncarnation = 1
	hTTL         = 2 // nanoseconds
	hCreated     = 3 // unix nanoseconds
	hMetadata    = 4 // repeated entry{1 key, 2 value}
	hTokenHash   = 5
	hRevision    = 6
)

// EncodeHeader encodes a session header.
func EncodeHeader(r *store.SessionRecord) []byte {
	var b []byte
	b = protowire.AppendTag(b, hIncarnation, protowire.BytesType)
	b = protowire.AppendString(b, r.Incarnation)
	b = protowire.AppendTag(b, hTTL, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.TTL))
	b = protowire.AppendTag(b, hCreated, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.CreatedAt.UnixNano()))
	b = appendMetadata(b, hMetadata, r.Metadata)
	if len(r.TokenHash) > 0 {
		b = protowire.AppendTag(b, hTokenHash, protowire.BytesType)
		b = protowire.AppendBytes(b, r.TokenHash)
	}
	b = protowire.AppendTag(b, hRevision, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(r.Revision))
}

// DecodeHeader decodes the header of session id.
func DecodeHeader(id string, b []byte) (store.SessionRecord, error) {
	r := store.SessionRecord{ID: id}
	err := fields(b, func(num protowire.Number, v uint64, raw []byte) error {
		switch num {
		case hIncarnation:
			r.Incarnation = string(raw)
		case hTTL:
			r.TTL = time.Duration(v)
		case hCreated:
			r.CreatedAt = time.Unix(0, int64(v))
		case hMetadata:
			return addEntry(&r.Metadata, raw)
		case hTokenHash:
			r.TokenHash = append([]byte(nil), raw...)
		case hRevision:
			r.Revision = int64(v)
		}
		return nil
	})
	return r, err
}

// Expiry fields.
const (
	eIncarnation = 1
	eDeadline    = 2 // unix nanoseconds
	eWatched     = 3
)

// EncodeExpiry encodes the expiry of a session incarnation.
func EncodeExpiry(incarnation string, e *store.Expiry) []byte {
	var b []byte
	b = protowire.AppendTag(b, eIncarnation, protowire.BytesType)
	b = protowire.AppendString(b, incarnation)
	b = protowire.AppendTag(b, eDeadline, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Deadline.UnixNano()))
	b = protowire.AppendTag(b, eWatched, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeBool(e.Watched))
}

// DecodeExpiry decodes an expiry and the incarnation it belongs to.
func DecodeExpiry(b []byte) (incarnation string, e store.Expiry, err error) {
	err = fields(b, func(num protowire.Number, v uint64, raw []byte) error {
		switch num {
		case eIncarnation:
			incarnation = string(raw)
		case eDeadline:
			e.Deadline = time.Unix(0, int64(v))
		case eWatched:
			e.Watched = v != 0
		}
		return nil
	})
	return incarnation, e, err
}

// Change fields.
const (
	cRevision = 1
	cTime     = 2 // unix nanoseconds
	cSource   = 3
	cMetadata = 4 // repeated entry{1 key, 2 value}
	cItem     = 5 // repeated item{1 kind, 2 variable, 3 old value}

	iKind = 1
	iVar  = 2
	iOld  = 3
)

// EncodeChange encodes c; vars gets each item's variable as encoded, so
// that a write that also puts the variable encodes it once.
func EncodeChange(c *store.Change, vars map[*pb.Variable][]byte) ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, cRevision, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.Revision))
	b = protowire.AppendTag(b, cTime, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(c.Time.UnixNano()))
	if c.Source != "" {
		b = protowire.AppendTag(b, cSource, protowire.BytesType)
		b = protowire.AppendString(b, c.Source)
	}
	b = appendMetadata(b, cMetadata, c.Metadata)
	for _, it := range c.Items {
		v, err := it.Var.MarshalVT()
		if err != nil {
			return nil, err
		}
		if vars != nil {
			vars[it.Var] = v
		}
		item := protowire.AppendTag(nil, iKind, protowire.VarintType)
		item = protowire.AppendVarint(item, uint64(it.Kind))
		item = protowire.AppendTag(item, iVar, protowire.BytesType)
		item = protowire.AppendBytes(item, v)
		if it.Old != nil {
			old, err := it.Old.MarshalVT()
			if err != nil {
				return nil, err
			}
			item = protowire.AppendTag(item, iOld, protowire.BytesType)
			item = protowire.AppendBytes(item, old)
		}
		b = protowire.AppendTag(b, cItem, protowire.BytesType)
		b = protowire.AppendBytes(b, item)
	}
	return b, nil
}

// DecodeChange decodes a history change.
func DecodeChange(b []byte) (*store.Change, error) {
	c := &store.Change{}
	err := fields(b, func(num protowire.Number, v uint64, raw []byte) error {
		switch num {
		case cRevision:
			c.Revision = int64(v)
		case cTime:
			c.Time = time.Unix(0, int64(v))
		case cSource:
			c.Source = string(raw)
		case cMetadata:
			return addEntry(&c.Metadata, raw)
		case cItem:
			var it store.Item
			err := fields(raw, func(num protowire.Number, v uint64, raw []byte) error {
				switch num {
				case iKind:
					it.Kind = store.ItemKind(v)
				case iVar:
					it.Var = &pb.Variable{}
					return it.Var.UnmarshalVT(raw)
				case iOld:
					it.Old = &pb.Value{}
					return it.Old.UnmarshalVT(raw)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if it.Var == nil || it.Kind < store.Registered || it.Kind > store.Deleted {
				return errors.New("history item without a variable or a known kind")
			}
			c.Items = append(c.Items, it)
		}
		return nil
	})
	return c, err
}

func appendMetadata(b []byte, num protowire.Number, md map[string]string) []byte {
	for k, v := range md {
		e := protowire.AppendTag(nil, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, v)
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func addEntry(md *map[string]string, raw []byte) error {
	var k, v string
	err := fields(raw, func(num protowire.Number, _ uint64, raw []byte) error {
		switch num {
		case 1:
			k = string(raw)
		case 2:
			v = string(raw)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if *md == nil {
		*md = map[string]string{}
	}
	(*md)[k] = v
	return nil
}

// fields calls fn for each field of a protowire message: v for varints,
// raw for length-delimited ones. Unknown fields of other types are skipped,
// so a newer writer's additions do not stop an older reader.
func fields(b []byte, fn func(num protowire.Number, v uint64, raw []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if err := fn(num, v, nil); err != nil {
				return err
			}
		case protowire.BytesType:
			raw, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if err := fn(num, 0, raw); err != nil {
				return err
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}
