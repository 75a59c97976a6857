"""A blocking facade for scripts and notebooks.

::

    import varbridge.sync

    with varbridge.sync.connect("127.0.0.1:50051") as bridge:
        session = bridge.session("demo")
        session.set_variable("temperature", 0.9)
        for update in session.watch_variables(["temperature"]):
            print(update.value)

Each :class:`SyncBridge` runs a private asyncio event loop in a daemon
thread; the methods submit coroutines to it and wait. It works the same
inside a notebook whose own loop is already running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import grpc

from varbridge._options import WatchArgs, WatchOptions, with_option_keywords
from varbridge.client import Bridge, SessionContext
from varbridge.models import (
    Constraints,
    GetVariablesResult,
    SessionInfo,
    SetVariablesResult,
    Variable,
    VariableTypeAlias,
    VariableTypeName,
)
from varbridge.models import VariableUpdate as VariableUpdate
from varbridge.watch import BatchWatch, Watch

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["SyncBridge", "SyncSession", "SyncWatch", "connect"]

T = TypeVar("T")
Item = TypeVar("Item", VariableUpdate, list[VariableUpdate])


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="varbridge-sync", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("varbridge.sync called from its own event loop thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("varbridge.sync call timed out") from None
        except BaseException:  # KeyboardInterrupt: cancel the coroutine too
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(5)


def connect(
    target: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    options: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    timeout: float | None = 30.0,
    source: str | None = None,
) -> SyncBridge:
    """Blocking twin of :func:`varbridge.connect`; close it or use ``with``.

    ``target`` is one server's ``"host:port"`` or several servers that share
    their sessions (``["h1:p1", "h2:p2"]``, ``"h1:p1,h2:p2"`` or
    ``"dns:///name:port"``): calls spread over the servers that are up and a
    watch whose server dies resumes on another (see :func:`varbridge.connect`).
    """
    return SyncBridge(
        target,
        credentials=credentials,
        token=token,
        options=options,
        timeout=timeout,
        source=source,
    )


class SyncBridge:
    """A connection whose methods block; see :class:`varbridge.client.Bridge`."""

    def __init__(self, target: str | Sequence[str], **kwargs: Any) -> None:
        self._lt = _LoopThread()

        async def make() -> Bridge:
            return Bridge(target, **kwargs)

        try:
            self._bridge = self._lt.run(make())
        except BaseException:
            self._lt.stop()
            raise
        self._closed = False

    @property
    def bridge(self) -> Bridge:
        """The underlying asyncio :class:`Bridge` (use only on its loop)."""
        return self._bridge

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._lt.run(coro)

    def __enter__(self) -> SyncBridge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._bridge.close())
        finally:
            self._lt.stop()

    def wait_ready(self, timeout: float | None = None) -> None:
        self._run(self._bridge.wait_ready(timeout))

    def session(
        self,
        session_id: str | None = None,
        *,
        ttl: float | _dt.timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        token: str | None = None,
        cleanup: bool = False,
    ) -> SyncSession:
        """Create or join a session; usable as ``with``: leaving the block closes
        its watches and, with ``cleanup=True``, removes the session."""
        ctx = self._run(
            self._bridge._open_session(session_id, ttl=ttl, metadata=metadata, token=token)
        )
        ctx.cleanup_on_exit = cleanup
        return SyncSession(self, ctx)

    def get_session(self, session_id: str, *, token: str | None = None) -> SessionInfo:
        return self._run(self._bridge.get_session(session_id, token=token))

    def cleanup_session(self, session_id: str, *, token: str | None = None) -> int:
        return self._run(self._bridge.cleanup_session(session_id, token=token))


class SyncSession:
    """Blocking twin of :class:`varbridge.client.SessionContext`."""

    def __init__(self, bridge: SyncBridge, ctx: SessionContext) -> None:
        self._bridge = bridge
        self.context = ctx

    @property
    def session_id(self) -> str:
        return self.context.session_id

    @property
    def info(self) -> SessionInfo | None:
        return self.context.info

    @property
    def created(self) -> bool:
        return self.context.created

    @property
    def incarnation(self) -> str:
        return self.context.incarnation

    def __repr__(self) -> str:
        return f"SyncSession({self.session_id!r})"

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._bridge._closed:
            self._bridge._run(self.context.__aexit__(exc_type, exc, tb))

    def get_info(self) -> SessionInfo:
        return self._bridge._run(self.context.get_info())

    def heartbeat(self) -> SessionInfo:
        return self._bridge._run(self.context.heartbeat())

    def cleanup(self) -> int:
        return self._bridge._run(self.context.cleanup())

    def register_variable(
        self,
        name: str,
        type: VariableTypeName | VariableTypeAlias | int,
        initial_value: Any = None,
        *,
        constraints: Constraints | None = None,
        metadata: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> Variable:
        return self._bridge._run(
            self.context.register_variable(
                name,
                type,
                initial_value,
                constraints=constraints,
                metadata=metadata,
                source=source,
            )
        )

    def get_variable(self, identifier: str) -> Variable:
        return self._bridge._run(self.context.get_variable(identifier))

    def get_variables(self, identifiers: Iterable[str]) -> GetVariablesResult:
        return self._bridge._run(self.context.get_variables(list(identifiers)))

    def list_variables(self, pattern: str | None = None) -> list[Variable]:
        return self._bridge._run(self.context.list_variables(pattern))

    def set_variable(
        self,
        identifier: str,
        value: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        source: str | None = None,
    ) -> Variable:
        return self._bridge._run(
            self.context.set_variable(
                identifier,
                value,
                metadata=metadata,
                expected_version=expected_version,
                source=source,
            )
        )

    def set_variables(
        self,
        updates: Mapping[str, Any],
        *,
        metadata: Mapping[str, str] | None = None,
        expected_versions: Mapping[str, int] | None = None,
        source: str | None = None,
    ) -> SetVariablesResult:
        return self._bridge._run(
            self.context.set_variables(
                dict(updates),
                metadata=metadata,
                expected_versions=expected_versions,
                source=source,
            )
        )

    def delete_variable(
        self,
        identifier: str,
        *,
        metadata: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> Variable:
        return self._bridge._run(
            self.context.delete_variable(identifier, metadata=metadata, source=source)
        )

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: None = None,
        **kwargs: Unpack[WatchArgs],
    ) -> SyncWatch[VariableUpdate]: ...

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: float,
        **kwargs: Unpack[WatchArgs],
    ) -> SyncWatch[list[VariableUpdate]]: ...

    @overload
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        batch_window: float | None = None,
        options: WatchOptions | None = None,
        **kwargs: Unpack[WatchArgs],
    ) -> SyncWatch[VariableUpdate] | SyncWatch[list[VariableUpdate]]: ...

    @with_option_keywords
    def watch_variables(
        self,
        identifiers: Iterable[str] | None = None,
        *,
        options: WatchOptions | None = None,
        **kwargs: Any,
    ) -> SyncWatch[VariableUpdate] | SyncWatch[list[VariableUpdate]]:
        """A plain iterator of updates (of lists of them with ``batch_window``);
        close it (or use ``with``) to end the RPC. Options as
        :meth:`varbridge.client.SessionContext.watch_variables`."""
        ids = list(identifiers or ())
        opts = WatchOptions.of(options, kwargs)

        async def make() -> Watch | BatchWatch:
            return self.context.watch_variables(ids, options=opts)

        return SyncWatch(self._bridge, self._bridge._run(make()))


class SyncWatch(Iterator[Item], Generic[Item]):
    """Blocking iterator over a :class:`varbridge.watch.Watch` (or a
    :class:`varbridge.watch.BatchWatch`, yielding lists).

    :meth:`next` takes a ``timeout``: TimeoutError leaves the watch running
    and the next call picks up the same pending read. Ctrl-C (or any other
    interruption) ends the watch.
    """

    watch: Any  # Watch or BatchWatch, whichever yields Item

    def __init__(self, bridge: SyncBridge, watch: Watch | BatchWatch) -> None:
        self._bridge = bridge
        self.watch = watch
        self._pending: concurrent.futures.Future[Item] | None = None

    def __iter__(self) -> SyncWatch[Item]:
        return self

    def __next__(self) -> Item:
        return self.next()

    def start(self) -> SyncWatch[Item]:
        """Open the stream now (see :meth:`varbridge.watch.Watch.start`)."""
        self._bridge._run(self.watch.start())
        return self

    def next(self, timeout: float | None = None) -> Item:
        """The next update; TimeoutError after ``timeout`` seconds (the watch goes on)."""
        if self._pending is None:
            if self.watch.closed:
                raise StopIteration
            self._pending = asyncio.run_coroutine_threadsafe(
                self.watch.__anext__(), self._bridge._lt.loop
            )
        fut = self._pending
        try:
            result = fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError("no update within the timeout") from None
        except StopAsyncIteration:
            self._pending = None
            raise StopIteration from None
        except concurrent.futures.CancelledError:
            self._pending = None
            raise StopIteration from None
        except BaseException:
            self._pending = None
            fut.cancel()  # KeyboardInterrupt: end the watch
            raise
        self._pending = None
        return result

    def __enter__(self) -> SyncWatch[Item]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self.watch.closed and not self._bridge._closed:
            self._bridge._run(self.watch.aclose())
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def __del__(self) -> None:
        w = getattr(self, "watch", None)
        lt = getattr(getattr(self, "_bridge", None), "_lt", None)
        if w is not None and lt is not None and not w.closed and lt.loop.is_running():
            lt.loop.call_soon_threadsafe(w.close)
