"""Writes on a stream: set_variable and set_variables over WriteVariables.

A :class:`~varbridge.Bridge` keeps one long-lived ``WriteVariables`` stream
per token and sends its writes on it: a write on an open stream skips the
per-call HTTP/2 stream, headers and trailers of a unary ``SetVariable``
(about half its round trip). Writers do not wait for each other's acks:
each queues its write and awaits its own ack, which the server sends in the
order the writes arrived; whoever finds no send in progress sends every
write queued by then in one message, so writers that come together share a
message while a lone writer sends at once.

The stream is for writers that write often: a write opens it (when the
channel is connected) only when the previous write for the token came less
than :data:`IDLE_SECONDS` before, so a lone write goes unary and costs the
server no stream; an open stream closes itself cleanly after
:data:`IDLE_SECONDS` without writes; a write after it broke opens a new one
under the same rule. A write whose ack was lost with a
broken stream raises :class:`~varbridge.errors.Unavailable`, as a unary call
cut off by a lost connection does: it may or may not have been applied, so
it is never sent again behind the caller's back. Writes go unary instead
(:class:`NotStreamed`) when the channel is not connected (the unary call
waits for it within its deadline), when the server has no
``WriteVariables`` (an older server; found out once per bridge), when the
stream broke before the write was sent (nothing of it reached the server),
and when the write is large.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import grpc.aio

from varbridge import _status
from varbridge.errors import VarbridgeError, error_for
from varbridge.v1 import varbridge_pb2 as pb

# The largest write sent on the stream, and the most bytes of writes in
# one message (well under the server's 8 MiB request limit).
MAX_STREAMED_WRITE_BYTES = 256 << 10
# How recent the previous write must be for a write to open a stream, and
# how long an open stream waits for a write before it closes.
IDLE_SECONDS = 2.0
MAX_MESSAGE_BYTES = 1 << 20


class NotStreamed(Exception):
    """The write did not go on the stream and nothing of it reached the server."""


class _Queued:
    __slots__ = ("ack", "req", "sent", "size")

    def __init__(
        self, req: pb.WriteRequest, size: int, ack: asyncio.Future[pb.WriteResponse]
    ) -> None:
        self.req = req
        self.size = size
        self.sent = False
        self.ack = ack


class WriteStream:
    """One open WriteVariables stream (see the module doc)."""

    def __init__(self, streams: WriteStreams, key: str | None, call: Any) -> None:
        self._streams = streams
        self._key = key
        self._call = call
        self._next_id = 0
        self._queued: list[_Queued] = []
        self._waiting: dict[int, _Queued] = {}
        self._sending = False
        self.broken = False
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        self._closing: asyncio.Task[None] | None = None
        self._idle = loop.call_later(IDLE_SECONDS, self._close_if_idle)
        self._reader = loop.create_task(self._receive())

    def _close_if_idle(self) -> None:
        """Close the stream cleanly (the server answers what was sent, then
        ends it) once no write used it for IDLE_SECONDS; else check later."""
        if self.broken:
            return
        loop = asyncio.get_running_loop()
        wait = IDLE_SECONDS - (loop.time() - self._last_used)
        if wait > 0 or self._waiting or self._queued:
            self._idle = loop.call_later(max(wait, IDLE_SECONDS / 10), self._close_if_idle)
            return
        self.broken = True  # later writes go elsewhere
        self._streams.forget(self, False)
        self._closing = loop.create_task(self._call.done_writing())

    async def write(
        self, req: pb.WriteRequest, size: int, timeout: float | None
    ) -> pb.WriteResponse:
        if self.broken:
            raise NotStreamed
        self._next_id += 1
        self._last_used = asyncio.get_running_loop().time()
        req.id = self._next_id
        q = _Queued(req, size, asyncio.get_running_loop().create_future())
        self._queued.append(q)
        self._waiting[req.id] = q
        if not self._sending:
            await self._send_queued()
        try:
            return await asyncio.wait_for(asyncio.shield(q.ack), timeout)
        except TimeoutError:
            self._waiting.pop(req.id, None)
            raise error_for(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Deadline Exceeded: the write's ack did not come in time;"
                " it may or may not have been applied",
                write=True,
            ) from None

    async def _send_queued(self) -> None:
        self._sending = True
        try:
            while self._queued and not self.broken:
                n, size = 0, 0
                while n < len(self._queued) and (
                    n == 0 or size + self._queued[n].size <= MAX_MESSAGE_BYTES
                ):
                    size += self._queued[n].size
                    n += 1
                batch, self._queued = self._queued[:n], self._queued[n:]
                for q in batch:
                    q.sent = True
                try:
                    await self._call.write(pb.WriteVariablesRequest(writes=[q.req for q in batch]))
                except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError):
                    # Nothing is sent on a stream that has ended: these
                    # writes, and the ones queued behind them, go unary.
                    for q in batch:
                        q.sent = False
                    self._break()
                    return
        finally:
            self._sending = False

    async def _receive(self) -> None:
        err: BaseException | None = None
        try:
            async for resp in self._call:
                for ack in resp.acks:
                    q = self._waiting.pop(ack.id, None)
                    if q is not None and not q.ack.done():
                        q.ack.set_result(ack)
        except grpc.aio.AioRpcError as e:
            err = e
        except asyncio.CancelledError:
            err = None
        finally:
            unimplemented = (
                isinstance(err, grpc.aio.AioRpcError)
                and err.code() == grpc.StatusCode.UNIMPLEMENTED
            )
            self._break(err, unimplemented)
            self._streams.ended(self)

    def _break(self, err: BaseException | None = None, unimplemented: bool = False) -> None:
        self.broken = True
        self._streams.forget(self, unimplemented)
        lost: VarbridgeError | None = None
        if not unimplemented:
            msg = (
                "the write stream broke before the write was acknowledged;"
                " it may or may not have been applied"
            )
            if isinstance(err, grpc.aio.AioRpcError):
                msg += ": " + (err.details() or "")
            lost = error_for(grpc.StatusCode.UNAVAILABLE, msg, write=True)
        waiting, self._waiting, self._queued = self._waiting, {}, []
        for q in waiting.values():
            if q.ack.done():
                continue
            if q.sent and lost is not None:
                q.ack.set_exception(lost)
            else:
                q.ack.set_exception(NotStreamed())
            q.ack.exception()  # retrieved here too: a writer that timed out never awaits it

    @property
    def key(self) -> str | None:
        return self._key

    async def close(self) -> None:
        self._idle.cancel()
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self._closing is not None:
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await self._closing


class WriteStreams:
    """A bridge's write streams, by token."""

    def __init__(self) -> None:
        self._by_key: dict[str | None, WriteStream] = {}
        self._live: set[WriteStream] = set()  # open or closing
        self._last_write: dict[str | None, float] = {}  # writes made without a stream
        self._unsupported = False
        self._closed = False

    def stream(
        self, channel: grpc.aio.Channel, stub: Any, token: str | None, metadata: Any
    ) -> WriteStream | None:
        if self._unsupported or self._closed:
            return None
        s = self._by_key.get(token)
        if s is not None:
            return s
        now = asyncio.get_running_loop().time()
        last = self._last_write.get(token)
        self._last_write[token] = now
        if last is None or now - last >= IDLE_SECONDS:
            return None  # a lone write
        if channel.get_state() != grpc.ChannelConnectivity.READY:
            return None  # the unary call waits for the connection, within its deadline
        s = WriteStream(self, token, stub.WriteVariables(metadata=metadata))
        self._by_key[token] = s
        self._live.add(s)
        del self._last_write[token]
        return s

    def ended(self, s: WriteStream) -> None:
        self._live.discard(s)

    def forget(self, s: WriteStream, unimplemented: bool) -> None:
        if self._by_key.get(s.key) is s:
            del self._by_key[s.key]
        if unimplemented:
            self._unsupported = True

    async def close(self) -> None:
        self._closed = True
        self._by_key = {}
        for s in list(self._live):
            await s.close()


def ack_error(e: pb.WriteStatus) -> VarbridgeError:
    """A failed ack as the exception the unary call would have raised."""
    details = _status.parse([(_status.DETAILS_KEY, e.SerializeToString())])
    code = _CODES.get(e.code, grpc.StatusCode.UNKNOWN)
    return error_for(code, e.message, write=True, status_details=details)


_CODES = {c.value[0]: c for c in grpc.StatusCode}
