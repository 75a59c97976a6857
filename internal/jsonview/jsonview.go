// Package jsonview holds the one JSON shape of a watch update: the line
// `varbridge watch -o json` prints and the data of each Server-Sent Event of
// the HTTP watch (internal/httpapi). Both write it with this package, so a
// script that reads one reads the other.
package jsonview

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/varbridge/varbridge"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Update is a watch update. Its value fields are old and new (Value).
type Update struct {
	Revision   int64             `json:"revision"`
	Update     string            `json:"update"` // initial, change, resync or deleted (Kind)
	Identifier string            `json:"identifier"`
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Old        any               `json:"old"`
	New        any               `json:"new"`
	Version    int64             `json:"version"`
	Source     string            `json:"source"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Timestamp  string            `json:"timestamp,omitempty"`
}

// Kind names the kind of update m describes.
func Kind(m varbridge.UpdateMeta) string {
	switch {
	case m.Initial:
		return "initial"
	case m.Resync:
		return "resync"
	case m.Deleted:
		return "deleted"
	}
	return "change"
}

// UpdateOf is u as JSON.
func UpdateOf(u varbridge.Update) Update {
	m := u.Meta
	l := Update{
		Revision: m.Revision, Update: Kind(m), Identifier: u.Identifier, Name: m.Name, ID: m.VariableID,
		Type: string(m.Type), Old: Value(u.Old), New: Value(u.New), Version: m.Version,
		Source: m.Source, Metadata: maps.Clone(m.Metadata),
	}
	if !m.Timestamp.IsZero() {
		l.Timestamp = m.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return l
}

// FromProto is a wire update as JSON, read as the Go client reads it: the
// name from the update or its variable, no new value for a deletion, and
// identifier the one the watch named the variable by ("" for the name).
// Heartbeats have no JSON form of their own; the caller writes them.
func FromProto(u *pb.VariableUpdate, identifier string) Update {
	v := u.GetVariable()
	ut := u.GetUpdateType()
	m := varbridge.UpdateMeta{
		VariableID: u.GetVariableId(), Name: u.GetVariableName(), Type: varbridge.TypeFromProto(v.GetType()),
		Version: v.GetVersion(), Revision: u.GetRevision(), Source: u.GetUpdateSource(),
		Metadata: u.GetUpdateMetadata(), Timestamp: asTime(u.GetTimestamp()),
		Initial: ut == pb.UpdateType_UPDATE_TYPE_INITIAL_VALUE,
		Resync:  ut == pb.UpdateType_UPDATE_TYPE_RESYNC,
		Deleted: ut == pb.UpdateType_UPDATE_TYPE_DELETED,
	}
	if m.Name == "" {
		m.Name = v.GetName()
	}
	if identifier == "" {
		identifier = m.Name
	}
	var old, cur any
	if u.OldValue != nil {
		old = varbridge.FromProto(u.OldValue)
	}
	if !m.Deleted && v != nil {
		cur = varbridge.FromProto(v.GetValue())
	}
	return UpdateOf(varbridge.Update{Identifier: identifier, Old: old, New: cur, Meta: m})
}

func asTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// NewEncoder returns an encoder of one JSON value per line that leaves
// values as they are ("<" stays "<").
func NewEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// WriteLine writes v as one line of JSON.
func WriteLine(w io.Writer, v any) error { return NewEncoder(w).Encode(v) }

// Value is a value as JSON: integers and floats as numbers (non-finite
// floats as the strings protobuf JSON uses: "NaN", "Infinity",
// "-Infinity"), strings and booleans as themselves, an embedding as a list
// of numbers, a tensor as {"shape":[...],"dtype":"...","data":"<base64 of
// its little-endian bytes>"}; null when there is none.
func Value(v any) any {
	switch x := v.(type) {
	case float64:
		return finite(x)
	case []float64:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = finite(f)
		}
		return out
	case varbridge.Tensor:
		shape := x.Shape
		if shape == nil {
			shape = []int64{}
		}
		return map[string]any{"shape": shape, "dtype": x.DType, "data": base64.StdEncoding.EncodeToString(x.Data)}
	}
	return v
}

func finite(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}
