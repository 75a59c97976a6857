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

	"github.com/varbridge/varbridge/internal/verr"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// Sentinel errors. BridgedState and local.State return the same ones for
// the same failures, so callers test them with errors.Is either way. Those a
// store can return are internal/verr's, the very values the store uses.
var (
	// ErrNotFound: a variable identifier named nothing (see NotFoundError).
	ErrNotFound = verr.ErrNotFound
	// ErrSessionNotFound: the session does not exist (or expired).
	ErrSessionNotFound = verr.ErrSessionNotFound
	// ErrSessionClosed: the session was cleaned up or expired while watched.
	ErrSessionClosed = verr.ErrSessionClosed
	// ErrAlreadyExists: a variable with that name is already registered.
	ErrAlreadyExists = verr.ErrAlreadyExists
	// ErrInvalidArgument: a malformed request (see also ErrConstraint).
	ErrInvalidArgument = verr.ErrInvalidArgument
	// ErrConstraint: a value breaks its variable's constraints (see ConstraintError).
	ErrConstraint = verr.ErrConstraint
	// ErrVersionConflict: a compare-and-set found another version.
	ErrVersionConflict = verr.ErrVersionConflict
	// ErrLimit: a configured limit would be exceeded (see LimitError).
	ErrLimit = verr.ErrLimit
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
	ErrOutOfRange = verr.ErrOutOfRange
)

// The typed errors are defined once, in internal/verr: the store returns
// them, local.State hands them on unchanged, and BridgedState builds them
// from the status details (ErrorInfo reason and metadata) the server sends.

// NotFoundError lists every identifier that named no variable in a session
// (fields Session, Identifiers). It matches ErrNotFound.
type NotFoundError = verr.NotFoundError

// ConstraintError reports a value that breaks one of its variable's
// constraints: Variable (its name) and Constraint (the constraint's wire
// name: "min", "pattern", ...); from local.State also Value (abbreviated)
// and Reason. Its message names the variable, the constraint and the
// value. It matches ErrConstraint and ErrInvalidArgument.
type ConstraintError = verr.ConstraintError

// LimitError names the configured limit a request would exceed in Limit
// (e.g. "max_watches_per_session"); from local.State also Max and What. It
// matches ErrLimit.
type LimitError = verr.LimitError

// VersionConflictError reports a compare-and-set (WithExpectedVersion,
// WithExpectedVersions) that found the variable at another version. It
// matches ErrVersionConflict; errors.As gives both versions (Expected: the
// version the write asked for, Actual: the one the variable was at) and the
// variable's name (Variable), so a caller can re-read and retry without
// parsing text.
type VersionConflictError = verr.VersionConflictError

// RevisionOutOfRangeError reports a watch that asked to resume
// (WithStartRevision) beyond the session's revision + 1 within the same
// incarnation, or without one: the revision cannot come from this session's
// history, and silence would hide whatever the caller lacks. Its fields are
// Session, StartRevision (the revision asked for), SessionRevision and
// Incarnation (the session's). It matches ErrOutOfRange. Resume with the
// incarnation the revision was seen in (WithIncarnation), or watch afresh.
type RevisionOutOfRangeError = verr.RevisionOutOfRangeError

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
// gives the cause (a gRPC status error).
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.cause }

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
		return verr.NotFound(md["session_id"], idents, msg)
	case pb.ErrorReason_ERROR_REASON_VARIABLE_EXISTS:
		return &kindError{ErrAlreadyExists, msg, err}
	case pb.ErrorReason_ERROR_REASON_CONSTRAINT_VIOLATION:
		return verr.Constraint(md["variable"], md["constraint"], msg)
	case pb.ErrorReason_ERROR_REASON_VERSION_CONFLICT:
		return verr.VersionConflict(md["variable"], mdInt(md, "expected_version"), mdInt(md, "actual_version"), msg)
	case pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:
		return &kindError{ErrInvalidArgument, msg, err}
	case pb.ErrorReason_ERROR_REASON_LIMIT_EXCEEDED, pb.ErrorReason_ERROR_REASON_FILTER_TOO_COSTLY:
		return verr.Limit(md["limit"], msg)
	case pb.ErrorReason_ERROR_REASON_REVISION_OUT_OF_RANGE:
		return verr.RevisionOutOfRange(md["session_id"], mdInt(md, "start_revision"), mdInt(md, "session_revision"),
			md["incarnation"], msg)
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
				return verr.NotFound("", nil, msg)
			}
		}
		return &kindError{ErrSessionNotFound, msg, err}
	case codes.InvalidArgument:
		return &kindError{ErrInvalidArgument, msg, err}
	case codes.ResourceExhausted:
		le := verr.Limit("", msg)
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
