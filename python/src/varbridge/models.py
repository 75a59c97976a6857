"""Result types built from the wire messages.

``Variable`` and ``VariableUpdate`` are read-only views of the protobuf
message they come from: a field is converted (values, timestamps, metadata,
constraints, the variable inside an update) on first access and the result
kept, so a watch loop pays only for what it reads. They behave as the frozen
dataclasses they used to be: same attribute names and types, keyword
construction, ``dataclasses.fields``/``replace``/``asdict``, identity
equality (values may be numpy arrays, whose ``==`` is elementwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypedDict

from varbridge import _convert as cv
from varbridge.v1 import varbridge_pb2 as pb

__all__ = [
    "Constraints",
    "GetVariablesResult",
    "SessionInfo",
    "SetVariablesResult",
    "Variable",
    "VariableTypeAlias",
    "VariableTypeName",
    "VariableUpdate",
]

VariableTypeName = Literal[
    "integer", "float", "string", "boolean", "choice", "module", "embedding", "tensor"
]
"""The variable types, by the names the server reports (``Variable.type``)."""

VariableTypeAlias = Literal["int", "int64", "double", "float64", "str", "bool"]
"""Shorter spellings accepted for some types (``"int"`` is ``"integer"``)."""


class Constraints(TypedDict, total=False):
    """A variable's constraints, as ``register_variable(constraints=...)`` takes
    them. Every key is optional; a type checker flags a misspelt one (the
    client refuses unknown keys at run time too)."""

    min: float
    max: float
    min_length: int
    max_length: int
    pattern: str
    choices: Sequence[str]
    allowed_modules: Sequence[str]
    dimensions: int
    shape: Sequence[int]
    dtype: str


# Stands for a field not converted yet (never a real value).
_UNSET: Any = object()

_DELETED = pb.UPDATE_TYPE_DELETED
_SCALAR_KINDS = cv._SCALAR_KINDS
_INITIAL = pb.UPDATE_TYPE_INITIAL_VALUE
_RESYNC = pb.UPDATE_TYPE_RESYNC


def _adopt_dataclass_fields(cls: type, spec: type) -> None:
    """Give ``cls`` the dataclass field table of ``spec``, so that
    ``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` treat
    it as the dataclass it used to be (its ``__init__`` takes the same
    keywords; the fields read through its properties)."""
    cls.__dataclass_fields__ = spec.__dataclass_fields__  # type: ignore[attr-defined]
    cls.__dataclass_params__ = spec.__dataclass_params__  # type: ignore[attr-defined]


class Variable:
    """A typed, versioned value in a session.

    ``type`` is the canonical type name: integer, float, string, boolean,
    choice, module, embedding, tensor. ``revision`` is the session revision of
    the variable's last change.
    """

    __slots__ = (
        "__weakref__",
        "_constraints",
        "_created_at",
        "_id",
        "_metadata",
        "_name",
        "_pb",
        "_revision",
        "_source",
        "_type",
        "_updated_at",
        "_value",
        "_version",
    )
    __match_args__ = (
        "id",
        "name",
        "type",
        "value",
        "version",
        "constraints",
        "metadata",
        "source",
        "revision",
        "updated_at",
        "created_at",
    )
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    _pb: pb.Variable | None
    _id: str
    _name: str
    _type: str
    _version: int
    _source: str
    _revision: int
    _value: Any
    _constraints: dict[str, Any]
    _metadata: dict[str, str]
    _updated_at: datetime | None
    _created_at: datetime | None

    def __init__(
        self,
        id: str,
        name: str,
        type: str,
        value: Any,
        version: int,
        constraints: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        source: str = "",
        revision: int = 0,
        updated_at: datetime | None = None,
        created_at: datetime | None = None,
    ) -> None:
        self._pb = None
        self._id = id
        self._name = name
        self._type = type
        self._value = value
        self._version = version
        self._constraints = {} if constraints is None else constraints
        self._metadata = {} if metadata is None else metadata
        self._source = source
        self._revision = revision
        self._updated_at = updated_at
        self._created_at = created_at

    @classmethod
    def from_pb(cls, v: pb.Variable) -> Variable:
        """A view of ``v`` (which must not be changed afterwards)."""
        return _wrap_variable(v, _UNSET)

    @property
    def id(self) -> str:
        """Server-assigned, stable for the variable's life."""
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> str:
        """Canonical type name: integer, float, string, boolean, choice, module,
        embedding, tensor."""
        t = self._type
        if t is _UNSET:
            assert self._pb is not None
            t = self._type = cv.type_name(self._pb.type)
        return t

    @property
    def value(self) -> Any:
        v = self._value
        if v is _UNSET:
            assert self._pb is not None
            v = self._value = cv.from_value(self._pb.value)
        return v

    @property
    def version(self) -> int:
        return self._version

    @property
    def constraints(self) -> dict[str, Any]:
        c = self._constraints
        if c is _UNSET:
            assert self._pb is not None
            c = self._constraints = cv.constraints_from_pb(self._pb.constraints)
        return c

    @property
    def metadata(self) -> dict[str, str]:
        m = self._metadata
        if m is _UNSET:
            assert self._pb is not None
            m = self._metadata = dict(self._pb.metadata)
        return m

    @property
    def source(self) -> str:
        return self._source

    @property
    def revision(self) -> int:
        """The session revision of the variable's last change."""
        return self._revision

    @property
    def updated_at(self) -> datetime | None:
        t = self._updated_at
        if t is _UNSET:
            assert self._pb is not None
            t = self._updated_at = cv.timestamp_to_datetime(self._pb.updated_at)
        return t

    @property
    def created_at(self) -> datetime | None:
        t = self._created_at
        if t is _UNSET:
            assert self._pb is not None
            t = self._created_at = cv.timestamp_to_datetime(self._pb.created_at)
        return t

    def __repr__(self) -> str:
        return (
            f"Variable(id={self.id!r}, name={self.name!r}, type={self.type!r}, "
            f"value={self.value!r}, version={self.version!r}, "
            f"constraints={self.constraints!r}, metadata={self.metadata!r}, "
            f"source={self.source!r}, revision={self.revision!r}, "
            f"updated_at={self.updated_at!r}, created_at={self.created_at!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles (and copies) as a plain value, every field converted.
        return (
            Variable,
            (
                self.id,
                self.name,
                self.type,
                self.value,
                self.version,
                self.constraints,
                self.metadata,
                self.source,
                self.revision,
                self.updated_at,
                self.created_at,
            ),
        )


def _wrap_variable(v: pb.Variable, value: Any) -> Variable:
    """A lazy view of ``v``; ``value``: its value if already converted, else _UNSET."""
    var = _new(Variable)
    var._pb = v
    var._id = v.id
    var._name = v.name
    var._version = v.version
    var._source = v.source
    var._revision = v.revision
    var._type = _UNSET
    var._value = value
    var._constraints = _UNSET
    var._metadata = _UNSET
    var._updated_at = _UNSET
    var._created_at = _UNSET
    return var


_new = object.__new__

_UPDATE_TYPES: dict[int, str] = {
    pb.UPDATE_TYPE_UNSPECIFIED: "unspecified",
    pb.UPDATE_TYPE_INITIAL_VALUE: "initial_value",
    pb.UPDATE_TYPE_VALUE_CHANGE: "value_change",
    pb.UPDATE_TYPE_DELETED: "deleted",
    pb.UPDATE_TYPE_HEARTBEAT: "heartbeat",
    pb.UPDATE_TYPE_RESYNC: "resync",
}


class VariableUpdate:
    """One change delivered by a watch.

    ``update_type`` is "initial_value", "value_change", "deleted" or "resync".
    ``value`` is the value after the change (None for "deleted"); ``old_value``
    the one before it (None for initial values, resyncs, and a variable
    registered after the watch began). For "deleted", ``old_value`` is the
    last value and ``variable`` the variable as it was.

    Built by a watch as a view of the wire message: ``value``, ``old_value``,
    ``variable``, ``timestamp``, ``metadata`` and the rest are converted when
    first read, once.
    """

    __slots__ = (
        "__weakref__",
        "_initial",
        "_last",
        "_metadata",
        "_name",
        "_old_value",
        "_pb",
        "_resync",
        "_revision",
        "_source",
        "_timestamp",
        "_type",
        "_ut",
        "_value",
        "_variable",
        "_vid",
    )
    __match_args__ = (
        "variable_id",
        "variable_name",
        "value",
        "old_value",
        "update_type",
        "revision",
        "source",
        "metadata",
        "timestamp",
        "variable",
        "initial",
        "resync",
        "last_in_revision",
    )
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    _pb: pb.VariableUpdate | None
    _vid: str
    _name: str
    _value: Any
    _old_value: Any
    _ut: int  # the wire enum (-1 when built by hand)
    _type: str
    _revision: int
    _source: str
    _metadata: dict[str, str]
    _timestamp: datetime | None
    _variable: Variable | None
    _initial: bool
    _resync: bool
    _last: bool

    def __init__(
        self,
        variable_id: str,
        variable_name: str,
        value: Any,
        old_value: Any,
        update_type: str,
        revision: int,
        source: str,
        metadata: dict[str, str],
        timestamp: datetime | None,
        variable: Variable | None,
        initial: bool = False,
        resync: bool = False,
        last_in_revision: bool = False,
    ) -> None:
        self._pb = None
        self._vid = variable_id
        self._name = variable_name
        self._value = value
        self._old_value = old_value
        self._ut = -1
        self._type = update_type
        self._revision = revision
        self._source = source
        self._metadata = metadata
        self._timestamp = timestamp
        self._variable = variable
        self._initial = initial
        self._resync = resync
        self._last = last_in_revision

    @classmethod
    def from_pb(cls, u: pb.VariableUpdate) -> VariableUpdate:
        """A view of ``u`` (which must not be changed afterwards)."""
        return _wrap_update(u, u.update_type, u.revision)

    # Fields the watch reads anyway are set when the view is made; the rest
    # come from the message on first access.

    @property
    def variable_id(self) -> str:
        v = self._vid
        if v is _UNSET:
            assert self._pb is not None
            v = self._vid = self._pb.variable_id
        return v

    @property
    def variable_name(self) -> str:
        n = self._name
        if n is _UNSET:
            m = self._pb
            assert m is not None
            # An update without a name (not sent by the server) falls back to
            # the variable's.
            n = self._name = m.variable_name or m.variable.name
        return n

    @property
    def value(self) -> Any:
        """The value after the change (None for "deleted")."""
        v = self._value
        if v is _UNSET:
            m = self._pb
            assert m is not None
            if self._ut == _DELETED:
                v = None
            else:
                var = self._variable
                if var is _UNSET:
                    # The variable's value, shared with .variable if read later.
                    wire = m.variable.value
                    kind = wire.WhichOneof("kind")
                    v = getattr(wire, kind) if kind in _SCALAR_KINDS else cv.from_value(wire)
                else:
                    v = var.value if var is not None else None
            self._value = v
        return v

    @property
    def old_value(self) -> Any:
        """The value before the change (see the class docstring)."""
        o = self._old_value
        if o is _UNSET:
            m = self._pb
            assert m is not None
            o = cv.from_value(m.old_value) if m.HasField("old_value") else None
            if o is None and self._ut == _DELETED:
                var = self.variable
                if var is not None:
                    o = var.value
            self._old_value = o
        return o

    @property
    def update_type(self) -> str:
        """One of "initial_value", "value_change", "deleted", "resync"."""
        return self._type

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def source(self) -> str:
        s = self._source
        if s is _UNSET:
            assert self._pb is not None
            s = self._source = self._pb.update_source
        return s

    @property
    def metadata(self) -> dict[str, str]:
        md = self._metadata
        if md is _UNSET:
            assert self._pb is not None
            md = self._metadata = dict(self._pb.update_metadata)
        return md

    @property
    def timestamp(self) -> datetime | None:
        t = self._timestamp
        if t is _UNSET:
            assert self._pb is not None
            t = self._timestamp = cv.timestamp_to_datetime(self._pb.timestamp)
        return t

    @property
    def variable(self) -> Variable | None:
        """The variable after the change (as it was, for "deleted")."""
        var = self._variable
        if var is _UNSET:
            m = self._pb
            assert m is not None
            if m.HasField("variable"):
                # Share the value already converted, if any: u.value is
                # u.variable.value, as when both were built at once.
                if self._ut == _DELETED:
                    shared = _UNSET if m.HasField("old_value") else self._old_value
                else:
                    shared = self._value
                var = _wrap_variable(m.variable, shared)
            else:
                var = None
            self._variable = var
        return var

    @property
    def initial(self) -> bool:
        return self._initial

    @property
    def resync(self) -> bool:
        return self._resync

    @property
    def last_in_revision(self) -> bool:
        x = self._last
        if x is _UNSET:
            assert self._pb is not None
            x = self._last = self._pb.last_in_revision
        return x

    @property
    def deleted(self) -> bool:
        return self._type == "deleted"

    def __repr__(self) -> str:
        return (
            f"VariableUpdate(variable_id={self.variable_id!r}, "
            f"variable_name={self.variable_name!r}, value={self.value!r}, "
            f"old_value={self.old_value!r}, update_type={self.update_type!r}, "
            f"revision={self.revision!r}, source={self.source!r}, "
            f"metadata={self.metadata!r}, timestamp={self.timestamp!r}, "
            f"variable={self.variable!r}, initial={self.initial!r}, "
            f"resync={self.resync!r}, last_in_revision={self.last_in_revision!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles (and copies) as a plain value, every field converted.
        return (
            VariableUpdate,
            (
                self.variable_id,
                self.variable_name,
                self.value,
                self.old_value,
                self.update_type,
                self.revision,
                self.source,
                self.metadata,
                self.timestamp,
                self.variable,
                self.initial,
                self.resync,
                self.last_in_revision,
            ),
        )


def _wrap_update(
    u: pb.VariableUpdate, ut: int, rev: int, vid: Any = _UNSET, last: Any = _UNSET
) -> VariableUpdate:
    """A lazy view of ``u``, whose update_type and revision are ``ut`` and
    ``rev`` (and variable_id and last_in_revision ``vid`` and ``last``, when
    the caller has read them)."""
    upd = _new(VariableUpdate)
    upd._pb = u
    upd._ut = ut
    name = _UPDATE_TYPES.get(ut)
    upd._type = name if name is not None else f"unknown({ut})"
    upd._initial = ut == _INITIAL
    upd._resync = ut == _RESYNC
    upd._revision = rev
    upd._vid = vid
    upd._name = _UNSET
    upd._value = _UNSET
    upd._old_value = _UNSET
    upd._source = _UNSET
    upd._metadata = _UNSET
    upd._timestamp = _UNSET
    upd._variable = _UNSET
    upd._last = last
    return upd


def _with_old_value(u: VariableUpdate, old_value: Any) -> VariableUpdate:
    """``u`` with another ``old_value`` (a debounced burst: the old value from
    before it, everything else from its last update)."""
    return VariableUpdate(
        variable_id=u.variable_id,
        variable_name=u.variable_name,
        value=u.value,
        old_value=old_value,
        update_type=u.update_type,
        revision=u.revision,
        source=u.source,
        metadata=u.metadata,
        timestamp=u.timestamp,
        variable=u.variable,
        initial=u.initial,
        resync=u.resync,
        last_in_revision=u.last_in_revision,
    )


# The field tables of the dataclasses these types used to be.


@dataclass(frozen=True, eq=False)
class _VariableFields:
    id: str
    name: str
    type: str
    value: Any
    version: int
    constraints: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = ""
    revision: int = 0
    updated_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, eq=False)
class _VariableUpdateFields:
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


_adopt_dataclass_fields(Variable, _VariableFields)
_adopt_dataclass_fields(VariableUpdate, _VariableUpdateFields)


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
    incarnation: str = ""
    """Random, fixed when the session was created; a session created again under
    the same id (after cleanup, expiry or a server that lost it) has a new one.
    Revisions compare only within one incarnation."""

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
            incarnation=s.incarnation,
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
