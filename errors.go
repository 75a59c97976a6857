package varbridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
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
	// ErrGaveUp: a watch stopped reconnecting after too many consecutive
	// failures (see GaveUpError).
	ErrGaveUp = errors.New("watch gave up")
	// ErrOutOfRange: a watch asked to resume beyond the session's revision in
	// the same incarnation (see RevisionOutOfRangeError).
	ErrOutOfRange = errors.New("revision out of range")
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

// VersionConflictError reports a compare-and-set (WithExpectedVersion,
// WithExpectedVersions) that found the variable at another version. It
// matches ErrVersionConflict; errors.As gives both versions, so a caller can
// re-read and retry without parsing text.
type VersionConflictError struct {
	Variable string // the variable's name
	Expected int64  // the version the write asked for
	Actual   int64  // the version the variable was at
	msg      string
}

// Error names the variable and both versions.
func (e *VersionConflictError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("version conflict: variable %q is at version %d, not the expected %d", e.Variable, e.Actual, e.Expected)
}

// Is makes a VersionConflictError match ErrVersionConflict.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }

// RevisionOutOfRangeError reports a watch that asked to resume
// (WithStartRevision) beyond the session's revision + 1 within the same
// incarnation, or without one: the revision cannot come from this session's
// history, and silence would hide whatever the caller lacks. It matches
// ErrOutOfRange. Resume with the incarnation the revision was seen in
// (WithIncarnation), or watch afresh.
type RevisionOutOfRangeError struct {
	Session         string
	StartRevision   int64  // the revision asked for
	SessionRevision int64  // the session's revision
	Incarnation     string // the session's incarnation
	msg             string
}

// Error names both revisions.
func (e *RevisionOutOfRangeError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("revision out of range: start_revision %d is beyond session %q's revision %d + 1 (incarnation %s)",
		e.StartRevision, e.Session, e.SessionRevision, e.Incarnation)
}

// Is makes a RevisionOutOfRangeError match ErrOutOfRange.
func (e *RevisionOutOfRangeError) Is(target error) bool { return target == ErrOutOfRange }

// GaveUpError ends a BridgedState watch that failed to reconnect Attempts
// times in a row (WithMaxFailures) over Elapsed, counted from the break. It
// matches ErrGaveUp and unwraps to the last error, so errors.Is(err,
// ErrUnavailable) still tells a server that stayed away. The Python client
// raises GaveUp with the same fields and the same message.
type GaveUpError struct {
	Attempts int
	Elapsed  time.Duration
	Last     error
}

// Error says "gave up after N attempts over T: last error: ...", T in
// seconds with one decimal, exactly as the Python client does.
func (e *GaveUpError) Error() string {
	return fmt.Sprintf("gave up after %d attempts over %.1fs: last error: %v", e.Attempts, e.Elapsed.Seconds(), e.Last)
}

// Is makes a GaveUpError match ErrGaveUp.
func (e *GaveUpError) Is(target error) bool { return target == ErrGaveUp }

// Unwrap gives the last error.
func (e *GaveUpError) Unwrap() error { return e.Last }

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
		vc *store.VersionConflictError
		or *store.OutOfRangeError
		fc *where.CostError
	)
	switch {
	case errors.As(err, &nf):
		return &NotFoundError{Session: nf.Session, Identifiers: nf.Identifiers, msg: err.Error()}
	case errors.As(err, &ce):
		return &ConstraintError{Variable: ce.Variable, Constraint: ce.Constraint, msg: err.Error()}
	case errors.As(err, &le):
		return &LimitError{Limit: le.Limit, msg: err.Error()}
	case errors.As(err, &fc): // as BridgedState hears it: FILTER_TOO_COSTLY is a limit
		return &LimitError{Limit: fc.Limit, msg: err.Error()}
	case errors.As(err, &vc):
		return &VersionConflictError{Variable: vc.Variable, Expected: vc.Expected, Actual: vc.Actual, msg: err.Error()}
	case errors.As(err, &or):
		return &RevisionOutOfRangeError{Session: or.Session, StartRevision: or.Start, SessionRevision: or.Revision,
			Incarnation: or.Incarnation, msg: err.Error()}
	case errors.Is(err, store.ErrSessionNotFound):
		return &kindError{ErrSessionNotFound, err.Error(), err}
	case errors.Is(err, store.ErrSessionClosed):
		return &kindError{ErrSessionClosed, err.Error(), err}
	case errors.Is(err, store.ErrAlreadyExists):
		return &kindError{ErrAlreadyExists, err.Error(), err}
	case errors.Is(err, store.ErrVersionConflict):
		return &kindError{ErrVersionConflict, err.Error(), err}
	case errors.Is(err, store.ErrOutOfRange):
		return &kindError{ErrOutOfRange, err.Error(), err}
	case errors.Is(err, store.ErrInvalidArgument), errors.Is(err, where.ErrInvalid):
		return &kindError{ErrInvalidArgument, err.Error(), err}
	}
	return err
}

// errorDomain is the google.rpc.ErrorInfo domain of varbridge's errors.
const errorDomain = "varbridge.dev"

