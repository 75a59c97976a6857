"""Result types built from the wire messages.

``Variable`` and ``VariableUpdate`` are read-only views of the protobuf
message they come from: a field is converted (values, timestamps, metadata,
constraints, the variable inside an update) on first access and the result
kept, so a watch loop pays only for what it reads. Each is declared once,
as the frozen dataclass it behaves as (one entry per field: type, default,
how a view gets it; see ``_view``): same attribute names and types, keyword
construction, ``dataclasses.fields``/``replace``/``asdict``, identity
equality (values may be numpy arrays, whose ``==`` is elementwise).
"""

from __future__ import annotations

import dataclasses
import operator
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar, cast

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

_new = object.__new__

T = TypeVar("T")


# -- lazy views, declared as dataclasses ---------------------------------------
#
# Variable and VariableUpdate are each declared once, as the frozen dataclass
# they behave as: one entry per field, with its type, its default and how a
# view of a wire message gets it (the field's metadata, made by _given or
# _lazy). @_view builds the class from that table: a slot per field, a
# read-only property (converting on first read, once, for a lazy field),
# __init__, __repr__, __reduce__, __match_args__, and the function that makes
# a view of a message. The generated code is what one would write by hand
# (plain slot loads and stores, a conversion inline), so a view costs no
# more than a hand-written one.

_Lazy: TypeAlias = "str | Callable[[Any], Any]"
"""How a field is converted on first read: an expression over ``m`` (the
message) and ``self`` (the view); statements (more than one line) that set
``v`` from them; or a function of the view. Code is inlined in the property
(no call: a watch loop reads ``value`` of every update)."""


@dataclass(frozen=True)
class _Read:
    given: str | None  # an expression over the view-maker's arguments
    lazy: _Lazy | None
    doc: str | None


_READ = "varbridge.view"


def _given(expr: str, *, lazy: _Lazy | None = None, doc: str | None = None) -> Any:
    """Field metadata: the view-maker sets the field to ``expr``; with
    ``lazy``, ``expr`` may be _UNSET (converted on first read then)."""
    return {_READ: _Read(expr, lazy, doc)}


def _lazy(lazy: _Lazy, *, doc: str | None = None) -> Any:
    """Field metadata: converted on first read, once."""
    return {_READ: _Read(None, lazy, doc)}


_MAKERS: dict[tuple[type, str | None], Callable[..., Any]] = {}


def _maker(cls: type[T], variant: str | None = None) -> Callable[..., T]:
    """The view-maker :func:`_view` built for ``cls`` (or its ``variant``)."""
    return _MAKERS[cls, variant]


