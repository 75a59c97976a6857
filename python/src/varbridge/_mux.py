"""The multiplexed watch stream (``Watch``): a bridge's watches share one
stream per token instead of a stream each, as etcd's clients share theirs.

Each watch keeps its own :class:`~varbridge.watch.Watch`, which sees its part
of the shared stream as a call (:class:`MuxCall`) with the methods it uses of
a ``WatchVariableBatches`` call: ``initial_metadata`` (the incarnation, once
the server created the watch), ``read`` (a ``VariableUpdateBatch``, or the
``AioRpcError`` the watch ended with, carrying the server's status details
as a single watch's trailers would), ``cancel``, ``done`` and ``code``. So the
resume rules stay in one place: when the shared stream breaks, every watch
on it sees the error and resumes on its own schedule, each from its own
revision and incarnation, on the next shared stream.

One reader task per shared stream hands each response to its watch through
a small bounded queue, and never waits for one: a watch whose reader does
not keep up would otherwise stall the reader task, and so every other watch
of its stream (etcd#17529). A watch whose queue is full is left behind
instead: its later responses are dropped, and once it has read what was
queued, its read raises :class:`FellBehind` and the watch reopens at once
from the revision it reached, as after a cut: nothing lost or repeated, and
no memory grows for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio

from varbridge._status import DETAILS_KEY, _Status
from varbridge.v1 import varbridge_pb2 as pb

INCARNATION_HEADER = "varbridge-watch-incarnation"

_SUB_QUEUE = 8
"""Responses waiting for one watch's reader."""


class FellBehind(Exception):
    """A watch's reads fell behind its shared stream (its queue was full):
    the watch reopens at once from its revision."""


def _rpc_error(
    code: grpc.StatusCode, details: str, status: bytes | None = None
) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata()
    if status is not None:
        trailers.add(DETAILS_KEY, status)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=details)


_CODES = {c.value[0]: c for c in grpc.StatusCode}

_CANCELLED = pb.WatchResponse()
"""Queued by cancel: a read then raises CancelledError, as on a cancelled call."""


