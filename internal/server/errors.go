package server

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/varbridge/varbridge/internal/store"
	"github.com/varbridge/varbridge/internal/where"
)

// toStatus maps a store error to its gRPC status, keeping the store's message
// (which names the session, variable, constraint or limit) and adding
// google.rpc details where a client can act on them.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		ce *store.ConstraintError
		fe *store.FieldError
		le *store.LimitError
		nf *store.NotFoundError
	)
	switch {
	case errors.As(err, &ce):
		return withDetails(codes.InvalidArgument, err, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field: "constraints." + ce.Constraint, Description: err.Error(), Reason: "CONSTRAINT_VIOLATION",
		}}})
	case errors.As(err, &fe):
		return withDetails(codes.InvalidArgument, err, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field: fe.Field, Description: fe.Reason,
		}}})
	case errors.As(err, &le):
		return withDetails(codes.ResourceExhausted, err, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject: le.Limit, Description: err.Error(),
		}}})
	case errors.As(err, &nf):
		info := &errdetails.ResourceInfo{ResourceType: "variable", ResourceName: nf.Session, Description: err.Error()}
		return withDetails(codes.NotFound, err, info)
	case errors.Is(err, store.ErrSessionNotFound):
		return withDetails(codes.NotFound, err, &errdetails.ResourceInfo{ResourceType: "session", Description: err.Error()})
	case errors.Is(err, store.ErrSessionClosed):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrVersionConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrInvalidArgument), errors.Is(err, where.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func withDetails(c codes.Code, err error, detail protoadapt.MessageV1) error {
	st, derr := status.New(c, err.Error()).WithDetails(detail)
	if derr != nil { // only a malformed detail fails; the code and message still stand
		return status.Error(c, err.Error())
	}
	return st.Err()
}
