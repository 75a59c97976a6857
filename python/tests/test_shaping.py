"""Seed parity (issue 10): watch_variables(debounce=..., batch_window=...) as
Go's variables.Watch has them, and include_initial off by default.

* debounce is per variable and trailing-edge: a burst comes out as one
  update with the old value from before it and the last value, once the
  variable has been quiet for the debounce time; the last value is always
  delivered, also when the watch is closed or ends with an error;
* batch_window yields lists: the updates that arrive during the window that
  opens with the first one;
* the sync facade has both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import varbridge
import varbridge.sync

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def wait_until(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if pred() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


async def test_include_initial_is_off_by_default(session: varbridge.SessionContext) -> None:
    await session.register_variable("v", "integer", 1)
    w = await session.watch_variables(["v"]).start()
    await session.set_variable("v", 2)
    u = await asyncio.wait_for(w.__anext__(), 10)
    assert (u.initial, u.value, u.old_value) == (False, 2, 1)
    await w.aclose()


async def test_debounce_delivers_the_last_value_of_a_burst(
    session: varbridge.SessionContext,
) -> None:
    await session.register_variable("a", "integer", 0)
    await session.register_variable("b", "integer", 0)
    async with session.watch_variables(["a", "b"], debounce=0.3) as w:
        await w.start()
        t0 = time.monotonic()
        for i in range(1, 11):
            await session.set_variable("a", i)
            if i % 2 == 0:
                await session.set_variable("b", -i)
        burst_end = time.monotonic()
        first = await asyncio.wait_for(w.__anext__(), 10)
        second = await asyncio.wait_for(w.__anext__(), 10)
        quiet = time.monotonic()
        # One update per variable, in order of their first change; the old
        # value from before the burst, the last value.
        assert [(u.variable_name, u.old_value, u.value) for u in (first, second)] == [
            ("a", 0, 10),
            ("b", 0, -10),
        ]
        assert quiet - burst_end >= 0.25
        assert w.received == 15
        # Then a lone change comes out alone, after the quiet time.
        await session.set_variable("a", 11)
        u = await asyncio.wait_for(w.__anext__(), 10)
        assert (u.variable_name, u.old_value, u.value) == ("a", 10, 11)
        assert time.monotonic() - t0 >= 0.6


async def test_debounce_delivers_what_it_holds_when_closed(
    session: varbridge.SessionContext,
) -> None:
    await session.register_variable("v", "integer", 0)
    w = await session.watch_variables(["v"], debounce=30).start()
    reader = asyncio.ensure_future(w.__anext__())
    await session.set_variable("v", 1)
    await session.set_variable("v", 2)
    await wait_until(lambda: w.received >= 2)
    assert not reader.done()  # held: 30 s of quiet not reached
    await w.aclose()
    u = await asyncio.wait_for(reader, 10)
    assert (u.old_value, u.value) == (0, 2)
    with pytest.raises(StopAsyncIteration):
        await w.__anext__()


async def test_debounce_delivers_what_it_holds_before_the_error(
    bridge: varbridge.Bridge, session: varbridge.SessionContext
) -> None:
    await session.register_variable("v", "integer", 0)
    w = await session.watch_variables(["v"], debounce=30).start()
    reader = asyncio.ensure_future(w.__anext__())
    await session.set_variable("v", 5)
    await wait_until(lambda: w.received >= 1)
    await (await bridge.session(session.session_id)).cleanup()
    u = await asyncio.wait_for(reader, 10)
    assert u.value == 5
    with pytest.raises(varbridge.SessionClosed):
        await asyncio.wait_for(w.__anext__(), 10)


async def test_batch_window_yields_lists(session: varbridge.SessionContext) -> None:
    await session.register_variable("v", "integer", 0)
    async with session.watch_variables(["v"], batch_window=1.0) as bw:
        assert isinstance(bw, varbridge.BatchWatch)
        await bw.start()
        t0 = time.monotonic()
        for i in range(1, 6):
            await session.set_variable("v", i)
        written = time.monotonic() - t0
        batch = await asyncio.wait_for(bw.__anext__(), 10)
        took = time.monotonic() - t0
        assert [u.value for u in batch] == [1, 2, 3, 4, 5], f"5 writes took {written:.2f}s"
        assert took >= 0.9  # the window that opened with the first update
        await session.set_variable("v", 6)
        batch = await asyncio.wait_for(bw.__anext__(), 10)
        assert [u.value for u in batch] == [6]
        assert bw.watch.received == 6


async def test_debounce_and_batch_window_together(session: varbridge.SessionContext) -> None:
    await session.register_variable("a", "integer", 0)
    await session.register_variable("b", "integer", 0)
    async with session.watch_variables(["a", "b"], debounce=0.2, batch_window=0.5) as bw:
        await bw.start()
        for i in range(1, 4):
            await session.set_variables({"a": i, "b": 10 * i})
        batch = await asyncio.wait_for(bw.__anext__(), 10)
        assert [(u.variable_name, u.old_value, u.value) for u in batch] == [
            ("a", 0, 3),
            ("b", 0, 30),
        ]


def test_sync_facade_debounce_and_batches(addr: str, session_id: str) -> None:
    with varbridge.sync.connect(addr) as bridge, bridge.session(session_id, cleanup=True) as s:
        s.register_variable("v", "integer", 0)
        with s.watch_variables(["v"], debounce=0.2) as w:
            w.start()
            for i in range(1, 4):
                s.set_variable("v", i)
            u = w.next(timeout=10)
            assert (u.old_value, u.value) == (0, 3)
        with s.watch_variables(["v"], batch_window=0.5) as bw:
            bw.start()
            s.set_variable("v", 4)
            s.set_variable("v", 5)
            batch = bw.next(timeout=10)
            assert [u.value for u in batch] == [4, 5]
    with varbridge.sync.connect(addr) as bridge, pytest.raises(varbridge.SessionNotFound):
        bridge.get_session(session_id)
