"""gRPC status -> typed exception mapping, with and without google.rpc details."""

from __future__ import annotations

import grpc
import pytest

import varbridge
from varbridge import _status
from varbridge.errors import error_for, from_rpc_error

C = grpc.StatusCode


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def status_bin(code: int, message: str, *details: tuple[str, object]) -> bytes:
    st = _status._Status(code=code, message=message)
    for type_name, msg in details:
        st.details.add(
            type_url=f"type.googleapis.com/{type_name}",
            value=msg.SerializeToString(),  # type: ignore[attr-defined]
        )
    return st.SerializeToString()


@pytest.mark.parametrize(
    ("code", "details", "kw", "cls"),
    [
        (C.NOT_FOUND, 'session not found: session "x"', {}, varbridge.SessionNotFound),
        (C.NOT_FOUND, "session closed", {}, varbridge.SessionNotFound),
        (C.NOT_FOUND, 'session "x" has no variable "y"', {}, varbridge.VariableNotFound),
        (C.NOT_FOUND, 'variable "y" not found in session "x"', {}, varbridge.VariableNotFound),
        (C.NOT_FOUND, "whatever", {"session_rpc": True}, varbridge.SessionNotFound),
        (C.NOT_FOUND, "no idea", {}, varbridge.NotFound),
        (C.INVALID_ARGUMENT, "bad", {}, varbridge.InvalidArgument),
        (C.INVALID_ARGUMENT, "bad", {"write": True}, varbridge.ConstraintViolation),
        (C.FAILED_PRECONDITION, "version 3, want 2", {}, varbridge.VersionConflict),
        (C.ALREADY_EXISTS, "taken", {}, varbridge.AlreadyExists),
        (C.UNAUTHENTICATED, "no token", {}, varbridge.Unauthenticated),
        (C.PERMISSION_DENIED, "wrong token", {}, varbridge.PermissionDenied),
        (C.RESOURCE_EXHAUSTED, "limit", {}, varbridge.ResourceExhausted),
        (C.UNAVAILABLE, "down", {}, varbridge.Unavailable),
        (C.DEADLINE_EXCEEDED, "slow", {}, varbridge.DeadlineExceeded),
        (C.INTERNAL, "oops", {}, varbridge.VarbridgeError),
    ],
)
def test_mapping_from_messages(code, details, kw, cls) -> None:
    e = error_for(code, details, **kw)
    assert type(e) is cls
    assert e.code == code
    assert e.details == details
    assert details in str(e)


def test_hierarchy() -> None:
    assert issubclass(varbridge.VariableNotFound, varbridge.NotFound)
    assert issubclass(varbridge.VariableNotFound, KeyError)
    assert issubclass(varbridge.SessionNotFound, varbridge.NotFound)
    assert issubclass(varbridge.ConstraintViolation, varbridge.InvalidArgument)
    assert issubclass(varbridge.InvalidArgument, ValueError)
    assert issubclass(varbridge.InvalidValue, varbridge.ConstraintViolation)
    assert issubclass(varbridge.InvalidValue, TypeError)
    for cls in (varbridge.VersionConflict, varbridge.AlreadyExists, varbridge.ResourceExhausted):
        assert issubclass(cls, varbridge.VarbridgeError)
    assert str(varbridge.VariableNotFound("gone", C.NOT_FOUND)) == "gone (NOT_FOUND)"


def test_details_decide_session_or_variable() -> None:
    # The message alone would say "session"; ResourceInfo says variable.
    ri = _status._ResourceInfo(resource_type="variable", resource_name="s1")
    raw = status_bin(5, 'session "s1" has no variable', ("google.rpc.ResourceInfo", ri))
    err = FakeRpcError(C.NOT_FOUND, "session s1 ...", (("grpc-status-details-bin", raw),))
    e = from_rpc_error(err)
    assert isinstance(e, varbridge.VariableNotFound)
    assert e.status_details is not None
    assert e.status_details.resource_type == "variable"
    ri = _status._ResourceInfo(resource_type="session")
    raw = status_bin(5, "x", ("google.rpc.ResourceInfo", ri))
    err = FakeRpcError(C.NOT_FOUND, "variable-ish text", (("grpc-status-details-bin", raw),))
    assert isinstance(from_rpc_error(err), varbridge.SessionNotFound)


def test_constraint_details() -> None:
    fv = _status._BadRequest()
    fv.field_violations.add(
        field="constraints.max", description="too big", reason="CONSTRAINT_VIOLATION"
    )
    raw = status_bin(3, "x", ("google.rpc.BadRequest", fv))
    err = FakeRpcError(C.INVALID_ARGUMENT, 'variable "t": ...', (("grpc-status-details-bin", raw),))
    e = from_rpc_error(err, write=True)
    assert isinstance(e, varbridge.ConstraintViolation)
    assert e.constraint == "max"
    assert e.field == "constraints.max"


def test_malformed_request_on_write_is_not_a_constraint_violation() -> None:
    fv = _status._BadRequest()
    fv.field_violations.add(field="constraints", description="min > max")
    raw = status_bin(3, "x", ("google.rpc.BadRequest", fv))
    err = FakeRpcError(C.INVALID_ARGUMENT, "constraints: ...", (("grpc-status-details-bin", raw),))
    e = from_rpc_error(err, write=True)
    assert type(e) is varbridge.InvalidArgument
    # a bad value is one
    fv = _status._BadRequest()
    fv.field_violations.add(field="value", description="a float variable cannot hold string")
    raw = status_bin(3, "x", ("google.rpc.BadRequest", fv))
    err = FakeRpcError(C.INVALID_ARGUMENT, "value: ...", (("grpc-status-details-bin", raw),))
    assert type(from_rpc_error(err, write=True)) is varbridge.ConstraintViolation


def test_quota_details() -> None:
    qf = _status._QuotaFailure()
    qf.violations.add(subject="max_watches_per_session", description="too many")
    raw = status_bin(8, "x", ("google.rpc.QuotaFailure", qf))
    err = FakeRpcError(C.RESOURCE_EXHAUSTED, "limit", (("grpc-status-details-bin", raw),))
    e = from_rpc_error(err)
    assert isinstance(e, varbridge.ResourceExhausted)
    assert e.limit == "max_watches_per_session"


def test_garbage_details_are_ignored() -> None:
    err = FakeRpcError(C.NOT_FOUND, "session closed", (("grpc-status-details-bin", b"\xff\x00"),))
    assert isinstance(from_rpc_error(err), varbridge.SessionNotFound)
    assert _status.parse(None) is None
    assert _status.parse((("other", "x"),)) is None
