"""Result types: plain dataclasses built from the wire messages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from varbridge import _convert as cv
from varbridge.v1 import varbridge_pb2 as pb

__all__ = [
    "GetVariablesResult",
    "SessionInfo",
    "SetVariablesResult",
    "Variable",
    "VariableUpdate",
]

# eq=False: values may be numpy arrays, whose == is elementwise.


@dataclass(frozen=True, eq=False)
class Variable:
    """A typed, versioned value in a session."""

    id: str
    name: str
    type: str
    """Canonical type name: integer, float, string, boolean, choice, module, embedding, tensor."""
    value: Any
    version: int
    constraints: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""
    revision: int = 0
    """The session revision of the variable's last change."""
    updated_at: datetime | None = None
    created_at: datetime | None = None

    @classmethod
    def from_pb(cls, v: pb.Variable) -> Variable:
        return cls(
            id=v.id,
            name=v.name,
            type=cv.type_name(v.type),
            value=cv.from_value(v.value) if v.HasField("value") else None,
            version=v.version,
            constraints=cv.constraints_from_pb(v.constraints) if v.HasField("constraints") else {},
            metadata=dict(v.metadata),
            source=v.source,
            revision=v.revision,
            updated_at=cv.timestamp_to_datetime(v.updated_at) if v.HasField("updated_at") else None,
            created_at=cv.timestamp_to_datetime(v.created_at) if v.HasField("created_at") else None,
        )


_UPDATE_TYPES: dict[int, str] = {
    pb.UPDATE_TYPE_UNSPECIFIED: "unspecified",
    pb.UPDATE_TYPE_INITIAL_VALUE: "initial_value",
    pb.UPDATE_TYPE_VALUE_CHANGE: "value_change",
    pb.UPDATE_TYPE_DELETED: "deleted",
    pb.UPDATE_TYPE_HEARTBEAT: "heartbeat",
    pb.UPDATE_TYPE_RESYNC: "resync",
}


@dataclass(frozen=True, eq=False)
class VariableUpdate:
    """One change delivered by a watch.

    ``update_type`` is "initial_value", "value_change", "deleted" or "resync".
    ``value`` is the value after the change (None for "deleted"); ``old_value``
    the one before it (None for initial values, resyncs, and a variable
    registered after the watch began). For "deleted", ``old_value`` is the
    last value and ``variable`` the variable as it was.
    """

    variable_id: str
    variable_name: str
    value: Any
    old_value: Any
    update_type: str
    revision: int
    source: str
    metadata: dict[str, str]
    timestamp: datetime | None
    variable: Variable | None
    initial: bool = False
    resync: bool = False
    last_in_revision: bool = False

    @property
    def deleted(self) -> bool:
        return self.update_type == "deleted"

    @classmethod
    def from_pb(cls, u: pb.VariableUpdate) -> VariableUpdate:
        variable = Variable.from_pb(u.variable) if u.HasField("variable") else None
        ut = u.update_type
        old = cv.from_value(u.old_value) if u.HasField("old_value") else None
        if ut == pb.UPDATE_TYPE_DELETED:
            value = None
            if old is None and variable is not None:
                old = variable.value
        else:
            value = variable.value if variable is not None else None
        return cls(
            variable_id=u.variable_id,
            variable_name=u.variable_name or (variable.name if variable else ""),
            value=value,
            old_value=old,
            update_type=_UPDATE_TYPES.get(ut, f"unknown({ut})"),
            revision=u.revision,
            source=u.update_source,
            metadata=dict(u.update_metadata),
            timestamp=cv.timestamp_to_datetime(u.timestamp) if u.HasField("timestamp") else None,
            variable=variable,
            initial=ut == pb.UPDATE_TYPE_INITIAL_VALUE,
            resync=ut == pb.UPDATE_TYPE_RESYNC,
            last_in_revision=u.last_in_revision,
        )


@dataclass(frozen=True)
class SessionInfo:
    """What GetSession/Heartbeat/InitializeSession report about a session."""

    session_id: str
    created_at: datetime | None
    expires_at: datetime | None
    ttl: timedelta | None
    revision: int
    variable_count: int
    watch_count: int
    metadata: dict[str, str]

    @classmethod
    def from_pb(cls, s: pb.Session) -> SessionInfo:
        return cls(
            session_id=s.session_id,
            created_at=cv.timestamp_to_datetime(s.created_at) if s.HasField("created_at") else None,
            expires_at=cv.timestamp_to_datetime(s.expires_at) if s.HasField("expires_at") else None,
            ttl=s.ttl.ToTimedelta() if s.HasField("ttl") else None,
            revision=s.revision,
            variable_count=s.variable_count,
            watch_count=s.watch_count,
            metadata=dict(s.metadata),
        )


@dataclass(frozen=True, eq=False)
class GetVariablesResult:
    """``found`` keyed by the identifier as passed, ``missing`` the unknown ones.

    Unpacks as a pair: ``found, missing = await session.get_variables([...])``.
    """

    found: dict[str, Variable]
    missing: list[str]
    revision: int

    def __iter__(self) -> Iterator[Any]:
        yield self.found
        yield self.missing


@dataclass(frozen=True, eq=False)
class SetVariablesResult:
    """An atomic batch write: every variable keyed as passed, the one revision
    all changes took, and the identifiers whose value changed."""

    variables: dict[str, Variable]
    revision: int
    changed: list[str]
