package store

import (
	"fmt"
	"strings"
	"time"

	"github.com/varbridge/varbridge/internal/verr"
)

// Sentinel errors, shared with the varbridge package (internal/verr). Every
// error the store returns matches exactly one of them (a ConstraintError
// also matches ErrInvalidArgument, as users see it), so callers map errors
// to status codes with errors.Is, typed errors first.
var (
	ErrSessionNotFound  = verr.ErrSessionNotFound
	ErrVariableNotFound = verr.ErrNotFound
	ErrAlreadyExists    = verr.ErrAlreadyExists
	ErrInvalidArgument  = verr.ErrInvalidArgument
	ErrConstraint       = verr.ErrConstraint
	ErrVersionConflict  = verr.ErrVersionConflict
	ErrLimit            = verr.ErrLimit
	// ErrSessionClosed ends the watches of a session that was cleaned up or expired.
	ErrSessionClosed = verr.ErrSessionClosed
	// ErrOutOfRange: a watch asked to resume beyond the session's revision.
	ErrOutOfRange = verr.ErrOutOfRange
)

// CloseCause says why a session ended under its watches.
type CloseCause string

// Close causes; the wire carries them in ErrorInfo metadata "cause".
const (
	ClosedCleanedUp CloseCause = "cleaned_up"
	ClosedExpired   CloseCause = "expired"
	ClosedShutdown  CloseCause = "shutdown"
	// ClosedUnavailable: this server lost touch with its shared engine
	// (etcd), so it cannot promise its watches are current. The session
	// goes on; the watch resumes on a server that has not.
	ClosedUnavailable CloseCause = "unavailable"
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
	case ClosedUnavailable:
		return fmt.Sprintf("%v: this server lost touch with the shared store, so the watch of session %q cannot be kept current here: resume it on another server", ErrSessionClosed, e.Session)
	}
	return fmt.Sprintf("%v: session %q ended because %s", ErrSessionClosed, e.Session, why)
}

// Is makes a SessionClosedError match ErrSessionClosed.
func (e *SessionClosedError) Is(target error) bool { return target == ErrSessionClosed }

// VersionConflictError reports a compare-and-set that found another version.
type VersionConflictError = verr.VersionConflictError

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
type OutOfRangeError = verr.RevisionOutOfRangeError

// ConstraintError reports a value that breaks one of its variable's constraints.
type ConstraintError = verr.ConstraintError

// NotFoundError lists every identifier that named no variable in a session.
type NotFoundError = verr.NotFoundError

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
type LimitError = verr.LimitError

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// SessionNotFoundError names a session that does not exist.
type SessionNotFoundError struct {
	Session string
	dropped bool // see session.goneErr
}

// Error names the session.
func (e *SessionNotFoundError) Error() string {
	return fmt.Sprintf("%v: session %q", ErrSessionNotFound, e.Session)
}

// Is makes a SessionNotFoundError match ErrSessionNotFound.
func (e *SessionNotFoundError) Is(target error) bool { return target == ErrSessionNotFound }

func sessionNotFound(id string) error { return &SessionNotFoundError{Session: id} }

// goneErr is the error of a call that found its session closed under it.
// On a Shared engine that may be this server dropping its copy (see
// Store.reread), which another read of the engine tells apart from the
// session ending.
func (s *session) goneErr() error {
	return &SessionNotFoundError{Session: s.id, dropped: s.opts.shared}
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