def _view(
    args: str,
    *,
    name: str,
    variants: dict[str, tuple[str, dict[str, Any]]] | None = None,
    **extra: tuple[str, str],
) -> Callable[[type[T]], type[T]]:
    """Build a lazy view class from the frozen dataclass it decorates, and
    its view-maker ``name(args)`` (see :func:`_maker`), whose first argument
    is the wire message. ``extra``: more slots, as (value in a view, value in
    an instance built by hand). ``variants``: more view-makers, by name, as
    (their arguments, the constants the others of ``args`` stand for); what
    a field gets from those constants is computed once, here."""

    def build(spec: type[T]) -> type[T]:
        fields = dataclasses.fields(spec)  # type: ignore[arg-type]
        names = tuple(f.name for f in fields)
        env: dict[str, Any] = dict(globals())  # the generated code's globals
        props: dict[str, property] = {}
        init_params: list[str] = []
        init = ["self._pb = None"]
        # The view-maker's stores: (slot, expression over its arguments).
        make = [("_pb", args.split(",")[0])]
        for slot, (given, by_hand) in extra.items():
            init.append(f"self.{slot} = {by_hand}")
            make.append((slot, given))
        for f in fields:
            r: _Read = f.metadata[_READ]
            slot = "_" + f.name
            # The property.
            if r.lazy is None:
                props[f.name] = property(operator.attrgetter(slot), doc=r.doc)
            else:
                if isinstance(r.lazy, str) and "\n" in r.lazy:
                    block = textwrap.indent(textwrap.dedent(r.lazy).strip(), " " * 8)
                    convert = f"m = self._pb\n{block}\n        self.{slot} = v"
                elif isinstance(r.lazy, str):
                    convert = f"m = self._pb\n        v = self.{slot} = {r.lazy}"
                else:
                    env[f"_convert_{f.name}"] = r.lazy
                    convert = f"v = self.{slot} = _convert_{f.name}(self)"
                code = (
                    f"def get(self):\n"
                    f"    v = self.{slot}\n"
                    f"    if v is _UNSET:\n"
                    f"        {convert}\n"
                    f"    return v\n"
                )
                props[f.name] = property(_compile(code, env)["get"], doc=r.doc)
            # __init__: the dataclass's keywords; a field with a
            # default_factory also takes None for "the default".
            value = f.name
            if f.default_factory is not dataclasses.MISSING:
                env[f"_factory_{f.name}"] = f.default_factory
                init_params.append(f"{f.name}=None")
                value = f"_factory_{f.name}() if {f.name} is None else {f.name}"
            elif f.default is not dataclasses.MISSING:
                env[f"_default_{f.name}"] = f.default
                init_params.append(f"{f.name}=_default_{f.name}")
            else:
                init_params.append(f.name)
            init.append(f"self.{slot} = {value}")
            # The view-maker: the field given, or _UNSET until first read.
            make.append((slot, r.given if r.given is not None else "_UNSET"))
        code = (
            f"def __init__(self, {', '.join(init_params)}):\n"
            + "".join(f"    {line}\n" for line in init)
            + _maker_code(name, args, make)
        )
        for variant, (vargs, consts) in (variants or {}).items():
            stores = []
            for slot, expr in make:
                if set(compile(expr, "<view>", "eval").co_names) & consts.keys():
                    key = f"_{variant}{slot}"
                    env[key] = eval(expr, env, consts)  # NameError: mixes in an argument
                    expr = key
                stores.append((slot, expr))
            code += _maker_code(variant, vargs, stores)
        made = _compile(code, env)

        def __repr__(self: Any) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{cls.__name__}({inner})"

        def __reduce__(self: Any) -> tuple[Any, ...]:
            # Pickles (and copies) as a plain value, every field converted.
            return (cls, tuple(getattr(self, n) for n in names))

        # What the class body defines besides the fields (from_pb, ...).
        own = {k: v for k, v in spec.__dict__.items() if k not in names and k[:2] != "__"}
        cls: Any = type(
            spec.__name__,
            (),
            {
                "__slots__": ("__weakref__", "_pb", *extra, *("_" + n for n in names)),
                "__doc__": spec.__doc__,
                "__module__": spec.__module__,
                "__qualname__": spec.__qualname__,
                "__annotations__": spec.__annotations__,
                "__match_args__": names,
                # dataclasses.fields, replace, asdict, is_dataclass see the
                # dataclass declared.
                "__dataclass_fields__": spec.__dataclass_fields__,  # type: ignore[attr-defined]
                "__dataclass_params__": spec.__dataclass_params__,  # type: ignore[attr-defined]
                "__init__": made["__init__"],
                "__repr__": __repr__,
                "__reduce__": __reduce__,
                **props,
                **own,
            },
        )
        env["_cls"] = cls
        _MAKERS[cls, None] = made[name]
        for variant in variants or {}:
            _MAKERS[cls, variant] = made[variant]
        return cast("type[T]", cls)

    return build


def _maker_code(name: str, args: str, stores: list[tuple[str, str]]) -> str:
    return (
        f"def {name}({args}):\n"
        "    o = _new(_cls)\n"
        + "".join(f"    o.{slot} = {expr}\n" for slot, expr in stores)
        + "    return o\n"
    )


def _compile(code: str, env: dict[str, Any]) -> dict[str, Any]:
    """The functions ``code`` defines, with ``env`` as their globals."""
    local: dict[str, Any] = {}
    exec(code, env, local)
    return local


@_view("v, value", name="_wrap_variable")
@dataclass(frozen=True, eq=False)
class Variable:
    """A typed, versioned value in a session.

    ``type`` is the canonical type name: integer, float, string, boolean,
    choice, module, embedding, tensor. ``revision`` is the session revision of
    the variable's last change.
    """

    id: str = field(metadata=_given("v.id", doc="Server-assigned, stable for the variable's life."))
    name: str = field(metadata=_given("v.name"))
    type: str = field(
        metadata=_lazy(
            "cv.type_name(m.type)",
            doc="Canonical type name: integer, float, string, boolean, choice, module, "
            "embedding, tensor.",
        )
    )
    value: Any = field(metadata=_given("value", lazy="cv.from_value(m.value)"))
    version: int = field(metadata=_given("v.version"))
    constraints: dict[str, Any] = field(
        default_factory=dict,
        metadata=_lazy("cv.constraints_from_pb(m.constraints)"),
    )
    metadata: dict[str, str] = field(default_factory=dict, metadata=_lazy("dict(m.metadata)"))
    source: str = field(default="", metadata=_given("v.source"))
    revision: int = field(
        default=0,
        metadata=_given("v.revision", doc="The session revision of the variable's last change."),
    )
    updated_at: datetime | None = field(
        default=None, metadata=_lazy("cv.timestamp_to_datetime(m.updated_at)")
    )
    created_at: datetime | None = field(
        default=None, metadata=_lazy("cv.timestamp_to_datetime(m.created_at)")
    )

    @classmethod
    def from_pb(cls, v: pb.Variable) -> Variable:
        """A view of ``v`` (which must not be changed afterwards)."""
        return _wrap_variable(v, _UNSET)


