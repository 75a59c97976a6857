"""varbridge: typed, session-scoped variables shared in real time between Go and Python.

::

    import varbridge

    async with varbridge.connect("127.0.0.1:50051") as bridge:
        session = await bridge.session("demo")
        await session.register_variable("temperature", "float", 0.7,
                                        constraints={"min": 0.0, "max": 2.0})
        await session.set_variable("temperature", 0.9, metadata={"source": "py"})
        async for update in session.watch_variables(["temperature"]):
            print(update.variable_name, update.old_value, update.value, update.revision)

A blocking facade lives in :mod:`varbridge.sync`.
"""

from importlib import metadata as _metadata

from varbridge._convert import Tensor, have_numpy
from varbridge._options import WatchOptions
from varbridge.client import (
    BALANCED_SERVICE_CONFIG,
    DEFAULT_OPTIONS,
    SERVICE_CONFIG,
    Bridge,
    SessionContext,
    SessionOpening,
    connect,
)
from varbridge.errors import (
    AlreadyExists,
    ConstraintViolation,
    DeadlineExceeded,
    FilterTooCostly,
    GaveUp,
    InvalidArgument,
    InvalidValue,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RevisionOutOfRange,
    SessionClosed,
    SessionNotFound,
    Unauthenticated,
    Unavailable,
    VarbridgeError,
    VariableNotFound,
    VersionConflict,
)
from varbridge.models import (
    Constraints,
    GetVariablesResult,
    SessionInfo,
    SetVariablesResult,
    Variable,
    VariableTypeName,
    VariableUpdate,
)
from varbridge.watch import BatchWatch, Watch

try:
    # The installed distribution's version: one number, kept in pyproject.toml.
    __version__ = _metadata.version("varbridge")
except _metadata.PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "BALANCED_SERVICE_CONFIG",
    "DEFAULT_OPTIONS",
    "SERVICE_CONFIG",
    "AlreadyExists",
    "BatchWatch",
    "Bridge",
    "ConstraintViolation",
    "Constraints",
    "DeadlineExceeded",
    "FilterTooCostly",
    "GaveUp",
    "GetVariablesResult",
    "InvalidArgument",
    "InvalidValue",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RevisionOutOfRange",
    "SessionClosed",
    "SessionContext",
    "SessionInfo",
    "SessionNotFound",
    "SessionOpening",
    "SetVariablesResult",
    "Tensor",
    "Unauthenticated",
    "Unavailable",
    "VarbridgeError",
    "Variable",
    "VariableNotFound",
    "VariableTypeName",
    "VariableUpdate",
    "VersionConflict",
    "Watch",
    "WatchOptions",
    "__version__",
    "connect",
    "have_numpy",
]
