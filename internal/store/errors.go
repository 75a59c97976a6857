package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error the store returns wraps exactly one of them, so
// callers map errors to status codes with errors.Is.
var (
	ErrSessionNotFound  = errors.New("session not found")
	ErrVariableNotFound = errors.New("variable not found")
	ErrAlreadyExists    = errors.New("already exists")
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrConstraint       = errors.New("constraint violated")
	ErrVersionConflict  = errors.New("version conflict")
	ErrLimit            = errors.New("limit exceeded")
	// ErrSessionClosed ends the watches of a session that was cleaned up or expired.
	ErrSessionClosed = errors.New("session closed")
)

// ConstraintError reports a value that breaks one of its variable's constraints.
type ConstraintError struct {
	Variable   string // the variable's name
	Constraint string // the constraint's wire name: "min", "pattern", ...
	Value      string // the rejected value, abbreviated
	Reason     string
}

// Error names the variable, the constraint and the value.
func (e *ConstraintError) Error() string {
	return fmt.Sprintf("variable %q: value %s violates constraint %s: %s", e.Variable, e.Value, e.Constraint, e.Reason)
}

// Is makes a ConstraintError match ErrConstraint.
func (e *ConstraintError) Is(target error) bool { return target == ErrConstraint }

// NotFoundError lists every identifier that named no variable in a session.
type NotFoundError struct {
	Session     string
	Identifiers []string
}

// Error lists every missing identifier.
func (e *NotFoundError) Error() string {
	return fmt.Sprintf("session %q has no variable %s", e.Session, quoteList(e.Identifiers))
}

// Is makes a NotFoundError match ErrVariableNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrVariableNotFound }

// FieldError reports a bad request field; Field is its wire name.
type FieldError struct {
	Field  string
	Reason string
}

// Error names the field and what is wrong with it.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Is makes a FieldError match ErrInvalidArgument.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidArgument }

// LimitError reports a configured limit that a request would exceed.
type LimitError struct {
	Limit string // the limit's name, e.g. "max_watches_per_session"
	Max   int64
	What  string
}

// Error names the limit and its value.
func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: limit %s is %d", e.What, e.Limit, e.Max)
}

// Is makes a LimitError match ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func sessionNotFound(id string) error {
	return fmt.Errorf("%w: session %q", ErrSessionNotFound, id)
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
