package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
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
	// ErrOutOfRange: a watch asked to resume beyond the session's revision.
	ErrOutOfRange = errors.New("revision out of range")
)

// CloseCause says why a session ended under its watches.
type CloseCause string

// Close causes; the wire carries them in ErrorInfo metadata "cause".
const (
	ClosedCleanedUp CloseCause = "cleaned_up"
	ClosedExpired   CloseCause = "expired"
	ClosedShutdown  CloseCause = "shutdown"
)

// SessionClosedError ends the watches of a session that went away.
type SessionClosedError struct {
	Session string
	Cause   CloseCause
	TTL     time.Duration // for ClosedExpired
}

// Error says which session ended and why.
func (e *SessionClosedError) Error() string {
	why := "it was cleaned up"
	switch e.Cause {
	case ClosedExpired:
		why = "it expired after " + e.TTL.String() + " without use"
	case ClosedShutdown:
		why = "the server is shutting down"
	}
	return fmt.Sprintf("%v: session %q ended because %s", ErrSessionClosed, e.Session, why)
}

// Is makes a SessionClosedError match ErrSessionClosed.
func (e *SessionClosedError) Is(target error) bool { return target == ErrSessionClosed }

// VersionConflictError reports a compare-and-set that found another version.
type VersionConflictError struct {
	Variable         string // the variable's name
	Expected, Actual int64
}

// Error names the variable and both versions.
func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("%v: variable %q is at version %d, not the expected %d", ErrVersionConflict, e.Variable, e.Actual, e.Expected)
}

// Is makes a VersionConflictError match ErrVersionConflict.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }

// ExistsError reports a variable name already taken in a session.
type ExistsError struct {
	Session, Name string
}

// Error names the session and the name.
func (e *ExistsError) Error() string {
	return fmt.Sprintf("%v: session %q already has a variable named %q", ErrAlreadyExists, e.Session, e.Name)
}

// Is makes an ExistsError match ErrAlreadyExists.
func (e *ExistsError) Is(target error) bool { return target == ErrAlreadyExists }

// OutOfRangeError reports a resume point ahead of the session's history in
// the same incarnation (or with none given): it cannot be from this
// session, and answering with silence would lose whatever the client lacks.
type OutOfRangeError struct {
	Session     string
	Start       int64 // the start_revision asked for
	Revision    int64 // the session's revision
	Incarnation string
}

// Error names both revisions.
func (e *OutOfRangeError) Error() string {
	return fmt.Sprintf("%v: start_revision %d is beyond session %q's revision %d + 1 (incarnation %s); resume from a revision this session has, or watch afresh",
		ErrOutOfRange, e.Start, e.Session, e.Revision, e.Incarnation)
}

// Is makes an OutOfRangeError match ErrOutOfRange.
func (e *OutOfRangeError) Is(target error) bool { return target == ErrOutOfRange }

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

// SessionNotFoundError names a session that does not exist.
type SessionNotFoundError struct{ Session string }

// Error names the session.
func (e *SessionNotFoundError) Error() string {
	return fmt.Sprintf("%v: session %q", ErrSessionNotFound, e.Session)
}

// Is makes a SessionNotFoundError match ErrSessionNotFound.
func (e *SessionNotFoundError) Is(target error) bool { return target == ErrSessionNotFound }

func sessionNotFound(id string) error { return &SessionNotFoundError{Session: id} }

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
