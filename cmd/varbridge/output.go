package main

// The one JSON shape of -o json: get, list, register, set and delete print a
// variable per line, watch an update per line, and every value in them is
// decoded the same way (jsonValue).

import (
	"encoding/base64"
	"encoding/json"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"io"
	"maps"
	"math"
	"time"

	"github.com/varbridge/varbridge"
	varbridgev1 "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// variableJSON is a variable in -o json.
type variableJSON struct {
	Name      string            `json:"name"`
	ID        string            `json:"id"`
	Type      string            `json:"type"`
	Value     any               `json:"value"`
	Version   int64             `json:"version"`
	Revision  int64             `json:"revision"`
	Source    string            `json:"source"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	UpdatedAt string            `json:"updated_at,omitempty"`
}

func variableJSONOf(v *varbridgev1.Variable) variableJSON {
	l := variableJSON{
		Name: v.GetName(), ID: v.GetId(), Type: values.TypeName(v.GetType()), Value: jsonValue(varbridge.FromProto(v.GetValue())),
		Version: v.GetVersion(), Revision: v.GetRevision(), Source: v.GetSource(), Metadata: v.GetMetadata(),
	}
	if v.GetUpdatedAt() != nil {
		l.UpdatedAt = formatTime(v.GetUpdatedAt())
	}
	return l
}

// watchLine is an update in -o json. Its value fields are old and new.
type watchLine struct {
	Revision   int64             `json:"revision"`
	Update     string            `json:"update"`
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

func updateJSON(u varbridge.Update) watchLine {
	m := u.Meta
	l := watchLine{
		Revision: m.Revision, Update: updateKind(m), Identifier: u.Identifier, Name: m.Name, ID: m.VariableID,
		Type: string(m.Type), Old: jsonValue(u.Old), New: jsonValue(u.New), Version: m.Version,
		Source: m.Source, Metadata: maps.Clone(m.Metadata),
	}
	if !m.Timestamp.IsZero() {
		l.Timestamp = m.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	return l
}

// printJSONLine writes v as one line of JSON.
func printJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // values are printed as they are: "<" stays "<"
	return enc.Encode(v)
}

// jsonValue is a value as -o json prints it: integers and floats as numbers
// (non-finite floats as the strings protobuf JSON uses: "NaN", "Infinity",
// "-Infinity"), strings and booleans as themselves, an embedding as a list
// of numbers, a tensor as {"shape":[...],"dtype":"...","data":"<base64 of
// its little-endian bytes>"}; null when there is none.
func jsonValue(v any) any {
	switch x := v.(type) {
	case float64:
		return finiteJSON(x)
	case []float64:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = finiteJSON(f)
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

func finiteJSON(f float64) any {
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
