"""An asyncio loopback TCP proxy that can cut its connections on demand.

``async with CutProxy("127.0.0.1:PORT") as proxy:`` listens on an ephemeral
loopback port (``proxy.addr``) and forwards every connection to the target.
``proxy.cut()`` aborts every live connection (both sides see a reset);
``proxy.refuse = True`` makes it close new connections at once, as a server
that is down would. ``chunk`` and ``delay`` slow the server-to-client
direction so that cuts land in the middle of a stream's messages.
"""

from __future__ import annotations

import asyncio
import contextlib


class CutProxy:
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
        self.refuse = False
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def addr(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self.host}:{port}"

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        return self

    async def __aenter__(self) -> CutProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Abort every live connection; returns how many were cut."""
        n = 0
        for cw, sw in list(self._live):
            for w in (cw, sw):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            n += 1
        self._live.clear()
        if n:
            self.cuts += 1
        return n

    @property
    def live(self) -> int:
        return len(self._live)

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        if self.refuse:
            cw.transport.abort()
            return
        try:
            sr, sw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self.connections += 1
        pair = (cw, sw)
        self._live.add(pair)
        up = asyncio.create_task(self._pipe(cr, sw, self.chunk, 0.0))
        down = asyncio.create_task(self._pipe(sr, cw, self.chunk, self.delay))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        for w in (cw, sw):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._live.discard(pair)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int, delay: float
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(chunk)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if delay:
                    await asyncio.sleep(delay)
