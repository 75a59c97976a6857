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
  again and skips the ones it has already yielded that did not change since;
* it remembers the session's *incarnation* (``varbridge-watch-incarnation``
  header, the first update of a stream, heartbeats, RESYNC updates) and sends
  it with every resume. A session created again under the same id (a server
  that restarted without its data, a cleanup and a new session) has a new
  incarnation whose revisions are another history: the server then starts
  the stream with RESYNC updates (each watched variable's current value),
  which are yielded with ``resync=True``, and the watch continues from there.
  Never silence, never a skip. A ``start_revision`` beyond the session's
  revision + 1 in the same incarnation raises :class:`RevisionOutOfRange`.

Reconnecting follows the schedule the Go client uses: the first attempt after
a break waits a random fraction (up to 10 %) of ``backoff_base``; attempt
n >= 2 waits ``backoff_base * 2**(n-2)``, capped at ``backoff_cap``, +-10 %.
At the ``max_retries``-th consecutive failure the watch raises
:class:`GaveUp` ("gave up after N attempts over T: last error: ...").
On a bridge with several servers (``connect(["h1:p1", "h2:p2"])``), a break
while another server is up is a failover: the next stream opens on that
server after only the first attempt's jitter, and it does not count towards
``max_retries`` (``failovers`` counts them; a few in a row, then the schedule
above applies again).

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
import functools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

import grpc
import grpc.aio

from varbridge._mux import FellBehind, MuxCall
from varbridge._options import UpdateFilter, WatchOptions
from varbridge._typecache import TypeCache
from varbridge.errors import GaveUp, Unavailable, VarbridgeError, from_rpc_error
from varbridge.models import (
    SessionInfo,
    VariableUpdate,
    _with_old_value,
    _wrap_change,
    _wrap_update,
)
from varbridge.v1 import varbridge_pb2 as pb

__all__ = [
    "BACKOFF_JITTER",
    "RETRYABLE_CODES",
    "BatchWatch",
    "UpdateFilter",
    "Watch",
    "WatchSource",
    "backoff",
]

INCARNATION_HEADER = "varbridge-watch-incarnation"

BACKOFF_JITTER = 0.1
"""The jitter of reconnect delays (10 %), as in the Go client."""


def backoff(base: float, cap: float, failures: int) -> float:
    """The delay in seconds before reconnect attempt number ``failures`` (1 for
    the first after a break), the same schedule as the Go client's.

    The first waits only a random fraction (up to the jitter, 10 %) of
    ``base``, so that a stream that broke once comes back at once while many
    watches broken together spread out; attempt n >= 2 waits
    ``base * 2**(n-2)`` capped at ``cap``, +-10 %.
    """
    if failures <= 1:
        return base * BACKOFF_JITTER * random.random()
    d = min(cap, base * 2.0 ** (failures - 2))
    return d * (1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))


log = logging.getLogger("varbridge.watch")

# The consecutive failovers a watch makes before each failure counts towards
# giving up again, so that servers that are up but refuse its stream with a
# retryable status (one cut off from its storage, say) cannot make it spin.
_MAX_FAILOVERS = 3


