"""The options of a watch, declared once.

:class:`WatchOptions` holds every option of ``watch_variables`` with its
default; :class:`WatchArgs` types the same names as keyword arguments (for
``**kwargs: Unpack[WatchArgs]``; ``batch_window`` is apart because it picks
the return type). ``SessionContext.watch_variables``,
``SyncSession.watch_variables`` and :class:`~varbridge.watch.Watch` take
them from here rather than restating them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

__all__ = ["UpdateFilter", "WatchArgs", "WatchOptions"]

UpdateFilter = Callable[[Any, Any], bool]
"""A client-side filter: ``(old_value, new_value) -> bool`` (True: deliver)."""


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    """How a watch reads: ``session.watch_variables(ids, **options)`` or
    ``session.watch_variables(ids, options=WatchOptions(...))`` (keywords
    given too replace the object's).

    ``include_initial`` (default False, as in the seed and the Go client):
    start with each variable's current value. ``filter``: a client-side
    ``(old, new) -> bool`` (one that raises counts as "deliver"); ``where``: a
    server-side CEL expression over ``old``, ``new``, ``name``, ``metadata``.
    ``start_revision`` and ``incarnation``: resume a watch from another
    process where it stopped (its ``resume_revision`` and ``incarnation``).
    ``coalesce``: the server delivers only the latest value per variable.
    ``heartbeat_interval_ms``: ask for heartbeats this often (None: the
    server's default). ``max_retries``, ``backoff_base``, ``backoff_cap``
    (seconds): the reconnect schedule (see :func:`varbridge.watch.backoff`).
    ``batched``: read ``WatchVariableBatches`` (falls back to
    ``WatchVariables`` on a server without it). ``debounce`` (seconds):
    deliver a variable's update only once it has been quiet that long, with
    the old value from before the burst and the last value (trailing edge:
    the last value is always delivered). ``batch_window`` (seconds): yield
    lists of the updates collected during the window that opens with the
    first one (a :class:`~varbridge.watch.BatchWatch`). ``own_stream``: give
    the watch a gRPC stream of its own (``WatchVariableBatches``, or
    ``WatchVariables`` without ``batched``) instead of a place on the
    bridge's shared ``Watch`` stream, where by default every watch of the
    bridge (per token) travels with the same guarantees, batched; a watch on
    its own stream is not held back by a slow reader of another watch.
    Against a server without the shared stream, every watch has its own.
    """

    include_initial: bool = False
    filter: UpdateFilter | None = None
    where: str | None = None
    start_revision: int | None = None
    incarnation: str | None = None
    coalesce: bool = False
    heartbeat_interval_ms: int | None = None
    max_retries: int = 10
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    batched: bool = True
    debounce: float | None = None
    own_stream: bool = False
    batch_window: float | None = None

    def __post_init__(self) -> None:
        if self.debounce is not None and self.debounce <= 0:
            raise ValueError(f"debounce must be positive, got {self.debounce!r}")
        if self.batch_window is not None and self.batch_window <= 0:
            raise ValueError(f"batch_window must be positive, got {self.batch_window!r}")
        if self.max_retries < 1:
            raise ValueError("max_retries must be >= 1")
        if self.start_revision is not None and self.start_revision < 1:
            raise ValueError("start_revision must be >= 1")

    @classmethod
    def of(cls, options: WatchOptions | None, kwargs: Mapping[str, Any]) -> WatchOptions:
        """``options`` (the defaults when None) with ``kwargs`` replacing its fields."""
        if options is None:
            return cls(**kwargs)
        return dataclasses.replace(options, **kwargs) if kwargs else options


class WatchArgs(TypedDict, total=False):
    """The fields of :class:`WatchOptions` but ``batch_window``, as keyword
    arguments (types only: the defaults are :class:`WatchOptions`')."""

    include_initial: bool
    filter: UpdateFilter | None
    where: str | None
    start_revision: int | None
    incarnation: str | None
    coalesce: bool
    heartbeat_interval_ms: int | None
    max_retries: int
    backoff_base: float
    backoff_cap: float
    batched: bool
    debounce: float | None
    own_stream: bool


F = TypeVar("F", bound=Callable[..., Any])


def with_option_keywords(fn: F) -> F:
    """Show the fields of :class:`WatchOptions` as ``fn``'s keyword-only
    parameters (with their defaults) in its run-time signature, in place of
    its ``**kwargs`` (``help()``, ``inspect.signature``)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = next(i for i, p in enumerate(params) if p.kind is p.KEYWORD_ONLY)
    fields = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
        )
        for f in dataclasses.fields(WatchOptions)
        if f.name not in sig.parameters
    ]
    fn.__signature__ = sig.replace(parameters=params[:at] + fields + params[at:])  # type: ignore[attr-defined]
    return fn
