package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
	pb "github.com/varbridge/varbridge/proto/varbridge/v1"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo the server sends.
const ErrorDomain = "varbridge.dev"

// Reason returns the ErrorInfo reason string of r: its enum name without
// the ERROR_REASON_ prefix, as the proto documents.
func Reason(r pb.ErrorReason) string { return strings.TrimPrefix(r.String(), "ERROR_REASON_") }

// toStatus maps a store error to its gRPC status, keeping the store's message
// (which names the session, variable, constraint or limit) for people, and
// carrying what a program needs as details: always an ErrorInfo whose
// reason and metadata the proto documents, plus the standard detail that
// fits (BadRequest, QuotaFailure, ResourceInfo).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		ce  *store.ConstraintError
		fe  *store.FieldError
		le  *store.LimitError
		nf  *store.NotFoundError
		vc  *store.VersionConflictError
		sc  *store.SessionClosedError
		ex  *store.ExistsError
		oor *store.OutOfRangeError
		fc  *where.CostError

		full   *store.StorageFullError
		failed *store.StorageFailedError
		unav   *store.UnavailableError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &ce):
		return statusError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_CONSTRAINT_VIOLATION, msg,
			map[string]string{"variable": ce.Variable, "constraint": ce.Constraint, "value": ce.Value},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
				Field: "constraints." + ce.Constraint, Description: msg, Reason: "CONSTRAINT_VIOLATION",
			}}})
	case errors.As(err, &fe):
		return statusError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, msg,
			map[string]string{"field": fe.Field},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Reason}}})
	case errors.As(err, &le):
		return statusError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_LIMIT_EXCEEDED, msg,
			map[string]string{"limit": le.Limit, "max": strconv.FormatInt(le.Max, 10)},
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: le.Limit, Description: msg}}})
	case errors.As(err, &nf):
		details := make([]protoadapt.MessageV1, len(nf.Identifiers))
		for i, id := range nf.Identifiers {
			details[i] = &errdetails.ResourceInfo{ResourceType: "variable", ResourceName: id, Owner: nf.Session, Description: msg}
		}
		return statusError(codes.NotFound, pb.ErrorReason_ERROR_REASON_VARIABLE_NOT_FOUND, msg,
			map[string]string{"session_id": nf.Session, "identifiers": strings.Join(nf.Identifiers, "\n")}, details...)
	case errors.As(err, &sc) && sc.Cause == store.ClosedUnavailable:
		return statusError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORAGE_UNAVAILABLE, msg,
			map[string]string{"session_id": sc.Session, "cause": string(sc.Cause)})
	case errors.As(err, &sc):
		return statusError(codes.NotFound, pb.ErrorReason_ERROR_REASON_SESSION_CLOSED, msg,
			map[string]string{"session_id": sc.Session, "cause": string(sc.Cause)},
			&errdetails.ResourceInfo{ResourceType: "session", ResourceName: sc.Session, Description: msg})
	case errors.As(err, &vc):
		return statusError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_VERSION_CONFLICT, msg, map[string]string{
			"variable": vc.Variable, "expected_version": strconv.FormatInt(vc.Expected, 10), "actual_version": strconv.FormatInt(vc.Actual, 10),
		})
	case errors.As(err, &ex):
		return statusError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_VARIABLE_EXISTS, msg,
			map[string]string{"session_id": ex.Session, "name": ex.Name})
	case errors.As(err, &oor):
		return statusError(codes.OutOfRange, pb.ErrorReason_ERROR_REASON_REVISION_OUT_OF_RANGE, msg, map[string]string{
			"session_id": oor.Session, "start_revision": strconv.FormatInt(oor.StartRevision, 10),
			"session_revision": strconv.FormatInt(oor.SessionRevision, 10), "incarnation": oor.Incarnation,
		})
	case errors.As(err, &fc):
		return statusError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_FILTER_TOO_COSTLY, msg,
			map[string]string{"limit": fc.Limit, "max": strconv.FormatInt(fc.Max, 10)},
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: fc.Limit, Description: msg}}})
	case errors.As(err, &full):
		return statusError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_STORAGE_FULL, msg,
			map[string]string{"data_dir": full.Dir, "available_bytes": strconv.FormatUint(full.Available, 10), "reserve_bytes": strconv.FormatUint(full.Reserve, 10)},
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "disk", Description: msg}}})
	case errors.As(err, &unav):
		return statusError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORAGE_UNAVAILABLE, msg, map[string]string{"engine": unav.Engine})
	case errors.As(err, &failed):
		return statusError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORAGE_FAILED, msg, map[string]string{"data_dir": failed.Dir})
	case errors.Is(err, store.ErrSessionNotFound):
		var snf *store.SessionNotFoundError
		id := ""
		if errors.As(err, &snf) {
			id = snf.Session
		}
		return statusError(codes.NotFound, pb.ErrorReason_ERROR_REASON_SESSION_NOT_FOUND, msg,
			map[string]string{"session_id": id},
			&errdetails.ResourceInfo{ResourceType: "session", ResourceName: id, Description: msg})
	case errors.Is(err, store.ErrInvalidArgument):
		return statusError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, msg, nil)
	case errors.Is(err, where.ErrInvalid):
		return statusError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, "where: "+msg,
			map[string]string{"field": "where"},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "where", Description: msg}}})
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	}
	return status.Error(codes.Internal, msg)
}

// invalidField is the status of a bad request field that the store does
// not see (it is checked before the store is called).
func invalidField(field, format string, args ...any) error {
	return toStatus(&store.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// statusError builds a status with the ErrorInfo every varbridge error
// carries, and any further details.
func statusError(c codes.Code, r pb.ErrorReason, msg string, md map[string]string, details ...protoadapt.MessageV1) error {
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: Reason(r), Metadata: md}}, details...)
	st, derr := status.New(c, msg).WithDetails(all...)
	if derr != nil { // only a malformed detail fails; the code and message still stand
		return status.Error(c, msg)
	}
	return st.Err()
}
