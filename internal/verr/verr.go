// Package verr defines the errors a varbridge user sees, once: the store
// returns them, LocalState hands them on as they are, and BridgedState
// builds the same types from a status's ErrorInfo reason and metadata. The
// root package re-exports them (type aliases and the same sentinel values),
// so errors.Is and errors.As give the same answers on either provider.
//
// An error built by the store formats its message from its fields; one
// built from a status carries the server's message as it came.
package verr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinels. Each typed error below matches one (ConstraintError two).
var (
	ErrNotFound        = errors.New("variable not found")
	ErrSessionNotFound = errors.New("session not found")
	ErrSessionClosed   = errors.New("session closed")
	ErrAlreadyExists   = errors.New("already exists")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrConstraint      = errors.New("constraint violated")
	ErrVersionConflict = errors.New("version conflict")
	ErrLimit           = errors.New("limit exceeded")
	ErrOutOfRange      = errors.New("revision out of range")
)

// NotFoundError lists every identifier that named no variable in a session.
// It matches ErrNotFound.
type NotFoundError struct {
	Session     string
	Identifiers []string
	msg         string
}

// NotFound builds a NotFoundError whose message is msg.
func NotFound(session string, identifiers []string, msg string) *NotFoundError {
	return &NotFoundError{Session: session, Identifiers: identifiers, msg: msg}
}

// Error lists the missing identifiers.
func (e *NotFoundError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	q := make([]string, len(e.Identifiers))
	for i, s := range e.Identifiers {
		q[i] = strconv.Quote(s)
	}
	return fmt.Sprintf("session %q has no variable %s", e.Session, strings.Join(q, ", "))
}

// Is makes a NotFoundError match ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// ConstraintError reports a value that breaks one of its variable's
// constraints. It matches ErrConstraint and ErrInvalidArgument.
type ConstraintError struct {
	Variable   string // the variable's name
	Constraint string // the constraint's wire name: "min", "pattern", ...
	Value      string // the rejected value, abbreviated ("" when built from a status)
	Reason     string // what the constraint requires ("" when built from a status)
	msg        string
}

// Constraint builds a ConstraintError whose message is msg.
func Constraint(variable, constraint, msg string) *ConstraintError {
	return &ConstraintError{Variable: variable, Constraint: constraint, msg: msg}
}

// Error names the variable, the constraint and the value.
func (e *ConstraintError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("variable %q: value %s violates constraint %s: %s", e.Variable, e.Value, e.Constraint, e.Reason)
}

// Is makes a ConstraintError match ErrConstraint and ErrInvalidArgument.
func (e *ConstraintError) Is(target error) bool {
	return target == ErrConstraint || target == ErrInvalidArgument
}

// LimitError names the configured limit a request would exceed. It matches
// ErrLimit.
type LimitError struct {
	Limit string // the limit's name, e.g. "max_watches_per_session"
	Max   int64  // the limit's value (0 when built from a status)
	What  string // what exceeded it ("" when built from a status)
	msg   string
}

// Limit builds a LimitError whose message is msg.
func Limit(limit, msg string) *LimitError { return &LimitError{Limit: limit, msg: msg} }

// Error names the limit and what exceeded it.
func (e *LimitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("%s: limit %s is %d", e.What, e.Limit, e.Max)
}

// Is makes a LimitError match ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// VersionConflictError reports a compare-and-set that found the variable at
// another version. It matches ErrVersionConflict.
type VersionConflictError struct {
	Variable string // the variable's name
	Expected int64  // the version the write asked for
	Actual   int64  // the version the variable was at
	msg      string
}

// VersionConflict builds a VersionConflictError whose message is msg.
func VersionConflict(variable string, expected, actual int64, msg string) *VersionConflictError {
	return &VersionConflictError{Variable: variable, Expected: expected, Actual: actual, msg: msg}
}

// Error names the variable and both versions.
func (e *VersionConflictError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("%v: variable %q is at version %d, not the expected %d", ErrVersionConflict, e.Variable, e.Actual, e.Expected)
}

// Is makes a VersionConflictError match ErrVersionConflict.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }

// RevisionOutOfRangeError reports a watch that asked to resume beyond the
// session's revision + 1 within the same incarnation (or without one). It
// matches ErrOutOfRange.
type RevisionOutOfRangeError struct {
	Session         string
	StartRevision   int64  // the start_revision asked for
	SessionRevision int64  // the session's revision
	Incarnation     string // the session's incarnation
	msg             string
}

// RevisionOutOfRange builds a RevisionOutOfRangeError whose message is msg.
func RevisionOutOfRange(session string, start, revision int64, incarnation, msg string) *RevisionOutOfRangeError {
	return &RevisionOutOfRangeError{Session: session, StartRevision: start, SessionRevision: revision, Incarnation: incarnation, msg: msg}
}

// Error names both revisions.
func (e *RevisionOutOfRangeError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("%v: start_revision %d is beyond session %q's revision %d + 1 (incarnation %s); resume from a revision this session has, or watch afresh",
		ErrOutOfRange, e.StartRevision, e.Session, e.SessionRevision, e.Incarnation)
}

// Is makes a RevisionOutOfRangeError match ErrOutOfRange.
func (e *RevisionOutOfRangeError) Is(target error) bool { return target == ErrOutOfRange }
