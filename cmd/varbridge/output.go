package main

// The one JSON shape of -o json: get, list, register, set and delete print a
// variable per line, watch an update per line, and every value in them is
// decoded the same way (jsonValue).

import (
	"io"

	"github.com/varbridge/varbridge"
	"github.com/varbridge/varbridge/cmd/varbridge/internal/values"
	"github.com/varbridge/varbridge/internal/jsonview"
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

// watchLine is an update in -o json; internal/jsonview holds its shape,
// which the HTTP watch's events share.
type watchLine = jsonview.Update

func updateJSON(u varbridge.Update) watchLine { return jsonview.UpdateOf(u) }

// printJSONLine writes v as one line of JSON.
func printJSONLine(w io.Writer, v any) error { return jsonview.WriteLine(w, v) }

// jsonValue is a value as -o json prints it (jsonview.Value).
func jsonValue(v any) any { return jsonview.Value(v) }
