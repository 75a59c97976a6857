"""Issue 10 item 5: the members of an atomic SetVariables reach a watcher
ordered by variable name, whoever wrote them (Python, or the Go CLI).

Twelve variables registered in scrambled order and written in another
scrambled order: map order on the server (Go's is random per iteration) would
put them in name order about once in 479 million tries.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import varbridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NAMES = [
    "kappa",
    "alpha",
    "lambda",
    "delta",
    "zeta",
    "beta",
    "iota",
    "gamma",
    "theta",
    "epsilon",
    "mu",
    "eta",
]


async def register(session: varbridge.SessionContext) -> None:
    for name in NAMES:
        await session.register_variable(name, "integer", 0)


async def collect(w: varbridge.Watch, n: int) -> list[varbridge.VariableUpdate]:
    return [await asyncio.wait_for(w.__anext__(), 10) for _ in range(n)]


def assert_one_ordered_batch(got: list[varbridge.VariableUpdate], revision: int) -> None:
    assert {u.revision for u in got} == {revision}
    assert [u.variable_name for u in got] == sorted(NAMES)
    assert [u.last_in_revision for u in got] == [False] * (len(NAMES) - 1) + [True]


async def test_python_batch_arrives_in_name_order(session: varbridge.SessionContext) -> None:
    await register(session)
    for batched in (True, False):  # WatchVariableBatches and WatchVariables
        w = await session.watch_variables(NAMES, batched=batched).start()
        writes = {name: i + 1 + (100 if batched else 0) for i, name in enumerate(reversed(NAMES))}
        res = await session.set_variables(writes)
        got = await collect(w, len(NAMES))
        assert_one_ordered_batch(got, res.revision)
        assert {u.variable_name: u.value for u in got} == writes
        await w.aclose()


async def test_go_cli_batch_arrives_in_name_order(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    await register(session)
    w = await session.watch_variables(NAMES).start()
    pairs = [f"{name}={7 * (i + 1)}" for i, name in enumerate(NAMES)]
    proc = await asyncio.create_subprocess_exec(
        str(varbridge_bin),
        "set",
        "--addr",
        addr,
        "--session",
        session.session_id,
        "--batch",
        *pairs,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    got = await collect(w, len(NAMES))
    info = await session.get_info()
    assert_one_ordered_batch(got, info.revision)
    assert {u.variable_name: u.value for u in got} == {
        name: 7 * (i + 1) for i, name in enumerate(NAMES)
    }
    await w.aclose()
