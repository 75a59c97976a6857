"""Issue 10 item 1: no silent loss when a server restarts without its data.

A watcher follows session ``r`` up to revision 22; the server (in-memory) is
SIGKILLed and started again on the same port; a writer creates ``r`` again
(a new incarnation) and writes n=0..5. The watcher resumes with its old
revision and incarnation and must get the current value as RESYNC, then the
changes after it: never nothing, never a silent skip.

Also: a fresh watch whose start_revision is beyond the session's revision + 1
fails with the typed RevisionOutOfRange, and a fresh watch that names a stale
incarnation starts with RESYNC.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import varbridge

from .conftest import Server, free_port
from .faultproxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def memory_flags(binary: Path) -> list[str]:
    """``--memory`` when the server has the flag (an in-memory store is the
    point here: a restart loses the session); older servers are in-memory only."""
    out = subprocess.run(
        [str(binary), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return ["--memory"] if "--memory" in out.stdout + out.stderr else []


def sigkill(srv: Server) -> None:
    srv.proc.kill()
    srv.proc.wait(10)


async def restart(start_server: Callable[..., Server], flags: list[str], port: int) -> Server:
    # start_server blocks until the server answers: keep the loop running.
    return await asyncio.to_thread(start_server, *flags, port=port)


async def write_history(s: varbridge.SessionContext) -> int:
    """Variable n (registered at revision 1) written up to revision 22."""
    last = None
    for i in range(1, 22):
        last = await s.set_variable("n", i)
    assert last is not None
    return last.revision


async def recreate_and_write(addr: str, session_id: str) -> varbridge.SessionContext:
    """What the issue's writer does after the restart: r again, n=0..5."""
    bridge = varbridge.connect(addr)
    s = await bridge.session(session_id)
    assert s.created, "the restarted server still had the session: not an in-memory store"
    await s.register_variable("n", "integer", 0)
    for i in range(1, 6):
        await s.set_variable("n", i)
    return s


async def consume(w: varbridge.Watch, into: asyncio.Queue[object]) -> None:
    try:
        async for u in w:
            await into.put(u)
    except Exception as e:
        await into.put(e)


async def wait_until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if pred() or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.01)


async def next_update(q: asyncio.Queue[object], timeout: float = 20) -> varbridge.VariableUpdate:
    item = await asyncio.wait_for(q.get(), timeout)
    if isinstance(item, BaseException):
        raise item
    assert isinstance(item, varbridge.VariableUpdate)
    return item


async def test_restart_without_data_resyncs_through_proxy(
    start_server: Callable[..., Server], varbridge_bin: Path
) -> None:
    """Deterministic: the watcher's path is refused until the writer is done."""
    flags = memory_flags(varbridge_bin)
    port = free_port()
    srv = start_server(*flags, port=port)
    q: asyncio.Queue[object] = asyncio.Queue()
    async with FaultProxy(srv.addr) as proxy, varbridge.connect(proxy.addr) as wbridge:
        ws = await wbridge.session("r")
        await ws.register_variable("n", "integer", 0)
        w = ws.watch_variables(["n"], backoff_base=0.2, backoff_cap=1.0)
        await w.start()
        old_incarnation = w.incarnation
        task = asyncio.create_task(consume(w, q))
        try:
            assert await write_history(ws) == 22
            got = [await next_update(q) for _ in range(21)]
            assert [u.value for u in got] == list(range(1, 22))
            assert w.last_revision == 22
            if old_incarnation:  # a server with incarnations said which
                assert old_incarnation == ws.incarnation

            proxy.refuse = True
            sigkill(srv)
            proxy.cut()
            srv = await restart(start_server, flags, port)
            writer = await recreate_and_write(srv.addr, "r")
            new_incarnation = writer.incarnation
            assert new_incarnation
            assert new_incarnation != old_incarnation
            proxy.refuse = False

            # The current value, flagged: the watcher knows its history broke.
            u = await next_update(q)
            assert (u.update_type, u.resync, u.value, u.revision) == ("resync", True, 5, 6)
            assert u.last_in_revision
            assert w.incarnation == new_incarnation
            assert w.incarnation_changes == 1
            # ... and then every change after it.
            await writer.set_variable("n", 6)
            u = await next_update(q)
            assert (u.update_type, u.value, u.revision) == ("value_change", 6, 7)
            await writer.bridge.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    srv.stop()