class WatchSource(Protocol):
    """What a watch needs of its session (a
    :class:`~varbridge.client.SessionContext` is one): its id, its current
    revision and incarnation, and a way to open the stream."""

    @property
    def session_id(self) -> str: ...

    async def get_info(self) -> SessionInfo:
        """The session's current description (for a watch "from now")."""
        ...

    def _failover_ready(self) -> bool:
        """Whether a broken stream can be resumed at once on another server
        that is up (a bridge on several servers; see :meth:`Watch._backoff`)."""
        ...

    def _open_watch_stream(
        self, request: pb.WatchVariablesRequest, *, batched: bool, shared: bool = False
    ) -> Any:
        """Open the watch on the bridge's shared ``Watch`` stream
        (``shared``, unless the server lacks it: a :class:`varbridge._mux.MuxCall`,
        which reads ``VariableUpdateBatch`` messages), or else
        ``WatchVariableBatches`` (``batched``) or ``WatchVariables``,
        with the session's credentials and no deadline."""
        ...


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
    ``filtered`` (by ``filter=``), ``filter_errors``, ``reconnects``, ``failovers``,
    ``duplicates_skipped``, ``mid_group_resumes`` and ``last_revision`` (the last revision received
    completely; a resume starts after it).
    """

    def __init__(
        self,
        session: WatchSource,
        identifiers: list[str],
        options: WatchOptions,
        types: TypeCache | None = None,
    ) -> None:
        self.session = session
        self.options = options
        """What the watch was asked for (``batch_window`` is the :class:`BatchWatch`'s)."""
        # The session's variable types, filed as updates show them (for its
        # later writes).
        self._types = types if types is not None else TypeCache()
        self.batched = options.batched
        """Reading WatchVariableBatches (False after falling back)."""
        self.identifiers = list(identifiers)
        self._filter = options.filter  # read for every update

        # A grpc.aio UnaryStreamCall, or a MuxCall on the shared stream.
        self._call: Any = None
        self._shared = not options.own_stream
        """Asking for the shared Watch stream (False once the server lacked it)."""
        self._on_mux = False  # the open call is on the shared stream: it reads batches
        # The open call's read(): one coroutine per message, lighter than
        # the call's async iterator (never both on one call).
        self._read: Callable[[], Awaitable[Any]] | None = None
        # The updates of the last message received (one batch, or a
        # WatchVariables update alone), the index of the first not processed
        # yet, and of the first whose resume bookkeeping is not done yet:
        # batch[settled:pos] are value changes the fast path of __anext__
        # yielded, accounted for by _settle (at the end of the batch, before
        # any other update, or when the resume point is asked for).
        self._batch: Sequence[pb.VariableUpdate] = ()
        self._end = 0  # len(batch)
        self._pos = 0
        self._settled = 0
        # Whether the next update may take the fast path (see _is_plain; and
        # never the first update of a stream, which carries the incarnation).
        self._fast = False
        # Ids of variables whose types the session's cache holds (shared by
        # its watches; emptied when the cache changes).
        self._filed = self._types.filed
        self._closed = False
        self._failures = 0  # consecutive failed attempts
        self._failovers = 0  # consecutive failovers (see _backoff)
        self._failing_since = 0.0  # monotonic time of the first of them

        # The session incarnation the resume point belongs to ("" unknown),
        # and one the server just switched to whose RESYNC is still arriving
        # (adopted once it is complete, so a cut inside it asks again).
        self._incarnation = options.incarnation or ""
        self._next_incarnation = ""

        # Resume state.
        self._last_complete = 0  # every update with revision <= this was received
        self._group_rev: int | None = None  # a revision whose updates are arriving
        # ... the variable ids received at it (a list reused from group to
        # group: only a cut inside the group needs lookups) ...
        self._group_ids: list[str] = []
        # ... and, when the stream broke inside that group, the ones to skip
        # when the server sends the group again (built as the watch resumes).
        self._skip: set[str] | None = None
        # Initial values: still to be received completely?
        start_revision = options.start_revision
        self._initial_pending = options.include_initial and start_revision is None
        self._initial_seen: dict[str, int] = {}  # variable id -> its revision
        # No start point yet: "from now" is fixed by reading the session's
        # revision before the first call, so a cut before the first message
        # loses nothing either.
        self._need_base = not options.include_initial and start_revision is None
        if start_revision is not None:
            self._last_complete = start_revision - 1

        self.received = 0
        self._yielded = 0  # not counting batch[settled:pos]
        self.filtered = 0
        self.filter_errors = 0
        self.reconnects = 0
        self.failovers = 0
        """Breaks resumed at once on another server that was up (a bridge on
        several servers), without backoff and not counted towards ``max_retries``."""
        self.duplicates_skipped = 0
        self.mid_group_resumes = 0
        self.attempts = 0
        self.incarnation_changes = 0

    # -- public -----------------------------------------------------------

    @property
    def yielded(self) -> int:
        """Updates the watch has yielded."""
        return self._yielded + self._pos - self._settled

    @property
    def last_revision(self) -> int:
        """The last revision received completely (0: none yet)."""
        self._settle()
        return self._last_complete

    @property
    def resume_revision(self) -> int:
        """The ``start_revision`` a reconnect would ask for now."""
        self._settle()
        return self._group_rev if self._group_rev is not None else self._last_complete + 1

    @property
    def incarnation(self) -> str:
        """The session incarnation the watch follows ("" until the server said).

        With :attr:`resume_revision` it is what a watch in another process
        needs to carry on from here (``watch_variables(start_revision=...,
        incarnation=...)``)."""
        return self._incarnation

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
        self._fast = False
        self._drop_call()

    def __del__(self) -> None:
        # An `async for` that is left with `break` drops its iterator: cancel
        # the RPC then rather than when the channel closes.
        call = getattr(self, "_call", None)
        if call is not None:
            with contextlib.suppress(Exception):  # the loop may be gone
                call.cancel()

    async def __anext__(self) -> VariableUpdate:
        # _take_fast, inline (a call less per update).
        pos = self._pos
        if pos < self._end and self._fast:
            msg = self._batch[pos]
            if msg.update_type == _VALUE_CHANGE and (pos > self._settled or self._starts_run(msg)):
                self._pos = pos + 1
                vid = msg.variable_id
                if vid not in self._filed:
                    self._file_type(msg, vid)
                return _wrap_change(msg, vid)
        return await self._next()

    def _take_fast(self) -> VariableUpdate | None:
        """The fast path: the next update of the batch, if it is a value
        change, the watch has nothing pending and the change is in order
        (revisions never go down within a stream, so only the first of a
        run is compared with the resume point). It reads two fields and
        leaves the resume bookkeeping to :meth:`_settle`."""
        pos = self._pos
        if pos < self._end and self._fast:
            msg = self._batch[pos]
            if msg.update_type == _VALUE_CHANGE and (pos > self._settled or self._starts_run(msg)):
                self._pos = pos + 1
                vid = msg.variable_id
                if vid not in self._filed:
                    self._file_type(msg, vid)
                return _wrap_change(msg, vid)
        return None

    async def _next(self) -> VariableUpdate:
        """The next update, by the way that handles every case."""
        if self._closed:
            raise StopAsyncIteration
        try:
            # The loop body runs in the same step as the read that brought its
            # update: no task, queue or callback in between.
            while True:
                self._settle()
                batch = self._batch
                pos = self._pos
                while pos < len(batch):
                    msg = batch[pos]
                    pos += 1
                    self._pos = self._settled = pos
                    update = self._process(msg)
                    self._fast = self._is_plain()
                    if update is not None:
                        self._yielded += 1
                        return update
                    update = self._take_fast()
                    if update is not None:
                        return update
                # Only a batch processed whole reads on: the resume point then
                # covers everything received, so a reconnect repeats and loses
                # nothing.
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
                except FellBehind:
                    # The shared stream is fine: reopen on it at once, uncounted.
                    self._drop_call()
                    continue
                except asyncio.CancelledError:
                    if self._closed and not _cancelling():
                        # aclose() from another task cancelled the call under us.
                        raise StopAsyncIteration from None
                    raise
                except grpc.aio.AioRpcError as e:
                    if not self._incarnation and self._call is not None:
                        # Broken before any update: the header may still tell.
                        with contextlib.suppress(Exception):
                            self._note_header(await self._call.initial_metadata())
                    on_mux = self._on_mux
                    self._drop_call()
                    if e.code() == grpc.StatusCode.UNIMPLEMENTED and on_mux:
                        # A server without the shared Watch stream: a stream each.
                        log.info(
                            "watch: server lacks the shared Watch stream; using a stream per watch"
                        )
                        self._shared = False
                        self.attempts -= 1
                        continue
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
                self._failures = self._failovers = 0
                # A batch is kept as it came (a repeated field), processed in place.
                batch = msg.updates if self.batched or self._on_mux else (msg,)
                self._end = n = len(batch)
                self.received += n
                self._batch = batch
                self._pos = self._settled = 0
                update = self._take_fast()
                if update is not None:
                    return update
        except BaseException:
            # VarbridgeError, CancelledError, KeyboardInterrupt...: the watch ends.
            self.close()
            raise

    # -- internals --------------------------------------------------------

    def _drop_call(self) -> None:
        call, self._call, self._read = self._call, None, None
        self._on_mux = False
        if call is not None:
            call.cancel()

    async def _connect(self) -> None:
        s = self.session
        if self._need_base:
            info = await s.get_info()
            self._last_complete = info.revision
            if not self._incarnation:
                self._incarnation = info.incarnation
            self._need_base = False
        opts = self.options
        req = pb.WatchVariablesRequest(
            session_id=s.session_id,
            variable_identifiers=self.identifiers,
            where=opts.where or "",
            coalesce=opts.coalesce,
            heartbeat_interval_ms=opts.heartbeat_interval_ms or 0,
            # Sent on every call: a resume point is only meaningful in the
            # incarnation it came from.
            incarnation=self._incarnation,
        )
        if self._initial_pending:
            req.include_initial_values = True
        else:
            req.start_revision = self.resume_revision
            if self._group_rev is not None:
                # Broken inside a group: the server sends it again from its
                # first member; the ones delivered are skipped.
                self.mid_group_resumes += 1
                self._skip = set(self._group_ids)
        self.attempts += 1
        if self.attempts > 1:
            self.reconnects += 1
            log.debug("watch %s: reconnecting at revision %d", s.session_id, req.start_revision)
        self._fast = False  # the stream's first update carries the incarnation
        self._call = s._open_watch_stream(req, batched=self.batched, shared=self._shared)
        self._on_mux = isinstance(self._call, MuxCall)
        self._read = self._call.read

    async def _registered(self) -> None:
        """Wait until the server has registered the watch: it sends the
        stream's headers then, before any update. (Creating the call only
        schedules it: a write right after could otherwise be committed before
        the watch exists, and show in the initial values.)"""
        call = self._call
        assert call is not None
        with contextlib.suppress(grpc.aio.AioRpcError):
            self._note_header(await call.initial_metadata())
        if self._on_mux and call.done() and await call.code() == grpc.StatusCode.UNIMPLEMENTED:
            # A server without the shared Watch stream: a stream each.
            log.info("watch: server lacks the shared Watch stream; using a stream per watch")
            self._drop_call()
            self._shared = False
            self.attempts -= 1
            await self._connect()
            await self._registered()
            return
        if (
            self.batched
            and not self._on_mux
            and call.done()
            and await call.code() == grpc.StatusCode.UNIMPLEMENTED
        ):
            # A server without WatchVariableBatches: fall back now (the read
            # loop does the same when the first read fails so).
            log.info("watch: server lacks WatchVariableBatches; using WatchVariables")
            self._drop_call()
            self.batched = False
            self.attempts -= 1
            await self._connect()
            await self._registered()

    def _note_header(self, md: Any) -> None:
        """Take the incarnation from the stream's response header, if the
        watch does not know one yet. A known one changes only with the
        RESYNC updates themselves (see :meth:`_switch_incarnation`)."""
        if self._incarnation or not md:
            return
        for key, value in md:
            if key == INCARNATION_HEADER and isinstance(value, str) and value:
                self._incarnation = value
                return

    async def _backoff(self, err: VarbridgeError) -> None:
        opts = self.options
        if self._failovers < _MAX_FAILOVERS and self.session._failover_ready():
            # A failover: the bridge names several servers and one is up
            # (gRPC already dropped the one that failed from its rotation),
            # so the next stream opens there. It waits only the first
            # attempt's jitter, which spreads a dead server's watches over a
            # moment, and does not count towards giving up.
            self._failovers += 1
            self.failovers += 1
            delay = backoff(opts.backoff_base, opts.backoff_cap, 1)
            log.info("watch %s: %s; failing over in %.2fs", self.session.session_id, err, delay)
            await asyncio.sleep(delay)
            return
        now = time.monotonic()
        if self._failures == 0:
            self._failing_since = now
        self._failures += 1
        if self._failures >= opts.max_retries:
            raise GaveUp(self._failures, now - self._failing_since, err) from err
        delay = backoff(opts.backoff_base, opts.backoff_cap, self._failures)
        log.info(
            "watch %s: %s; attempt %d/%d in %.2fs",
            self.session.session_id,
            err,
            self._failures + 1,
            opts.max_retries,
            delay,
        )
        await asyncio.sleep(delay)

    def _switch_incarnation(self, inc: str, ut: int) -> None:
        """The server reports incarnation ``inc``, not the one the watch had."""
        if not self._incarnation:
            self._incarnation = inc  # the first the watch hears of
            return
        if inc == self._next_incarnation:
            return  # the RESYNC already under way
        # The session was created again: its revisions are another history,
        # so the resume point and any half-received group mean nothing now.
        self.incarnation_changes += 1
        log.info(
            "watch %s: the session's incarnation changed (%s -> %s)",
            self.session.session_id,
            self._incarnation,
            inc,
        )
        self._last_complete = 0
        self._group_rev = None
        self._group_ids.clear()
        self._skip = None
        self._initial_seen.clear()  # variable ids and revisions of the old one
        if ut == _RESYNC:
            # Adopted when the RESYNC is complete: a cut before that resumes
            # with the old incarnation, so the server sends the RESYNC again.
            self._next_incarnation = inc
        else:
            self._incarnation = inc
            self._next_incarnation = ""

    def _complete(self, rev: int) -> None:
        if rev > self._last_complete:
            self._last_complete = rev
        if self._group_rev is not None and self._group_rev <= rev:
            self._group_rev = None
            self._group_ids.clear()
            self._skip = None

    def _process(self, msg: pb.VariableUpdate) -> VariableUpdate | None:
        """Advance the resume state; return the update to yield, if any."""
        ut = msg.update_type
        rev = msg.revision
        inc = msg.incarnation
        if inc and inc != self._incarnation:
            self._switch_incarnation(inc, ut)
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
            skip = self._skip
            if skip is not None and vid in skip:
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
                self._skip = None
            self._group_rev = group = None
        if last:
            # The revision is complete with this update (alone in it, when
            # no group was open): no group bookkeeping.
            if rev > self._last_complete:
                self._last_complete = rev
            if group is not None:
                self._group_rev = None
                self._group_ids.clear()
                self._skip = None
            if self._next_incarnation:  # a RESYNC complete: its incarnation holds
                self._incarnation = self._next_incarnation
                self._next_incarnation = ""
        else:
            if group is None:
                self._group_rev = rev
            self._group_ids.append(vid)

        types = self._types
        if ut == _DELETED:
            types.forget(vid, msg.variable_name)
        else:
            # Types of the variables seen, for later writes. Skipped when the
            # cache already knows this one (a variable's type and
            # constraints never change; remember() files one tuple under
            # both its id and its name).
            if vid not in self._filed:
                self._file_type(msg, vid)

        if ut == _VALUE_CHANGE and self._filter is not None:
            update = _wrap_update(msg, ut, rev, vid, last)
            try:
                keep = bool(self._filter(update.old_value, update.value))
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

    def _file_type(self, msg: pb.VariableUpdate, vid: str) -> None:
        """File the type of the variable ``msg`` is about, for later writes,
        unless the session already has it under its id and its name (it
        never changes for an id)."""
        types = self._types
        info = types.get(vid)
        if info is None or types.get(msg.variable_name) is not info:
            if msg.HasField("variable"):
                types.remember(msg.variable)
        else:
            self._filed.add(vid)

    def _starts_run(self, msg: pb.VariableUpdate) -> bool:
        """Whether a value change may start a run of the fast path: it is not
        older than the resume point and continues the open group, if any."""
        rev = msg.revision
        group = self._group_rev
        return rev > self._last_complete and (group is None or group == rev)

    def _settle(self) -> None:
        """Do the resume bookkeeping of batch[settled:pos], value changes
        the fast path yielded: what :meth:`_process` does update by update,
        in a few reads. Revisions do not go down within the run, so
        everything before the last revision in it is complete; that one is
        complete if its last update says so, else its group is open with the
        run's updates at it as members."""
        a, b = self._settled, self._pos
        if a == b:
            return
        self._settled = b
        self._yielded += b - a
        batch = self._batch
        end = batch[b - 1]
        rev = end.revision
        ids = self._group_ids
        if not end.last_in_revision:
            # The run's last updates, from i on, are members of rev's group.
            i = b - 1
            while i > a:
                prev = batch[i - 1]
                if prev.revision != rev or prev.last_in_revision:
                    break
                i -= 1
            if i == a or batch[i - 1].revision != rev:
                if i > a:
                    # Complete before it, and so is a group open before the run.
                    self._last_complete = batch[i - 1].revision
                    ids.clear()
                # (else the run is all in one group: its first update started
                # it or continued the open one)
                self._group_rev = rev
                ids.extend(batch[j].variable_id for j in range(i, b))
                return
            # (else a server's error, more of rev after its last: as in
            # _process, rev is complete and those were not members)
        self._last_complete = rev
        self._group_rev = None
        ids.clear()

    def _is_plain(self) -> bool:
        """Whether an update in order may take the fast path of
        :meth:`__anext__`: no filter, no initial values or RESYNC arriving, no
        members of a group to skip."""
        return (
            self._filter is None
            and not self._initial_pending
            and not self._initial_seen
            and not self._next_incarnation
            and self._skip is None
        )

    def _initial_done(self) -> None:
        if self._initial_pending:
            self._initial_pending = False
        if self._initial_seen:
            self._initial_seen.clear()


class _Shaper:
    """Debounce and batch windows over a source of updates, as Go's
    ``variables.Watch`` has them.

    Debounce (per variable): an update is held until its variable has been
    quiet for ``debounce`` seconds, then delivered with the old value from
    before the burst and the last value: the trailing edge, so the last value
    is always delivered, also when the watch ends. Batch window: the updates
    that come out during ``window`` seconds after the first one are delivered
    together, in order.

    The source is read by a task of its own so that a deadline can pass while
    a read is pending without cancelling it (cancelling a grpc.aio read
    cancels the whole call); a caller cancelled mid-wait leaves that read to
    the next call.
    """

    def __init__(
        self,
        source: Callable[[], Awaitable[VariableUpdate]],
        *,
        debounce: float | None = None,
        window: float | None = None,
    ) -> None:
        self._source = source
        self._debounce = debounce
        self._window = window
        # variable id -> [update to deliver, when it is due]; a dict keeps
        # the first arrival's order, which is the delivery order.
        self._held: dict[str, tuple[VariableUpdate, float]] = {}
        self._out: deque[VariableUpdate] = deque()
        self._batch: list[VariableUpdate] = []
        self._batch_due = 0.0
        self._batches: deque[list[VariableUpdate]] = deque()
        self._read: asyncio.Future[VariableUpdate] | None = None
        self._end: BaseException | None = None  # what ended the source

    async def next_update(self) -> VariableUpdate:
        while True:
            self._fire(asyncio.get_running_loop().time())
            if self._out:
                return self._out.popleft()
            if self._end is not None:
                self._fire(None)
                if self._out:
                    return self._out.popleft()
                raise self._end
            await self._wait()

    async def next_batch(self) -> list[VariableUpdate]:
        while True:
            self._fire(asyncio.get_running_loop().time())
            if self._batches:
                return self._batches.popleft()
            if self._end is not None:
                self._fire(None)
                if self._batches:
                    return self._batches.popleft()
                raise self._end
            await self._wait()

    async def _wait(self) -> None:
        """Wait for the next update or the next deadline, whichever is first."""
        loop = asyncio.get_running_loop()
        if self._read is None:
            self._read = asyncio.ensure_future(self._source())
            # A read that ends after its watch was closed and left is never
            # collected: mark its outcome seen, so asyncio does not log it.
            self._read.add_done_callback(_seen)
        due = self._next_due()
        timeout = None if due is None else max(0.0, due - loop.time())
        done, _ = await asyncio.wait((self._read,), timeout=timeout)
        if not done:
            return
        read, self._read = self._read, None
        try:
            u = read.result()
        except (StopAsyncIteration, asyncio.CancelledError):
            self._end = StopAsyncIteration()
        except Exception as e:
            self._end = e
        else:
            self._add(u, loop.time())

    def _next_due(self) -> float | None:
        due = min((d for _, d in self._held.values()), default=None)
        if self._batch and (due is None or self._batch_due < due):
            due = self._batch_due
        return due

    def _add(self, u: VariableUpdate, now: float) -> None:
        if self._debounce is None:
            self._emit(u, now)
            return
        key = u.variable_id
        held = self._held.get(key)
        if held is not None:
            # Keep the old value from before the burst; the rest is the latest.
            u = _with_old_value(u, held[0].old_value)
        self._held[key] = (u, now + self._debounce)

    def _fire(self, now: float | None) -> None:
        """Deliver the held updates due at ``now`` (all of them for None) and
        close the batch if its window has passed."""
        if self._held:
            due = [k for k, (_, d) in self._held.items() if now is None or d <= now]
            for k in due:
                u, _ = self._held.pop(k)
                self._emit(u, now)
        if self._batch and (now is None or self._batch_due <= now):
            self._batches.append(self._batch)
            self._batch = []

    def _emit(self, u: VariableUpdate, now: float | None) -> None:
        if self._window is None:
            self._out.append(u)
            return
        if not self._batch:
            start = now if now is not None else asyncio.get_running_loop().time()
            self._batch_due = start + self._window
        self._batch.append(u)


def _seen(f: asyncio.Future[VariableUpdate]) -> None:
    if not f.cancelled():
        f.exception()


class _DebouncedWatch(Watch):
    """A :class:`Watch` whose updates go through a per-variable debounce
    (``watch_variables(debounce=...)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        debounce = self.options.debounce
        if debounce is None or debounce <= 0:
            raise ValueError("debounce must be positive")
        self._shaper = _Shaper(functools.partial(Watch.__anext__, self), debounce=debounce)

    async def __anext__(self) -> VariableUpdate:
        # After close() the pending read ends by itself (its call is
        # cancelled); what the debounce still holds comes out first.
        return await self._shaper.next_update()


class BatchWatch(AsyncIterator[list[VariableUpdate]]):
    """A watch that yields lists of updates (``watch_variables(batch_window=...)``).

    A window opens with the first update and lasts ``window`` seconds; the
    updates collected in it are yielded together, in order. When the watch
    ends (or raises), what was collected is yielded first. ``watch`` is the
    underlying :class:`Watch` (counters, resume state). Close it with
    ``async with`` or :meth:`aclose`: its reads run in a task of their own,
    which leaving the loop with ``break`` does not end.
    """

    def __init__(self, watch: Watch, window: float) -> None:
        if window <= 0:
            raise ValueError("batch_window must be positive")
        self.watch = watch
        self.window = window
        self._shaper = _Shaper(watch.__anext__, window=window)

    @property
    def closed(self) -> bool:
        return self.watch.closed

    def __aiter__(self) -> BatchWatch:
        return self

    async def __anext__(self) -> list[VariableUpdate]:
        return await self._shaper.next_batch()

    async def __aenter__(self) -> BatchWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> BatchWatch:
        """Open the stream now (see :meth:`Watch.start`)."""
        await self.watch.start()
        return self

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self.watch.close()

    def __del__(self) -> None:
        w = getattr(self, "watch", None)
        if w is not None:
            with contextlib.suppress(Exception):
                w.close()
