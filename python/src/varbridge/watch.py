"""WatchVariables as a resumable async iterator.

A :class:`Watch` yields :class:`~varbridge.models.VariableUpdate` in revision
order. When the stream breaks it reconnects with exponential backoff and
resumes exactly where it stopped, so the loop body sees no gap and no repeat:

* it remembers the last revision it received completely (heartbeats, which
  carry the revision the stream has fully covered, count, and so do updates
  dropped by a filter);
* the updates of one atomic ``SetVariables`` share a revision and the server
  flags the last one it sends (``last_in_revision``). A watch cut in the
  middle of such a group resumes at that same revision and skips the
  variable ids it already has; otherwise it resumes at the next revision;
* a watch cut while it was still receiving its initial values asks for them
  again and skips the ones it has already yielded that did not change since.

Leaving the loop (``break``, an exception, cancelling the task, ``aclose()``
or the ``async with`` block) cancels the RPC at once.

By default the watch uses ``WatchVariableBatches`` (the same stream, with
every update that is ready sent as one message: far fewer messages for a
watcher that is catching up) and falls back to ``WatchVariables`` on a
server without it; ``batched=False`` asks for ``WatchVariables``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from varbridge.errors import Unavailable, VarbridgeError, from_rpc_error
from varbridge.models import VariableUpdate, _wrap_update
from varbridge.v1 import varbridge_pb2 as pb

if TYPE_CHECKING:
    from varbridge.client import SessionContext

__all__ = ["RETRYABLE_CODES", "UpdateFilter", "Watch"]

log = logging.getLogger("varbridge.watch")

UpdateFilter = Callable[[Any, Any], bool]
"""A client-side filter: ``(old_value, new_value) -> bool`` (True: deliver)."""

# A broken connection or a server going away; everything else (NOT_FOUND for
# a session that is gone, INVALID_ARGUMENT, PERMISSION_DENIED,
# RESOURCE_EXHAUSTED for a limit, ...) is raised at once.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


_HEARTBEAT = pb.UPDATE_TYPE_HEARTBEAT
_INITIAL = pb.UPDATE_TYPE_INITIAL_VALUE
_VALUE_CHANGE = pb.UPDATE_TYPE_VALUE_CHANGE
_DELETED = pb.UPDATE_TYPE_DELETED
_RESYNC = pb.UPDATE_TYPE_RESYNC


_EOF = grpc.aio.EOF


def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python 3.11+; else False)."""
    task = asyncio.current_task()
    fn = getattr(task, "cancelling", None)
    return bool(fn()) if fn is not None else False