async def test_restart_without_data_resyncs_direct(
    start_server: Callable[..., Server], varbridge_bin: Path
) -> None:
    """The issue's scenario with nothing in between: the watcher reconnects to
    the restarted server by its own schedule after the writer re-created r."""
    flags = memory_flags(varbridge_bin)
    port = free_port()
    srv = start_server(*flags, port=port)
    q: asyncio.Queue[object] = asyncio.Queue()
    async with varbridge.connect(srv.addr) as wbridge:
        ws = await wbridge.session("r")
        await ws.register_variable("n", "integer", 0)
        # backoff_base 2 s: the second attempt after the break comes about 2 s
        # after the first, time enough to restart and re-create r first.
        w = ws.watch_variables(["n"], backoff_base=2.0)
        await w.start()
        task = asyncio.create_task(consume(w, q))
        try:
            await write_history(ws)
            got = [await next_update(q) for _ in range(21)]
            assert got[-1].revision == 22
            attempts = w.attempts
            sigkill(srv)
            # The first attempt after the break fails on the dead server.
            await wait_until(lambda: w.attempts > attempts)
            srv = await restart(start_server, flags, port)
            writer = await recreate_and_write(srv.addr, "r")
            u = await next_update(q)
            assert (u.resync, u.value, u.revision) == (True, 5, 6)
            await writer.set_variable("n", 6)
            u = await next_update(q)
            assert (u.resync, u.value, u.revision) == (False, 6, 7)
            assert w.incarnation == writer.incarnation
            await writer.bridge.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    srv.stop()


async def test_start_revision_ahead_of_session_is_out_of_range(
    session: varbridge.SessionContext,
) -> None:
    await session.register_variable("v", "integer", 0)
    info = await session.get_info()
    ahead = info.revision + 5
    for inc in (None, info.incarnation):  # unknown, or this very incarnation
        w = session.watch_variables(["v"], start_revision=ahead, incarnation=inc)
        with pytest.raises(varbridge.RevisionOutOfRange) as ei:
            await asyncio.wait_for(w.__anext__(), 10)
        e = ei.value
        assert e.reason == "REVISION_OUT_OF_RANGE"
        assert (e.start_revision, e.session_revision) == (ahead, info.revision)
        assert e.incarnation == info.incarnation
        assert w.closed
    # revision + 1 is the next change: fine.
    w = session.watch_variables(["v"], start_revision=info.revision + 1)
    await w.start()
    await session.set_variable("v", 1)
    u = await asyncio.wait_for(w.__anext__(), 10)
    assert (u.value, u.revision) == (1, info.revision + 1)
    await w.aclose()


async def test_stale_incarnation_starts_with_resync(session: varbridge.SessionContext) -> None:
    await session.register_variable("a", "integer", 1)
    await session.register_variable("b", "string", "x")
    await session.set_variable("a", 2)
    info = await session.get_info()
    w = session.watch_variables(["a", "b"], start_revision=50, incarnation="0123456789abcdef")
    got = [await asyncio.wait_for(w.__anext__(), 10) for _ in range(2)]
    assert sorted((u.variable_name, u.value, u.resync) for u in got) == [
        ("a", 2, True),
        ("b", "x", True),
    ]
    assert {u.revision for u in got} == {info.revision}
    assert w.incarnation == info.incarnation
    await session.set_variable("b", "y")
    u = await asyncio.wait_for(w.__anext__(), 10)
    assert (u.variable_name, u.value, u.resync) == ("b", "y", False)
    await w.aclose()
