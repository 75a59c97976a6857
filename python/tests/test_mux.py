"""Issue 15: a bridge's watches share one ``Watch`` stream (per token); each
keeps its own resume point, and a watch the server ends raises the error a
watch on its own stream would."""

from __future__ import annotations

import asyncio

import pytest

import varbridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_watches_share_one_stream(session: varbridge.SessionContext) -> None:
    names = [f"v{i}" for i in range(20)]
    for n in names:
        await session.register_variable(n, "integer", 0)
    watches = [await session.watch_variables([n]).start() for n in names]
    bridge = session.bridge
    assert len(bridge._muxes) == 1
    (stream,) = bridge._muxes.values()
    assert len(stream._subs) == len(names)
    for i, n in enumerate(names):
        await session.set_variable(n, i + 100)
    for i, w in enumerate(watches):
        u = await asyncio.wait_for(w.__anext__(), 10)
        assert (u.variable_name, u.value) == (names[i], i + 100)
    # A watch on its own stream sits beside them.
    own = await session.watch_variables(["v0"], own_stream=True).start()
    assert len(stream._subs) == len(names)
    await session.set_variable("v0", 7)
    assert (await asyncio.wait_for(own.__anext__(), 10)).value == 7
    assert (await asyncio.wait_for(watches[0].__anext__(), 10)).value == 7
    await own.aclose()
    for w in watches[:10]:
        await w.aclose()
    assert len(stream._subs) == 10
    await session.set_variable("v15", 1)
    assert (await asyncio.wait_for(watches[15].__anext__(), 10)).value == 1
    for w in watches[10:]:
        await w.aclose()
    assert not bridge._muxes  # the stream closed with its last watch


async def test_watch_ended_by_the_server_raises(session: varbridge.SessionContext) -> None:
    await session.register_variable("x", "integer", 0)
    for own in (False, True):  # the same error either way, raised by the first read
        bad = await session.watch_variables(["x", "nope"], own_stream=own).start()
        with pytest.raises(varbridge.VariableNotFound) as e:
            await asyncio.wait_for(bad.__anext__(), 10)
        assert "nope" in str(e.value)
    w = await session.watch_variables(["x"]).start()
    await session.cleanup()
    with pytest.raises(varbridge.SessionNotFound):
        await asyncio.wait_for(w.__anext__(), 10)


async def test_unread_watch_does_not_hold_up_its_stream(session: varbridge.SessionContext) -> None:
    """A watch nobody reads does not hold up the other watches of its shared
    stream (etcd#17529): they get every write meanwhile, and the unread one,
    left behind, reopens from its revision when it is read: every write
    once, in order."""
    await session.register_variable("x", "integer", 0)
    idle = await session.watch_variables(["x"]).start()
    busy = await session.watch_variables(["x"]).start()
    assert len(session.bridge._muxes) == 1
    writes = 200  # far more responses than one watch's queue holds
    for i in range(1, writes + 1):
        await session.set_variable("x", i)
    for i in range(1, writes + 1):
        u = await asyncio.wait_for(busy.__anext__(), 10)
        assert u.value == i
    got = [(await asyncio.wait_for(idle.__anext__(), 10)).value for _ in range(writes)]
    assert got == list(range(1, writes + 1))
    assert idle.failovers == 0
    await session.set_variable("x", writes + 1)
    assert (await asyncio.wait_for(idle.__anext__(), 10)).value == writes + 1
    await idle.aclose()
    await busy.aclose()
