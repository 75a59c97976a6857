"""Typed exceptions mapped from gRPC status codes.

Every exception raised by varbridge for a failed call is a :class:`VarbridgeError`
carrying the gRPC ``code`` and the server's ``details`` message. Client-side
conversion failures (a value that does not fit the variable's type) raise
:class:`InvalidValue`, which is both an :class:`InvalidArgument` and a
:class:`ValueError`.
"""

from __future__ import annotations

import re

import grpc

from varbridge import _status

__all__ = [
    "AlreadyExists",
    "ConstraintViolation",
    "DeadlineExceeded",
    "InvalidArgument",
    "InvalidValue",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SessionNotFound",
    "Unauthenticated",
    "Unavailable",
    "VarbridgeError",
    "VariableNotFound",
    "VersionConflict",
    "from_rpc_error",
]


class VarbridgeError(Exception):
    """Base class of every varbridge error.

    ``code`` is the gRPC status code, ``details`` the server's message.
    """

    code: grpc.StatusCode
    details: str
    field: str | None
    """The request field at fault (google.rpc BadRequest), e.g. "value" or "constraints.max"."""
    constraint: str | None
    """For a broken constraint: its wire name ("min", "pattern", "dtype", ...)."""
    limit: str | None
    """For RESOURCE_EXHAUSTED: the server limit's name."""
    status_details: _status.StatusDetails | None

    def __init__(self, details: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.field = None
        self.constraint = None
        self.limit = None
        self.status_details = None

    def __str__(self) -> str:
        return f"{self.details} ({self.code.name})"


class NotFound(VarbridgeError):
    """NOT_FOUND: a session or a variable does not exist."""


class VariableNotFound(NotFound, KeyError):
    """NOT_FOUND naming a variable."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return VarbridgeError.__str__(self)


class SessionNotFound(NotFound):
    """NOT_FOUND naming a session (never created, expired or cleaned up)."""


class InvalidArgument(VarbridgeError, ValueError):
    """INVALID_ARGUMENT: a malformed request."""


class ConstraintViolation(InvalidArgument):
    """INVALID_ARGUMENT on a write: the value breaks a constraint or the type.

    The server's message names the variable, the constraint and the value.
    """


class InvalidValue(ConstraintViolation, TypeError):
    """A value that cannot be converted to the variable's type (raised client-side).

    Nothing was sent: it is a ConstraintViolation (so one ``except`` catches
    both sides) and a TypeError.
    """

    def __init__(self, details: str) -> None:
        super().__init__(details, grpc.StatusCode.INVALID_ARGUMENT)


class VersionConflict(VarbridgeError):
    """FAILED_PRECONDITION: a compare-and-set found another version."""


class AlreadyExists(VarbridgeError):
    """ALREADY_EXISTS: e.g. registering a name that is taken."""


class Unauthenticated(VarbridgeError):
    """UNAUTHENTICATED: missing or wrong session token."""


class PermissionDenied(VarbridgeError):
    """PERMISSION_DENIED."""


class ResourceExhausted(VarbridgeError):
    """RESOURCE_EXHAUSTED: a server limit (watchers, identifiers, value size)."""


class Unavailable(VarbridgeError):
    """UNAVAILABLE: the server cannot be reached (after retries, for watches)."""


class DeadlineExceeded(VarbridgeError):
    """DEADLINE_EXCEEDED: a unary call took longer than its timeout."""


_BY_CODE: dict[grpc.StatusCode, type[VarbridgeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: VersionConflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}

_WORD = re.compile(r"\b(session|variables?)\b", re.IGNORECASE)


def _not_found_kind(details: str) -> str:
    """Return "session" or "variable": which thing a NOT_FOUND message is about.

    Used only when the status carries no google.rpc ResourceInfo. The
    server's messages read 'session not found: session "x"', 'session closed'
    or 'session "x" has no variable "y"'.
    """
    low = details.lower()
    if "has no variable" in low or "variable not found" in low:
        return "variable"
    if low.startswith(("session not found", "session closed")):
        return "session"
    m = _WORD.search(details)
    if m is None:
        return "unknown"
    return "session" if m.group(1).lower() == "session" else "variable"


def from_rpc_error(
    err: grpc.RpcError, *, write: bool = False, session_rpc: bool = False
) -> VarbridgeError:
    """Map a gRPC error to the matching :class:`VarbridgeError` subclass.

    ``write``: the call was a write (INVALID_ARGUMENT about the value becomes
    ConstraintViolation). ``session_rpc``: the call names only a session
    (NOT_FOUND is SessionNotFound). The google.rpc details the server
    attaches, when present, decide between session and variable and name
    the constraint or limit.
    """
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailers_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else None
    details = (details_fn() if callable(details_fn) else None) or str(err)
    info = None
    if callable(trailers_fn):
        try:
            info = _status.parse(trailers_fn())
        except Exception:
            info = None
    return error_for(
        code or grpc.StatusCode.UNKNOWN,
        details,
        write=write,
        session_rpc=session_rpc,
        status_details=info,
    )


def error_for(
    code: grpc.StatusCode,
    details: str,
    *,
    write: bool = False,
    session_rpc: bool = False,
    status_details: _status.StatusDetails | None = None,
) -> VarbridgeError:
    """Build the typed error for a status code, message and decoded details."""
    sd = status_details
    cls: type[VarbridgeError]
    if code == grpc.StatusCode.NOT_FOUND:
        if session_rpc:
            kind = "session"
        elif sd is not None and sd.resource_type in ("session", "variable"):
            kind = sd.resource_type
        else:
            kind = _not_found_kind(details)
        cls = {"session": SessionNotFound, "variable": VariableNotFound}.get(kind, NotFound)
    elif code == grpc.StatusCode.INVALID_ARGUMENT and write:
        cls = ConstraintViolation
        if sd is not None and sd.field_violations:
            fv = sd.field_violations[0]
            if fv.reason != "CONSTRAINT_VIOLATION" and not fv.field.startswith("value"):
                # A malformed request (a bad name, constraint definition,
                # empty batch): not the value breaking a rule.
                cls = InvalidArgument
    else:
        cls = _BY_CODE.get(code, VarbridgeError)
    e = cls(details, code)
    if sd is not None:
        e.status_details = sd
        if sd.field_violations:
            e.field = sd.field_violations[0].field
            if e.field.startswith("constraints."):
                e.constraint = e.field[len("constraints.") :]
        if sd.quota_subjects:
            e.limit = sd.quota_subjects[0]
    return e