_wrap_variable = _maker(Variable)
"""``_wrap_variable(v, value)``: a lazy view of ``v``; ``value``: its value if
already converted, else _UNSET."""

_UPDATE_TYPES: dict[int, str] = {
    pb.UPDATE_TYPE_UNSPECIFIED: "unspecified",
    pb.UPDATE_TYPE_INITIAL_VALUE: "initial_value",
    pb.UPDATE_TYPE_VALUE_CHANGE: "value_change",
    pb.UPDATE_TYPE_DELETED: "deleted",
    pb.UPDATE_TYPE_HEARTBEAT: "heartbeat",
    pb.UPDATE_TYPE_RESYNC: "resync",
}


# How a VariableUpdate view converts its less simple fields.


_UPDATE_VALUE = """
    if self._ut == _DELETED:
        v = None
    elif self._variable is _UNSET:
        # The variable's value, shared with .variable if read later. A scalar
        # that is not its zero takes a few plain reads (as in cv.from_value).
        w = m.variable.value
        v = w.int_value or w.float_value or w.string_value or w.bool_value or cv.from_value(w)
    else:
        v = self._variable.value if self._variable is not None else None
"""


def _update_old_value(u: Any) -> Any:
    m = u._pb
    o = cv.from_value(m.old_value) if m.HasField("old_value") else None
    if o is None and u._ut == _DELETED:
        var = u.variable
        if var is not None:
            o = var.value
    return o


def _update_variable(u: Any) -> Variable | None:
    m = u._pb
    if not m.HasField("variable"):
        return None
    # Share the value already converted, if any: u.value is u.variable.value,
    # as when both were built at once.
    if u._ut == _DELETED:
        shared = _UNSET if m.HasField("old_value") else u._old_value
    else:
        shared = u._value
    return _wrap_variable(m.variable, shared)


@_view(
    "u, ut, rev, vid=_UNSET, last=_UNSET",
    name="_wrap_update",
    # A value change whose revision and last_in_revision are read from the
    # message if asked for (a watch's fast path).
    variants={
        "_wrap_change": (
            "u, vid",
            {"ut": pb.UPDATE_TYPE_VALUE_CHANGE, "rev": _UNSET, "last": _UNSET},
        )
    },
    _ut=("ut", "-1"),
)
@dataclass(frozen=True, eq=False)
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

    # The fields the watch reads anyway are given when the view is made; the
    # rest come from the message on first read.
    variable_id: str = field(metadata=_given("vid", lazy="m.variable_id"))
    variable_name: str = field(
        # An update without a name (not sent by the server) falls back to the
        # variable's.
        metadata=_lazy("m.variable_name or m.variable.name")
    )
    value: Any = field(
        metadata=_lazy(_UPDATE_VALUE, doc='The value after the change (None for "deleted").')
    )
    old_value: Any = field(
        metadata=_lazy(_update_old_value, doc="The value before the change (see the class doc).")
    )
    update_type: str = field(
        metadata=_given(
            '_UPDATE_TYPES.get(ut) or f"unknown({ut})"',
            doc='One of "initial_value", "value_change", "deleted", "resync".',
        )
    )
    revision: int = field(metadata=_given("rev", lazy="m.revision"))
    source: str = field(metadata=_lazy("m.update_source"))
    metadata: dict[str, str] = field(metadata=_lazy("dict(m.update_metadata)"))
    timestamp: datetime | None = field(metadata=_lazy("cv.timestamp_to_datetime(m.timestamp)"))
    variable: Variable | None = field(
        metadata=_lazy(
            _update_variable, doc='The variable after the change (as it was, for "deleted").'
        )
    )
    initial: bool = field(default=False, metadata=_given("ut == _INITIAL"))
    resync: bool = field(default=False, metadata=_given("ut == _RESYNC"))
    last_in_revision: bool = field(
        default=False, metadata=_given("last", lazy="m.last_in_revision")
    )

    @classmethod
    def from_pb(cls, u: pb.VariableUpdate) -> VariableUpdate:
        """A view of ``u`` (which must not be changed afterwards)."""
        return _wrap_update(u, u.update_type, u.revision)

    @property
    def deleted(self) -> bool:
        return self.update_type == "deleted"


_wrap_update = _maker(VariableUpdate)
"""``_wrap_update(u, ut, rev, vid=_UNSET, last=_UNSET)``: a lazy view of
``u``, whose update_type and revision are ``ut`` and ``rev`` (and variable_id
and last_in_revision ``vid`` and ``last``, when the caller has read them)."""

_wrap_change = _maker(VariableUpdate, "_wrap_change")
"""``_wrap_change(u, vid)``: a lazy view of ``u``, a value change of the
variable with id ``vid``."""


def _with_old_value(u: VariableUpdate, old_value: Any) -> VariableUpdate:
    """``u`` with another ``old_value`` (a debounced burst: the old value from
    before it, everything else from its last update)."""
    return dataclasses.replace(u, old_value=old_value)


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
