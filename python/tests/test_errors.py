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


def error_info(reason: str, **metadata: str) -> tuple[str, object]:
    ei = _status._ErrorInfo(reason=reason, domain="varbridge.dev")
    for k, v in metadata.items():
        ei.metadata[k] = v
    return ("google.rpc.ErrorInfo", ei)


def rpc_error(code: grpc.StatusCode, message: str, *details: tuple[str, object]) -> FakeRpcError:
    raw = status_bin(code.value[0], message, *details)
    return FakeRpcError(code, message, (("grpc-status-details-bin", raw),))


@pytest.mark.parametrize(
    ("code", "kw", "cls"),
    [
        (C.NOT_FOUND, {}, varbridge.NotFound),
        (C.NOT_FOUND, {"session_rpc": True}, varbridge.SessionNotFound),
        (C.INVALID_ARGUMENT, {}, varbridge.InvalidArgument),
        (C.INVALID_ARGUMENT, {"write": True}, varbridge.ConstraintViolation),
        (C.FAILED_PRECONDITION, {}, varbridge.VersionConflict),
        (C.ALREADY_EXISTS, {}, varbridge.AlreadyExists),
        (C.UNAUTHENTICATED, {}, varbridge.Unauthenticated),
        (C.PERMISSION_DENIED, {}, varbridge.PermissionDenied),
        (C.RESOURCE_EXHAUSTED, {}, varbridge.ResourceExhausted),
        (C.UNAVAILABLE, {}, varbridge.Unavailable),
        (C.DEADLINE_EXCEEDED, {}, varbridge.DeadlineExceeded),
        (C.OUT_OF_RANGE, {}, varbridge.RevisionOutOfRange),
        (C.INTERNAL, {}, varbridge.VarbridgeError),
    ],
)
def test_mapping_from_code_without_details(code, kw, cls) -> None:
    details = "any text at all"
    e = error_for(code, details, **kw)
    assert type(e) is cls
    assert e.code == code
    assert e.details == details
    assert details in str(e)


@pytest.mark.parametrize(
    "text",
    [
        'session not found: session "x"',
        "session closed",
        'session "x" has no variable "y"',
        'variable "y" not found in session "x"',
    ],
)
def test_message_text_is_never_parsed(text) -> None:
    # Without details NOT_FOUND is only NotFound, whatever the words say.
    assert type(error_for(C.NOT_FOUND, text)) is varbridge.NotFound


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (C.NOT_FOUND, "SESSION_NOT_FOUND", varbridge.SessionNotFound),
        (C.NOT_FOUND, "SESSION_CLOSED", varbridge.SessionClosed),
        (C.NOT_FOUND, "VARIABLE_NOT_FOUND", varbridge.VariableNotFound),
        (C.ALREADY_EXISTS, "VARIABLE_EXISTS", varbridge.AlreadyExists),
        (C.INVALID_ARGUMENT, "CONSTRAINT_VIOLATION", varbridge.ConstraintViolation),
        (C.FAILED_PRECONDITION, "VERSION_CONFLICT", varbridge.VersionConflict),
        (C.INVALID_ARGUMENT, "INVALID_ARGUMENT", varbridge.InvalidArgument),
        (C.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", varbridge.ResourceExhausted),
        (C.INVALID_ARGUMENT, "LIMIT_EXCEEDED", varbridge.InvalidArgument),
        (C.OUT_OF_RANGE, "REVISION_OUT_OF_RANGE", varbridge.RevisionOutOfRange),
        (C.RESOURCE_EXHAUSTED, "FILTER_TOO_COSTLY", varbridge.FilterTooCostly),
        (C.UNAUTHENTICATED, "TOKEN_REQUIRED", varbridge.Unauthenticated),
        (C.PERMISSION_DENIED, "TOKEN_INVALID", varbridge.PermissionDenied),
    ],
)
def test_mapping_from_error_info_reason(code, reason, cls) -> None:
    # The reason decides, also against misleading words and the write hint.
    for kw in ({}, {"write": True}, {"session_rpc": True}):
        e = from_rpc_error(rpc_error(code, "variable session closed", error_info(reason)), **kw)
        assert type(e) is cls, (kw, type(e))
        assert e.reason == reason


def test_reason_with_another_code_takes_the_codes_class() -> None:
    # Joining an auth session without its token: the id is taken
    # (ALREADY_EXISTS), and the reason says a token is what is missing.
    e = from_rpc_error(rpc_error(C.ALREADY_EXISTS, "x", error_info("TOKEN_REQUIRED")))
    assert type(e) is varbridge.AlreadyExists
    assert e.reason == "TOKEN_REQUIRED"


def test_error_info_metadata() -> None:
    e = from_rpc_error(
        rpc_error(
            C.FAILED_PRECONDITION,
            "x",
            error_info("VERSION_CONFLICT", variable="t", expected_version="2", actual_version="3"),
        )
    )
    assert isinstance(e, varbridge.VersionConflict)
    assert (e.expected_version, e.actual_version) == (2, 3)
    assert e.metadata["variable"] == "t"
    e = from_rpc_error(
        rpc_error(
            C.OUT_OF_RANGE,
            "x",
            error_info(
                "REVISION_OUT_OF_RANGE",
                start_revision="23",
                session_revision="6",
                incarnation="00ff",
            ),
        )
    )
    assert isinstance(e, varbridge.RevisionOutOfRange)
    assert (e.start_revision, e.session_revision, e.incarnation) == (23, 6, "00ff")
    e = from_rpc_error(
        rpc_error(C.NOT_FOUND, "x", error_info("SESSION_CLOSED", session_id="s", cause="expired"))
    )
    assert isinstance(e, varbridge.SessionClosed)
    assert isinstance(e, varbridge.SessionNotFound)
    assert e.cause == "expired"
    e = from_rpc_error(
        rpc_error(
            C.INVALID_ARGUMENT,
            "x",
            error_info("CONSTRAINT_VIOLATION", variable="t", constraint="max", value="3"),
        ),
        write=True,
    )
    assert isinstance(e, varbridge.ConstraintViolation)
    assert e.constraint == "max"


def test_gave_up_message() -> None:
    last = varbridge.Unavailable("connection refused", C.UNAVAILABLE)
    e = varbridge.GaveUp(10, 119.34, last)
    assert isinstance(e, varbridge.Unavailable)
    assert str(e) == (
        "gave up after 10 attempts over 119.3s: last error: connection refused (UNAVAILABLE)"
    )
    assert (e.attempts, e.elapsed, e.last_error) == (10, 119.34, last)


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
    assert type(from_rpc_error(err)) is varbridge.NotFound
    assert isinstance(from_rpc_error(err, session_rpc=True), varbridge.SessionNotFound)
    assert _status.parse(None) is None
    assert _status.parse((("other", "x"),)) is None
