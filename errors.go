package varbridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
)

// Sentinel errors. LocalState and BridgedState return the same ones for the
// same failures, so callers test them with errors.Is either way.
var (
	// ErrNotFound: a variable identifier named nothing (see NotFoundError).
	ErrNotFound = errors.New("variable not found")
	// ErrSessionNotFound: the session does not exist (or expired).
	ErrSessionNotFound = errors.New("session not found")
	// ErrSessionClosed: the session was cleaned up or expired while watched.
	ErrSessionClosed = errors.New("session closed")
	// ErrAlreadyExists: a variable with that name is already registered.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a malformed request (see also ErrConstraint).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrConstraint: a value breaks its variable's constraints (see ConstraintError).
	ErrConstraint = errors.New("constraint violated")
	// ErrVersionConflict: a compare-and-set found another version.
	ErrVersionConflict = errors.New("version conflict")
	// ErrLimit: a configured limit would be exceeded (see LimitError).
	ErrLimit = errors.New("limit exceeded")
	// ErrUnavailable: the server could not be reached.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: the call lacked valid credentials.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the credentials do not allow the call.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnknownWatch: UnwatchVariables got a ref this provider did not issue
	// or already removed.
	ErrUnknownWatch = errors.New("unknown watch")
	// ErrClosed: the provider was closed.
	ErrClosed = errors.New("state provider closed")
	// ErrGaveUp: a watch stopped reconnecting after too many consecutive failures.
	ErrGaveUp = errors.New("watch gave up")
)

// NotFoundError lists every identifier that named no variable in a session.
// It matches ErrNotFound.
type NotFoundError struct {
	Session     string
	Identifiers []string
	msg         string
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
	msg        string
}

// Error names the variable, the constraint and the value.
func (e *ConstraintError) Error() string { return e.msg }

// Is makes a ConstraintError match ErrConstraint and ErrInvalidArgument.
func (e *ConstraintError) Is(target error) bool {
	return target == ErrConstraint || target == ErrInvalidArgument
}

// LimitError names the configured limit a request would exceed. It matches
// ErrLimit.
type LimitError struct {
	Limit string // e.g. "max_watches_per_session"
	msg   string
}

// Error names the limit and what exceeded it.
func (e *LimitError) Error() string { return e.msg }

// Is makes a LimitError match ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// kindError is an error of one sentinel kind with its own message; Unwrap
// gives the cause (a gRPC status error for BridgedState).
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.cause }

// fromStore maps an internal/store error to the package's errors, keeping
// the store's message (the server sends the very same message).
func fromStore(err error) error {
	if err == nil {
		return nil
	}
	var (
		nf *store.NotFoundError
		ce *store.ConstraintError
		le *store.LimitError
	)
	switch {
	case errors.As(err, &nf):
		return &NotFoundError{Session: nf.Session, Identifiers: nf.Identifiers, msg: err.Error()}
	case errors.As(err, &ce):
		return &ConstraintError{Variable: ce.Variable, Constraint: ce.Constraint, msg: err.Error()}
	case errors.As(err, &le):
		return &LimitError{Limit: le.Limit, msg: err.Error()}
	case errors.Is(err, store.ErrSessionNotFound):
		return &kindError{ErrSessionNotFound, err.Error(), err}
	case errors.Is(err, store.ErrSessionClosed):
		return &kindError{ErrSessionClosed, err.Error(), err}
	case errors.Is(err, store.ErrAlreadyExists):
		return &kindError{ErrAlreadyExists, err.Error(), err}
	case errors.Is(err, store.ErrVersionConflict):
		return &kindError{ErrVersionConflict, err.Error(), err}
	case errors.Is(err, store.ErrInvalidArgument), errors.Is(err, where.ErrInvalid):
		return &kindError{ErrInvalidArgument, err.Error(), err}
	}
	return err
}

// fromStatus maps a gRPC error to the package's errors. The server sends the
// store's messages, so both providers report the same text.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.ResourceInfo); ok && ri.GetResourceType() == "variable" {
				return &NotFoundError{Session: ri.GetResourceName(), Identifiers: quotedAfter(msg, " has no variable "), msg: msg}
			}
		}
		if strings.Contains(msg, store.ErrSessionClosed.Error()) {
			return &kindError{ErrSessionClosed, msg, err}
		}
		return &kindError{ErrSessionNotFound, msg, err}
	case codes.InvalidArgument:
		for _, d := range st.Details() {
			br, ok := d.(*errdetails.BadRequest)
			if !ok {
				continue
			}
			for _, fv := range br.GetFieldViolations() {
				if fv.GetReason() == "CONSTRAINT_VIOLATION" {
					vars := quotedAfter(msg, "variable ")
					ce := &ConstraintError{Constraint: strings.TrimPrefix(fv.GetField(), "constraints."), msg: msg}
					if len(vars) > 0 {
						ce.Variable = vars[0]
					}
					return ce
				}
			}
		}
		return &kindError{ErrInvalidArgument, msg, err}
	case codes.ResourceExhausted:
		le := &LimitError{msg: msg}
		for _, d := range st.Details() {
			if qf, ok := d.(*errdetails.QuotaFailure); ok && len(qf.GetViolations()) > 0 {
				le.Limit = qf.GetViolations()[0].GetSubject()
			}
		}
		return le
	case codes.AlreadyExists:
		return &kindError{ErrAlreadyExists, msg, err}
	case codes.FailedPrecondition:
		return &kindError{ErrVersionConflict, msg, err}
	case codes.Unavailable:
		return &kindError{ErrUnavailable, "unavailable: " + msg, err}
	case codes.Unauthenticated:
		return &kindError{ErrUnauthenticated, "unauthenticated: " + msg, err}
	case codes.PermissionDenied:
		return &kindError{ErrPermissionDenied, "permission denied: " + msg, err}
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, msg)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, msg)
	}
	return err
}

// quotedAfter parses the Go-quoted strings of a comma-separated list that
// follows marker in msg: `... has no variable "a", "b"` gives [a b].
func quotedAfter(msg, marker string) []string {
	i := strings.Index(msg, marker)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(marker):]
	var out []string
	for {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return out
		}
		s, _ := strconv.Unquote(q)
		out = append(out, s)
		rest = rest[len(q):]
		if !strings.HasPrefix(rest, ", ") {
			return out
		}
		rest = rest[2:]
	}
}