def _ended_error(r: pb.WatchResponse) -> grpc.aio.AioRpcError:
    """The error a WatchEnded stands for: the status a single watch's stream
    would have ended with, details included."""
    raw = r.ended.status
    try:
        st = _Status.FromString(raw)
    except Exception:
        return _rpc_error(grpc.StatusCode.INTERNAL, f"watch {r.watch_id} ended with a bad status")
    code = _CODES.get(st.code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.OK:
        code = grpc.StatusCode.UNAVAILABLE
    return _rpc_error(code, st.message, raw)


class MuxStream:
    """One open ``Watch`` stream of a bridge, for one token."""

    def __init__(self, stub: Any, metadata: Any, on_end: Callable[[MuxStream], None]) -> None:
        # The requests not written yet: at most a create and a cancel per watch.
        self._out: asyncio.Queue[pb.WatchRequest] = asyncio.Queue()
        # No timeout: a deadline would become grpc-timeout and kill the stream.
        self._call: Any = stub.Watch(metadata=metadata, timeout=None)
        self._subs: dict[int, MuxCall] = {}
        self._next_id = 0
        self._on_end = on_end
        self.error: grpc.aio.AioRpcError | None = None
        """Why the stream ended, once it has."""
        loop = asyncio.get_running_loop()
        # Both tasks are the stream's own and end with it (a request
        # iterator handed to grpc.aio would outlive a broken stream).
        self._writer = loop.create_task(self._write())
        self._reader = loop.create_task(self._read())

    async def _write(self) -> None:
        try:
            while True:
                await self._call.write(await self._out.get())
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the stream broke: the reader reports why

    def open(self, request: pb.WatchVariablesRequest) -> MuxCall:
        """Create a watch on the stream."""
        self._next_id += 1
        sub = MuxCall(self, self._next_id)
        self._subs[sub.watch_id] = sub
        self._out.put_nowait(
            pb.WatchRequest(create=pb.WatchCreateRequest(watch_id=sub.watch_id, watch=request))
        )
        return sub

    async def _read(self) -> None:
        err = _rpc_error(grpc.StatusCode.CANCELLED, "the watch stream was closed")
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    err = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the watch stream ended")
                    return
                sub = self._subs.get(msg.watch_id)
                if sub is None:  # a watch that left: its last responses go nowhere
                    continue
                kind = msg.WhichOneof("response")
                if kind == "ended" or kind == "canceled":
                    del self._subs[msg.watch_id]
                await sub._put(msg, kind)
        except grpc.aio.AioRpcError as e:
            # Kept without the frames it was raised through (a cycle that
            # would keep them alive until the garbage collector runs).
            err = e.with_traceback(None)
        finally:
            self.error = err
            subs, self._subs = list(self._subs.values()), {}
            for sub in subs:
                sub._fail(err)
            self._on_end(self)
            self._call.cancel()
            self._writer.cancel()

    def _leave(self, sub: MuxCall) -> None:
        if self._subs.pop(sub.watch_id, None) is None or self.error is not None:
            return
        if not self._subs:  # its last watch: the stream closes
            self.close()
            return
        self._out.put_nowait(pb.WatchRequest(cancel=pb.WatchCancelRequest(watch_id=sub.watch_id)))

    def close(self) -> None:
        """End the stream and every watch on it (synchronous)."""
        self._on_end(self)
        self._call.cancel()
        self._reader.cancel()
        self._writer.cancel()

    async def aclose(self) -> None:
        """End the stream and wait for its tasks."""
        self.close()
        for t in (self._reader, self._writer):
            with contextlib.suppress(asyncio.CancelledError):
                await t


class MuxCall:
    """One watch of a shared stream, as its :class:`~varbridge.watch.Watch`
    reads it."""

    def __init__(self, stream: MuxStream, watch_id: int) -> None:
        self._stream = stream
        self.watch_id = watch_id
        self._q: asyncio.Queue[pb.WatchResponse | grpc.aio.AioRpcError] = asyncio.Queue(
            maxsize=_SUB_QUEUE
        )
        self._created: asyncio.Future[grpc.aio.Metadata] = (
            asyncio.get_running_loop().create_future()
        )
        self._error: grpc.aio.AioRpcError | None = None
        # What the reads ended with (an error, or _CANCELLED): every later
        # read raises it again, whatever a put already under way adds.
        self._end: pb.WatchResponse | grpc.aio.AioRpcError | None = None
        self._left = False
        # Left behind: the responses after those queued were dropped.
        self._behind = False

    async def _put(self, msg: pb.WatchResponse, kind: str | None) -> None:
        if kind == "created":
            if not self._created.done():
                self._created.set_result(
                    grpc.aio.Metadata((INCARNATION_HEADER, msg.created.incarnation))
                )
            return
        if kind == "ended":
            self._fail(_ended_error(msg))
            return
        if kind == "canceled":
            self._fail(_rpc_error(grpc.StatusCode.CANCELLED, "the watch was cancelled"))
            return
        if self._left or self._behind:
            return
        if self._q.full():
            self._behind = True  # the reader task never waits for one watch
            return
        self._q.put_nowait(msg)

    def _fail(self, err: grpc.aio.AioRpcError) -> None:
        """The watch ended: what is queued goes (the watch resumes after what
        it processed), and the error is all that is left to read."""
        if self._error is not None:
            return
        self._error = err
        if not self._created.done():
            self._created.set_result(grpc.aio.Metadata())
        self._finish(err)

    def _finish(self, end: pb.WatchResponse | grpc.aio.AioRpcError) -> None:
        """Queue what ends the reads, in place of what is queued (there is
        room then, and a read waiting wakes)."""
        while not self._q.empty():
            self._q.get_nowait()
        self._q.put_nowait(end)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """The incarnation header of a single watch, once the server created
        the watch (empty when it refused it)."""
        return await asyncio.shield(self._created)

    async def read(self) -> Any:
        """The next batch of updates (a ``VariableUpdateBatch``); raises the
        ``AioRpcError`` the watch ended with."""
        item = self._end
        if item is None:
            if self._behind and self._q.empty():
                raise FellBehind(f"watch {self.watch_id} fell behind its shared stream")
            item = await self._q.get()
            if item is _CANCELLED or isinstance(item, grpc.aio.AioRpcError):
                self._end = item
        if item is _CANCELLED:
            raise asyncio.CancelledError()
        if isinstance(item, grpc.aio.AioRpcError):
            # A copy: the one kept must not hold the reader's frames (and
            # its Watch) through the traceback raising attaches.
            raise grpc.aio.AioRpcError(
                item.code(), item.initial_metadata(), item.trailing_metadata(), item.details()
            )
        return item.updates

    def cancel(self) -> bool:
        """Leave the stream; the server drops the watch."""
        if self._left:
            return False
        self._left = True
        # A read waiting raises CancelledError, and the reader task, if it
        # waits for room here, goes on.
        self._finish(_CANCELLED)
        self._stream._leave(self)
        return True

    def done(self) -> bool:
        return self._error is not None

    async def code(self) -> grpc.StatusCode:
        return self._error.code() if self._error is not None else grpc.StatusCode.OK