class Watch(AsyncIterator[VariableUpdate]):
    """A resumable watch on a session's variables.

    Use ``async for update in session.watch_variables([...]):`` or, to be sure
    the stream is closed as the block ends, ``async with
    session.watch_variables([...]) as watch: async for update in watch:``.

    Counters for monitoring: ``received`` (messages off the wire), ``yielded``,
    ``filtered`` (by ``filter=``), ``filter_errors``, ``reconnects``,
    ``duplicates_skipped``, ``mid_group_resumes`` and ``last_revision`` (the last revision received
    completely; a resume starts after it).
    """

    def __init__(
        self,
        session: SessionContext,
        identifiers: list[str],
        *,
        include_initial: bool = True,
        filter: UpdateFilter | None = None,
        where: str | None = None,
        start_revision: int | None = None,
        coalesce: bool = False,
        heartbeat_interval_ms: int | None = None,
        max_retries: int = 10,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        batched: bool = True,
    ) -> None:
        self.session = session
        # The session's variable types (the dict is never replaced).
        self._types = session._types
        self.batched = batched
        self.identifiers = list(identifiers)
        self.filter = filter
        self.where = where or ""
        self.coalesce = coalesce
        self.heartbeat_interval_ms = heartbeat_interval_ms or 0
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

        self._call: grpc.aio.UnaryStreamCall[pb.WatchVariablesRequest, Any] | None = None
        # The open call's read(): one coroutine per message, lighter than
        # the call's async iterator (never both on one call).
        self._read: Callable[[], Awaitable[Any]] | None = None
        # Updates received in one batch message and not processed yet.
        self._buffer: deque[pb.VariableUpdate] = deque()
        self._closed = False
        self._failures = 0  # consecutive failed attempts

        # Resume state.
        self._last_complete = 0  # every update with revision <= this was received
        self._group_rev: int | None = None  # a revision whose updates are arriving
        self._group_ids: set[str] = set()  # ... and the variable ids received at it
        # Initial values: still to be received completely?
        self._initial_pending = include_initial and start_revision is None
        self._initial_seen: dict[str, int] = {}  # variable id -> its revision
        # No start point yet: "from now" is fixed by reading the session's
        # revision before the first call, so a cut before the first message
        # loses nothing either.
        self._need_base = not include_initial and start_revision is None
        if start_revision is not None:
            if start_revision < 1:
                raise ValueError("start_revision must be >= 1")
            self._last_complete = start_revision - 1

        self.received = 0
        self.yielded = 0
        self.filtered = 0
        self.filter_errors = 0
        self.reconnects = 0
        self.duplicates_skipped = 0
        self.mid_group_resumes = 0
        self.attempts = 0

    # -- public -----------------------------------------------------------

    @property
    def last_revision(self) -> int:
        """The last revision received completely (0: none yet)."""
        return self._last_complete

    @property
    def resume_revision(self) -> int:
        """The ``start_revision`` a reconnect would ask for now."""
        return self._group_rev if self._group_rev is not None else self._last_complete + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> Watch:
        """Fix the watch's starting point and open the stream now, rather than
        at the first read: every change committed after this returns will be
        delivered (with ``include_initial``, changes before it show in the
        initial values). Returns the watch; raises like iteration does.
        """
        if self._closed:
            raise RuntimeError("the watch is closed")
        if self._read is None:
            try:
                await self._connect()
                await self._registered()
            except BaseException:
                self.close()
                raise
        return self

    async def aclose(self) -> None:
        """Cancel the RPC and end the iteration."""
        self.close()

    def close(self) -> None:
        """Cancel the RPC now (synchronous; safe to call more than once)."""
        self._closed = True
        self._drop_call()

    def __del__(self) -> None:
        # An `async for` that is left with `break` drops its iterator: cancel
        # the RPC then rather than when the channel closes.
        call = getattr(self, "_call", None)
        if call is not None:
            with contextlib.suppress(Exception):  # the loop may be gone
                call.cancel()

    async def __anext__(self) -> VariableUpdate:
        if self._closed:
            raise StopAsyncIteration
        try:
            # The loop body runs in the same step as the read that brought its
            # update: no task, queue or callback in between.
            buf = self._buffer
            process = self._process
            while True:
                while buf:
                    update = process(buf.popleft())
                    if update is not None:
                        self.yielded += 1
                        return update
                # Only an empty buffer reads on: the resume point then covers
                # everything received, so a reconnect repeats and loses nothing.
                if self._closed:  # closed by another task, e.g. during a backoff
                    raise StopAsyncIteration
                read = self._read
                if read is None:
                    try:
                        await self._connect()
                    except VarbridgeError as e:
                        if e.code not in RETRYABLE_CODES:
                            raise
                        await self._backoff(e)
                        continue
                    read = self._read
                    assert read is not None
                try:
                    msg = await read()
                except asyncio.CancelledError:
                    if self._closed and not _cancelling():
                        # aclose() from another task cancelled the call under us.
                        raise StopAsyncIteration from None
                    raise
                except grpc.aio.AioRpcError as e:
                    self._drop_call()
                    if e.code() == grpc.StatusCode.UNIMPLEMENTED and self.batched:
                        # A server without WatchVariableBatches: one update per message.
                        log.info("watch: server lacks WatchVariableBatches; using WatchVariables")
                        self.batched = False
                        self.attempts -= 1
                        continue
                    if self._closed:
                        raise StopAsyncIteration from None
                    err = from_rpc_error(e)
                    if e.code() not in RETRYABLE_CODES:
                        raise err from e
                    await self._backoff(err)
                    continue
                if msg is _EOF:
                    # The server ended the stream without an error; a session
                    # that is gone is reported by the next attempt.
                    self._drop_call()
                    await self._backoff(
                        Unavailable("watch stream ended by the server", grpc.StatusCode.UNAVAILABLE)
                    )
                    continue
                self._failures = 0
                if self.batched:
                    updates = msg.updates
                    if len(updates) == 1:
                        # Keeping up: one update per message; no buffering.
                        self.received += 1
                        update = process(updates[0])
                    else:
                        self.received += len(updates)
                        buf.extend(updates)
                        continue
                else:
                    self.received += 1
                    update = process(msg)
                if update is not None:
                    self.yielded += 1
                    return update
        except BaseException:
            # VarbridgeError, CancelledError, KeyboardInterrupt...: the watch ends.
            self.close()
            raise

    # -- internals --------------------------------------------------------

    def _drop_call(self) -> None:
        call, self._call, self._read = self._call, None, None
        if call is not None:
            call.cancel()

    async def _connect(self) -> None:
        s = self.session
        if self._need_base:
            info = await s.get_info()
            self._last_complete = info.revision
            self._need_base = False
        req = pb.WatchVariablesRequest(
            session_id=s.session_id,
            variable_identifiers=self.identifiers,
            where=self.where,
            coalesce=self.coalesce,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )
        if self._initial_pending:
            req.include_initial_values = True
        else:
            req.start_revision = self.resume_revision
            if self._group_rev is not None:
                self.mid_group_resumes += 1
        self.attempts += 1
        if self.attempts > 1:
            self.reconnects += 1
            log.debug("watch %s: reconnecting at revision %d", s.session_id, req.start_revision)
        # No timeout: a deadline would become grpc-timeout and kill the stream.
        rpc = s.bridge.stub.WatchVariableBatches if self.batched else s.bridge.stub.WatchVariables
        self._call = rpc(req, metadata=s.bridge._metadata(s.token), timeout=None)
        self._read = self._call.read

    async def _registered(self) -> None:
        """Wait until the server has registered the watch: it sends the
        stream's headers then, before any update. (Creating the call only
        schedules it: a write right after could otherwise be committed before
        the watch exists, and show in the initial values.)"""
        call = self._call
        assert call is not None
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call.initial_metadata()
        if self.batched and call.done() and await call.code() == grpc.StatusCode.UNIMPLEMENTED:
            # A server without WatchVariableBatches: fall back now (the read
            # loop does the same when the first read fails so).
            log.info("watch: server lacks WatchVariableBatches; using WatchVariables")
            self._drop_call()
            self.batched = False
            self.attempts -= 1
            await self._connect()
            await self._registered()

    async def _backoff(self, err: VarbridgeError) -> None:
        self._failures += 1
        if self._failures > self.max_retries:
            raise err
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (self._failures - 1))
        delay *= 1 + random.uniform(-0.1, 0.1)
        log.info(
            "watch %s: %s; retry %d/%d in %.2fs",
            self.session.session_id,
            err,
            self._failures,
            self.max_retries,
            delay,
        )
        await asyncio.sleep(delay)

    def _complete(self, rev: int) -> None:
        if rev > self._last_complete:
            self._last_complete = rev
        if self._group_rev is not None and self._group_rev <= rev:
            self._group_rev = None
            self._group_ids.clear()

    def _process(self, msg: pb.VariableUpdate) -> VariableUpdate | None:
        """Advance the resume state; return the update to yield, if any."""
        ut = msg.update_type
        rev = msg.revision
        if ut == _HEARTBEAT:
            self._initial_done()
            self._complete(rev)
            return None

        if ut == _INITIAL:
            vid = msg.variable_id
            var_rev = msg.variable.revision
            dup = self._initial_seen.get(vid) == var_rev
            self._initial_seen[vid] = var_rev
            if msg.last_in_revision:
                self._initial_done()
                self._complete(rev)
            if dup:
                self.duplicates_skipped += 1
                return None
            return _wrap_update(msg, ut, rev)

        if self._initial_pending or self._initial_seen:
            self._initial_done()
        if rev <= self._last_complete and ut != _RESYNC:
            # Already delivered before a reconnect.
            self.duplicates_skipped += 1
            return None
        vid = msg.variable_id
        last = msg.last_in_revision
        group = self._group_rev
        if group == rev:
            if vid in self._group_ids:
                self.duplicates_skipped += 1
                if last:
                    self._complete(rev)
                return None
        elif group is not None:
            if group < rev:
                # A newer revision means the older one is complete.
                self._complete(group)
            else:
                self._group_ids.clear()
            self._group_rev = group = None
        if last:
            # The revision is complete with this update (alone in it, when
            # no group was open): no group bookkeeping.
            if rev > self._last_complete:
                self._last_complete = rev
            if group is not None:
                self._group_rev = None
                self._group_ids.clear()
        else:
            if group is None:
                self._group_rev = rev
            self._group_ids.add(vid)

        if ut == _DELETED:
            self.session._forget(vid, msg.variable_name)
        else:
            # Types of the variables seen, for later writes. Skipped when the
            # session already knows this one (a variable's type and
            # constraints never change; _remember files one tuple under
            # both its id and its name).
            types = self._types
            info = types.get(vid)
            if (info is None or types.get(msg.variable_name) is not info) and msg.HasField(
                "variable"
            ):
                self.session._remember(msg.variable)

        if ut == _VALUE_CHANGE and self.filter is not None:
            update = _wrap_update(msg, ut, rev, vid, last)
            try:
                keep = bool(self.filter(update.old_value, update.value))
            except Exception:
                self.filter_errors += 1
                log.warning(
                    "watch %s: filter raised on %s at revision %d; delivering the update",
                    self.session.session_id,
                    update.variable_name,
                    rev,
                    exc_info=True,
                )
                keep = True
            if not keep:
                self.filtered += 1
                return None
            return update
        return _wrap_update(msg, ut, rev, vid, last)

    def _initial_done(self) -> None:
        if self._initial_pending:
            self._initial_pending = False
        if self._initial_seen:
            self._initial_seen.clear()
