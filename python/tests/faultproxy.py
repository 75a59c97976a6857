"""An asyncio loopback TCP proxy that cuts, stalls and blackholes connections.

The Python twin of Go's internal/cutproxy, for the fault suite:

* ``cut()`` aborts every live connection (both ends see it break);
* ``stall(seconds)`` pauses forwarding both ways; what is in flight waits and
  is delivered in order when the stall ends, nothing is lost;
* ``refuse = True`` closes new connections at once (a server that is down);
* ``chunk`` and ``delay`` slow the server-to-client direction (reads of at
  most ``chunk`` bytes, ``delay`` seconds apart) so that cuts land in the
  middle of a stream's messages;
* ``blackhole()`` stops forwarding both ways for good while keeping every
  socket open: each end sees a peer that vanished without closing (a machine
  that lost power, a network that dropped), which only keepalive can tell.
  A peer closing its side is not passed on either. Blackholed connections
  are held until ``close()``.

``async with FaultProxy("127.0.0.1:PORT") as proxy:`` listens on an
ephemeral loopback port (``proxy.addr``).
"""

from __future__ import annotations

import asyncio
import contextlib


class _Pair:
    def __init__(self, cw: asyncio.StreamWriter, sw: asyncio.StreamWriter) -> None:
        self.writers = (cw, sw)
        self.resume_at = 0.0  # loop time until which forwarding is paused
        self.hole = False
        self.closed = asyncio.Event()

    def abort(self) -> None:
        self.closed.set()
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def gate(self) -> bool:
        """Wait while stalled; False when closed or blackholed (drop the data)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.hole:
                await self.closed.wait()
                return False
            if self.closed.is_set():
                return False
            delay = self.resume_at - loop.time()
            if delay <= 0:
                return True
            await asyncio.sleep(delay)


class FaultProxy:
    def __init__(
        self,
        target: str,
        *,
        chunk: int = 65536,
        delay: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        thost, tport = target.rsplit(":", 1)
        self.target = (thost, int(tport))
        self.host = host
        self.chunk = chunk
        self.delay = delay
        self.cuts = 0  # cut() calls that cut at least one connection
        self.stalls = 0  # connections stalled (once per stall() each)
        self.blackholes = 0  # connections blackholed
        self.accepted = 0
        self.refuse = False
        self._server: asyncio.base_events.Server | None = None
        self._live: set[_Pair] = set()
        self._held: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def addr(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self.host}:{port}"

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def held(self) -> int:
        return len(self._held)

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for p in list(self._live) + list(self._held):
            p.abort()
        self._live.clear()
        self._held.clear()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Abort every live connection; returns how many."""
        live, self._live = self._live, set()
        for p in live:
            p.abort()
        if live:
            self.cuts += 1
        return len(live)

    def stall(self, seconds: float) -> int:
        """Pause forwarding on every live connection for ``seconds``."""
        until = asyncio.get_running_loop().time() + seconds
        for p in self._live:
            p.resume_at = max(p.resume_at, until)
        self.stalls += len(self._live)
        return len(self._live)

    def blackhole(self) -> int:
        """Forward nothing more on every live connection, keeping it open."""
        live, self._live = self._live, set()
        for p in live:
            p.hole = True
            self._held.add(p)
        self.blackholes += len(live)
        return len(live)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            cw.transport.abort()
            return
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        pair = _Pair(cw, sw)
        self._live.add(pair)
        up = asyncio.create_task(self._pipe(pair, cr, sw, self.chunk, 0.0))
        down = asyncio.create_task(self._pipe(pair, sr, cw, self.chunk, self.delay))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        pair.abort()
        self._live.discard(pair)
        self._held.discard(pair)

    @staticmethod
    async def _pipe(
        pair: _Pair,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        chunk: int,
        delay: float,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(chunk)
                if not data:
                    break
                if not await pair.gate():
                    return
                writer.write(data)
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
        if pair.hole:  # a peer closing is not passed through a blackhole
            await pair.closed.wait()