// errorInfo returns the status's varbridge ErrorInfo reason (an ErrorReason
// without its ERROR_REASON_ prefix) and metadata; UNSPECIFIED without one.
func errorInfo(st *status.Status) (pb.ErrorReason, map[string]string) {
	for _, d := range st.Details() {
		ei, ok := d.(*errdetails.ErrorInfo)
		if !ok || ei.GetDomain() != errorDomain {
			continue
		}
		if r, ok := pb.ErrorReason_value["ERROR_REASON_"+ei.GetReason()]; ok {
			return pb.ErrorReason(r), ei.GetMetadata()
		}
	}
	return pb.ErrorReason_ERROR_REASON_UNSPECIFIED, nil
}

// fromStatus maps a gRPC error to the package's errors: by the ErrorInfo
// reason the server attaches first (with its metadata for the typed
// errors), by the status code when there is none (an older server, or an
// error from the transport). Never by message text, which may change; the
// message is kept as the error's text, so both providers read alike.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	reason, md := errorInfo(st)
	mapped := fromReason(st, reason, md, err)
	if mapped == nil {
		return fromCode(st, err)
	}
	// A reason refines its code; where the code says something the reason
	// does not (ALREADY_EXISTS with TOKEN_REQUIRED: the session exists, and
	// joining it needs its token), the error matches the code's sentinel too.
	if k := codeSentinel[st.Code()]; k != nil && !errors.Is(mapped, k) {
		return &kindError{kind: k, msg: mapped.Error(), cause: mapped}
	}
	return mapped
}

// codeSentinel lists the codes whose sentinel an error keeps whatever its
// reason says; the other codes are fully refined by their reasons (a
// NOT_FOUND for SESSION_CLOSED must not match ErrSessionNotFound).
var codeSentinel = map[codes.Code]error{
	codes.AlreadyExists:    ErrAlreadyExists,
	codes.Unauthenticated:  ErrUnauthenticated,
	codes.PermissionDenied: ErrPermissionDenied,
	codes.Unavailable:      ErrUnavailable,
}

// fromReason maps a varbridge ErrorInfo reason; nil for UNSPECIFIED or a
// reason this client does not know (a newer server), left to the code.
func fromReason(st *status.Status, reason pb.ErrorReason, md map[string]string, err error) error {
	msg := st.Message()
	switch reason {
	case pb.ErrorReason_ERROR_REASON_SESSION_NOT_FOUND:
		return &kindError{ErrSessionNotFound, msg, err}
	case pb.ErrorReason_ERROR_REASON_SESSION_CLOSED:
		return &kindError{ErrSessionClosed, msg, err}
	case pb.ErrorReason_ERROR_REASON_VARIABLE_NOT_FOUND:
		var idents []string
		if s := md["identifiers"]; s != "" {
			idents = strings.Split(s, "\n")
		}
		return &NotFoundError{Session: md["session_id"], Identifiers: idents, msg: msg}
	case pb.ErrorReason_ERROR_REASON_VARIABLE_EXISTS:
		return &kindError{ErrAlreadyExists, msg, err}
	case pb.ErrorReason_ERROR_REASON_CONSTRAINT_VIOLATION:
		return &ConstraintError{Variable: md["variable"], Constraint: md["constraint"], msg: msg}
	case pb.ErrorReason_ERROR_REASON_VERSION_CONFLICT:
		return &VersionConflictError{Variable: md["variable"], Expected: mdInt(md, "expected_version"),
			Actual: mdInt(md, "actual_version"), msg: msg}
	case pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:
		return &kindError{ErrInvalidArgument, msg, err}
	case pb.ErrorReason_ERROR_REASON_LIMIT_EXCEEDED, pb.ErrorReason_ERROR_REASON_FILTER_TOO_COSTLY:
		return &LimitError{Limit: md["limit"], msg: msg}
	case pb.ErrorReason_ERROR_REASON_REVISION_OUT_OF_RANGE:
		return &RevisionOutOfRangeError{Session: md["session_id"], StartRevision: mdInt(md, "start_revision"),
			SessionRevision: mdInt(md, "session_revision"), Incarnation: md["incarnation"], msg: msg}
	case pb.ErrorReason_ERROR_REASON_TOKEN_REQUIRED:
		return &kindError{ErrUnauthenticated, "unauthenticated: " + msg, err}
	case pb.ErrorReason_ERROR_REASON_TOKEN_INVALID:
		return &kindError{ErrPermissionDenied, "permission denied: " + msg, err}
	}
	return nil
}

// fromCode maps a status without a varbridge ErrorInfo by its code alone.
func fromCode(st *status.Status, err error) error {
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.ResourceInfo); ok && ri.GetResourceType() == "variable" {
				return &NotFoundError{msg: msg}
			}
		}
		return &kindError{ErrSessionNotFound, msg, err}
	case codes.InvalidArgument:
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
	case codes.OutOfRange:
		return &kindError{ErrOutOfRange, msg, err}
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

// mdInt reads an integer from ErrorInfo metadata; 0 when absent or malformed.
func mdInt(md map[string]string, key string) int64 {
	n, _ := strconv.ParseInt(md[key], 10, 64)
	return n
}
