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

from varbridge._convert import Tensor, have_numpy
from varbridge.client import DEFAULT_OPTIONS, Bridge, SessionContext, connect
from varbridge.errors import (
    AlreadyExists,
    ConstraintViolation,
    DeadlineExceeded,
    InvalidArgument,
    InvalidValue,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SessionNotFound,
    Unauthenticated,
    Unavailable,
    VarbridgeError,
    VariableNotFound,
    VersionConflict,
)
from varbridge.models import (
    GetVariablesResult,
    SessionInfo,
    SetVariablesResult,
    Variable,
    VariableUpdate,
)
from varbridge.watch import Watch

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_OPTIONS",
    "AlreadyExists",
    "Bridge",
    "ConstraintViolation",
    "DeadlineExceeded",
    "GetVariablesResult",
    "InvalidArgument",
    "InvalidValue",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SessionContext",
    "SessionInfo",
    "SessionNotFound",
    "SetVariablesResult",
    "Tensor",
    "Unauthenticated",
    "Unavailable",
    "VarbridgeError",
    "Variable",
    "VariableNotFound",
    "VariableUpdate",
    "VersionConflict",
    "Watch",
    "__version__",
    "connect",
    "have_numpy",
]
