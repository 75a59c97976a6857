"""Typed exceptions mapped from the server's error details.

Every exception raised by varbridge for a failed call is a :class:`VarbridgeError`
carrying the gRPC ``code`` and the server's ``details`` message. The class is
chosen from the ``google.rpc.ErrorInfo`` reason the server attaches to every
error (``reason``, e.g. "SESSION_CLOSED"), falling back to the status code for
a server or proxy that sends none; the message text is never parsed, so
rewording a message cannot change which exception a caller catches.

Client-side failures raise before anything is sent: a value that does not fit
the variable's type raises :class:`InvalidValue` (a :class:`ConstraintViolation`
and a ``TypeError``); a malformed argument such as an unknown type name raises
:class:`InvalidArgument` (a ``ValueError``).
"""

from __future__ import annotations

import grpc

from varbridge import _status

__all__ = [
    "AlreadyExists",
    "ConstraintViolation",
    "DeadlineExceeded",
    "FilterTooCostly",
    "GaveUp",
    "InvalidArgument",
    "InvalidValue",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RevisionOutOfRange",
    "SessionClosed",
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
    reason: str
    """The server's ErrorInfo reason ("SESSION_CLOSED", "VERSION_CONFLICT", ...), or ""."""
    metadata: dict[str, str]
    """The ErrorInfo metadata (session_id, variable, constraint, revisions, ...)."""
    status_details: _status.StatusDetails | None

    def __init__(self, details: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.field = None
        self.constraint = None
        self.limit = None
        self.reason = ""
        self.metadata = {}
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


class SessionClosed(SessionNotFound):
    """The session went away under an open watch or call (reason SESSION_CLOSED).

    ``cause`` says why: "cleaned_up", "expired" or "shutdown" (empty when the
    server did not say). A :class:`SessionNotFound`, so code written before
    this class existed keeps catching it; Go's ``ErrSessionClosed``.
    """

    @property
    def cause(self) -> str:
        return self.metadata.get("cause", "")


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
    """FAILED_PRECONDITION: a compare-and-set found another version.

    ``expected_version`` and ``actual_version`` come from the server's
    details (None when it sent none).
    """

    @property
    def expected_version(self) -> int | None:
        return _int(self.metadata.get("expected_version"))

    @property
    def actual_version(self) -> int | None:
        return _int(self.metadata.get("actual_version"))


class RevisionOutOfRange(VarbridgeError):
    """OUT_OF_RANGE: a watch asked to start beyond the session's revision + 1.

    Revisions are compared within one session incarnation: a ``start_revision``
    from the future of this incarnation cannot be served. ``start_revision``,
    ``session_revision`` and ``incarnation`` come from the server's details.
    """

    @property
    def start_revision(self) -> int | None:
        return _int(self.metadata.get("start_revision"))

    @property
    def session_revision(self) -> int | None:
        return _int(self.metadata.get("session_revision"))

    @property
    def incarnation(self) -> str:
        return self.metadata.get("incarnation", "")


class AlreadyExists(VarbridgeError):
    """ALREADY_EXISTS: e.g. registering a name that is taken."""


class Unauthenticated(VarbridgeError):
    """UNAUTHENTICATED: missing or wrong session token."""


class PermissionDenied(VarbridgeError):
    """PERMISSION_DENIED."""


class ResourceExhausted(VarbridgeError):
    """RESOURCE_EXHAUSTED: a server limit (watchers, identifiers, value size)."""


class FilterTooCostly(ResourceExhausted):
    """A watch's ``where`` filter kept reaching its cost limit, or the session's
    filter budget ran out (reason FILTER_TOO_COSTLY); ``limit`` names which."""


class Unavailable(VarbridgeError):
    """UNAVAILABLE: the server cannot be reached (after retries, for watches)."""


class GaveUp(Unavailable):
    """A watch stopped reconnecting after ``attempts`` consecutive failures.

    The message reads "gave up after N attempts over T: last error: ..." (the
    same words as Go's ``ErrGaveUp``); ``elapsed`` is T in seconds, from the
    first failure of the run to the last; ``last_error`` is the failure that
    ended it (also the exception's ``__cause__``).
    """

    attempts: int
    elapsed: float
    last_error: BaseException

    def __init__(self, attempts: int, elapsed: float, last_error: BaseException) -> None:
        # UNAVAILABLE whatever the last failure's code (last_error keeps it):
        # the server stayed out of reach for this watch.
        super().__init__(
            f"gave up after {attempts} attempts over {elapsed:.1f}s: last error: {last_error}",
            grpc.StatusCode.UNAVAILABLE,
        )
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error
        if isinstance(last_error, VarbridgeError):
            self.reason = last_error.reason
            self.metadata = dict(last_error.metadata)

    def __str__(self) -> str:
        return self.details


class DeadlineExceeded(VarbridgeError):
    """DEADLINE_EXCEEDED: a unary call took longer than its timeout."""


def _int(s: str | None) -> int | None:
    try:
        return int(s) if s else None
    except ValueError:
        return None


_BY_CODE: dict[grpc.StatusCode, type[VarbridgeError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: VersionConflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.OUT_OF_RANGE: RevisionOutOfRange,
}

# ErrorInfo reason (the proto's ErrorReason name without ERROR_REASON_) ->
# the status code the proto documents for it, and the exception. A reason
# sent with another code (TOKEN_REQUIRED on the ALREADY_EXISTS of joining an
# auth session without its token) takes the class of its code: the code says
# what happened to the call, the reason what to do about it, and .reason
# keeps it. LIMIT_EXCEEDED has two codes and is handled in error_for.
_C = grpc.StatusCode
_BY_REASON: dict[str, tuple[grpc.StatusCode, type[VarbridgeError]]] = {
    "SESSION_NOT_FOUND": (_C.NOT_FOUND, SessionNotFound),
    "SESSION_CLOSED": (_C.NOT_FOUND, SessionClosed),
    "VARIABLE_NOT_FOUND": (_C.NOT_FOUND, VariableNotFound),
    "VARIABLE_EXISTS": (_C.ALREADY_EXISTS, AlreadyExists),
    "CONSTRAINT_VIOLATION": (_C.INVALID_ARGUMENT, ConstraintViolation),
    "VERSION_CONFLICT": (_C.FAILED_PRECONDITION, VersionConflict),
    "INVALID_ARGUMENT": (_C.INVALID_ARGUMENT, InvalidArgument),
    "REVISION_OUT_OF_RANGE": (_C.OUT_OF_RANGE, RevisionOutOfRange),
    "FILTER_TOO_COSTLY": (_C.RESOURCE_EXHAUSTED, FilterTooCostly),
    "TOKEN_REQUIRED": (_C.UNAUTHENTICATED, Unauthenticated),
    "TOKEN_INVALID": (_C.PERMISSION_DENIED, PermissionDenied),
}


def from_rpc_error(
    err: grpc.RpcError, *, write: bool = False, session_rpc: bool = False
) -> VarbridgeError:
    """Map a gRPC error to the matching :class:`VarbridgeError` subclass.

    See :func:`error_for`; this reads the code, message and google.rpc
    details off the error.
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
    """Build the typed error for a status code, message and decoded details.

    The ErrorInfo reason decides first (when it comes with the code the proto
    documents for it). Without one (a server or proxy that does not send it)
    the status code does, refined by the other structured
    details: ResourceInfo's resource_type for NOT_FOUND, BadRequest's field
    for INVALID_ARGUMENT on a write. ``write``: the call was a write, so an
    INVALID_ARGUMENT about the value is a ConstraintViolation. ``session_rpc``:
    the call names only a session, so NOT_FOUND is SessionNotFound. The
    message (``details``) is kept for people, never parsed.
    """
    sd = status_details
    cls: type[VarbridgeError] | None = None
    if sd is not None and sd.reason and sd.domain in ("", _status.DOMAIN):
        if sd.reason == "LIMIT_EXCEEDED":
            # RESOURCE_EXHAUSTED, or INVALID_ARGUMENT for the size of a request.
            exhausted = code == grpc.StatusCode.RESOURCE_EXHAUSTED
            cls = ResourceExhausted if exhausted else InvalidArgument
        else:
            documented = _BY_REASON.get(sd.reason)
            if documented is not None and documented[0] == code:
                cls = documented[1]
    if cls is None:
        cls = _by_code(code, sd, write=write, session_rpc=session_rpc)
    e = cls(details, code)
    if sd is not None:
        e.status_details = sd
        e.reason = sd.reason
        e.metadata = dict(sd.metadata)
        if sd.field_violations:
            e.field = sd.field_violations[0].field
            if e.field.startswith("constraints."):
                e.constraint = e.field[len("constraints.") :]
        if sd.metadata.get("constraint"):
            e.constraint = sd.metadata["constraint"]
        if sd.quota_subjects:
            e.limit = sd.quota_subjects[0]
        elif sd.metadata.get("limit"):
            e.limit = sd.metadata["limit"]
    return e


def _by_code(
    code: grpc.StatusCode,
    sd: _status.StatusDetails | None,
    *,
    write: bool,
    session_rpc: bool,
) -> type[VarbridgeError]:
    if code == grpc.StatusCode.NOT_FOUND:
        if session_rpc:
            return SessionNotFound
        kind = sd.resource_type if sd is not None else ""
        return {"session": SessionNotFound, "variable": VariableNotFound}.get(kind, NotFound)
    if code == grpc.StatusCode.INVALID_ARGUMENT and write:
        if sd is not None and sd.field_violations:
            fv = sd.field_violations[0]
            if fv.reason != "CONSTRAINT_VIOLATION" and not fv.field.startswith("value"):
                # A malformed request (a bad name, constraint definition,
                # empty batch): not the value breaking a rule.
                return InvalidArgument
        return ConstraintViolation
    return _BY_CODE.get(code, VarbridgeError)
