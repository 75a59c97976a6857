"""Writes on the WriteVariables stream, against the real Go server."""

from __future__ import annotations

import asyncio

import pytest

import varbridge
from varbridge import _writes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _stream_of(bridge: varbridge.Bridge) -> _writes.WriteStream | None:
    return bridge._writes._by_key.get(bridge.token)


async def test_concurrent_writes_share_the_stream(session: varbridge.SessionContext) -> None:
    """Many writers of one bridge: every write acknowledged with its own
    result, on one stream, in each writer's order."""
    names = [f"w{i}" for i in range(16)]
    for n in names:
        await session.register_variable(n, "integer", 0)
    await session.register_variable("n", "integer", 0)

    async def writer(name: str) -> None:
        for i in range(50):
            v = await session.set_variable(name, i + 1)
            assert v.value == i + 1
            assert v.version == i + 2
            r = await session.set_variables({"n": i * 100 + int(name[1:]) + 1})
            assert r.revision > 0

    await asyncio.gather(*(writer(n) for n in names))
    assert _stream_of(session.bridge) is not None
    n = await session.get_variable("n")
    assert n.version == 16 * 50 + 1


async def test_stream_errors_are_the_unary_ones(session: varbridge.SessionContext) -> None:
    await session.register_variable("x", "integer", 0, constraints={"max": 10})
    await session.set_variable("x", 1)  # a lone write goes unary
    assert _stream_of(session.bridge) is None
    await session.set_variable("x", 2)  # the next one opens the stream
    assert _stream_of(session.bridge) is not None
    with pytest.raises(varbridge.VersionConflict) as vc:
        await session.set_variable("x", 3, expected_version=1)
    assert vc.value.expected_version == 1
    assert vc.value.actual_version == 3
    with pytest.raises(varbridge.ConstraintViolation) as ce:
        await session.set_variable("x", 11)
    assert "max" in str(ce.value)
    with pytest.raises(varbridge.VariableNotFound):
        await session.set_variables({"x": 3, "nope": 1})
    assert (await session.set_variable("x", 4)).value == 4


async def test_bridge_close_ends_the_stream(addr: str, session_id: str) -> None:
    async with varbridge.connect(addr) as bridge:
        s = await bridge.session(session_id)
        await s.register_variable("x", "integer", 0)
        await s.set_variable("x", 1)
        await s.set_variable("x", 2)
        stream = _stream_of(bridge)
        assert stream is not None
        await s.cleanup()
    assert stream.broken


async def test_idle_stream_closes(session: varbridge.SessionContext) -> None:
    """An idle write stream closes itself cleanly; writes go on after."""
    await session.register_variable("x", "integer", 0)
    await session.set_variable("x", 1)
    await session.set_variable("x", 2)
    stream = _stream_of(session.bridge)
    assert stream is not None
    for _ in range(200):
        if _stream_of(session.bridge) is None and stream not in session.bridge._writes._live:
            break
        await asyncio.sleep(0.05)
    assert _stream_of(session.bridge) is None
    assert stream not in session.bridge._writes._live
    assert (await session.set_variable("x", 3)).value == 3
