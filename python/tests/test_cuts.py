"""Watches through a proxy that cuts the connection: nothing lost, repeated or
reordered, and no memory growth over many reconnects (grpc#38499)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import tracemalloc
from collections.abc import AsyncIterator

import pytest

import varbridge

from .conftest import first_addr
from .faultproxy import FaultProxy

pytestmark = [pytest.mark.integration]

log = logging.getLogger(__name__)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
async def proxy(addr: str) -> AsyncIterator[FaultProxy]:
    # In cluster mode in front of the first server: the watches through it
    # see the writes the session makes through both.
    async with FaultProxy(first_addr(addr)) as p:
        yield p


@pytest.mark.timeout(180)
@pytest.mark.parametrize("batched", [True, False], ids=["batches", "single"])
async def test_watch_survives_repeated_cuts(
    session: varbridge.SessionContext, proxy: FaultProxy, batched: bool
) -> None:
    names = [f"v{i}" for i in range(10)]
    for n in names:
        await session.register_variable(n, "int", 0)
    # Slow the server-to-client direction a little so that cuts land inside
    # atomic batches as well as between them.
    proxy.chunk, proxy.delay = 700, 0.0002
    rng = random.Random(1234)
    expected: list[tuple[int, str, int]] = []
    counter = 0
    target = 2500
    writer_done = asyncio.Event()

    async def writer() -> None:
        nonlocal counter
        while len(expected) < target or proxy.cuts < 15:
            if rng.random() < 0.3:
                batch = {}
                for n in rng.sample(names, rng.randint(3, 8)):
                    counter += 1
                    batch[n] = counter
                res = await session.set_variables(batch)
                assert sorted(res.changed) == sorted(batch)
                expected.extend((res.revision, n, v) for n, v in batch.items())
            else:
                counter += 1
                n = rng.choice(names)
                v = await session.set_variable(n, counter)
                expected.append((v.revision, n, counter))
            if len(expected) % 50 == 0:
                await asyncio.sleep(0)  # let the consumer and cutter run
        writer_done.set()

    async def cutter() -> None:
        while not writer_done.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.08))
            proxy.cut()

    received: list[varbridge.VariableUpdate] = []
    initial: dict[str, int] = {}
    have_initial = asyncio.Event()
    async with varbridge.connect(proxy.addr) as pbridge:
        psession = await pbridge.session(session.session_id)
        watch = psession.watch_variables(
            names,
            include_initial=True,
            backoff_base=0.01,
            backoff_cap=0.1,
            max_retries=100,
            batched=batched,
        )

        async def consumer() -> None:
            async for u in watch:
                if u.initial:
                    initial[u.variable_name] = u.value
                    if len(initial) == len(names):
                        have_initial.set()
                    continue
                received.append(u)
                if u.variable_name == "v0" and u.value == -1:
                    return  # the sentinel written after everything else

        async with watch:
            # Wait for the initial values, then write and cut.
            consume = asyncio.create_task(consumer())
            await asyncio.wait_for(have_initial.wait(), 30)
            tasks = [asyncio.create_task(writer()), asyncio.create_task(cutter())]
            await asyncio.gather(*tasks)
            # A sentinel after everything: the consumer stops when it sees it,
            # so whatever came before it is all the watch delivered.
            sentinel = await session.set_variable("v0", -1)
            await asyncio.wait_for(consume, 60)
            last_update = received.pop()
            assert (last_update.revision, last_update.value) == (sentinel.revision, -1)

        log.info(
            "cuts=%d reconnects=%d mid_group_resumes=%d duplicates_skipped=%d updates=%d",
            proxy.cuts,
            watch.reconnects,
            watch.mid_group_resumes,
            watch.duplicates_skipped,
            len(received),
        )

    assert initial == dict.fromkeys(names, 0)
    assert len(received) >= 2000
    got = [(u.revision, u.variable_name, u.value) for u in received]
    revs = [g[0] for g in got]
    assert revs == sorted(revs), "updates out of revision order"
    assert len(got) == len(expected)
    assert sorted(got) == sorted(expected), "lost or repeated updates"
    # old values chain per variable: nothing skipped in between
    last = dict.fromkeys(names, 0)
    for u in received:
        assert u.old_value == last[u.variable_name]
        last[u.variable_name] = u.value
    # batches arrive whole and in one piece
    by_rev: dict[int, list[str]] = {}
    for r, n, _ in got:
        by_rev.setdefault(r, []).append(n)
    exp_rev: dict[int, list[str]] = {}
    for r, n, _ in expected:
        exp_rev.setdefault(r, []).append(n)
    assert {r: sorted(v) for r, v in by_rev.items()} == {r: sorted(v) for r, v in exp_rev.items()}
    assert proxy.cuts >= 10
    assert watch.reconnects >= 10


@pytest.mark.timeout(180)
async def test_batched_watch_cut_inside_large_revisions(
    session: varbridge.SessionContext, proxy: FaultProxy
) -> None:
    """Revisions larger than one batch message (1 MiB) span several messages:
    cuts between them resume inside the revision."""
    names = [f"s{i:02d}" for i in range(24)]
    for n in names:
        await session.register_variable(n, "string", "")
    proxy.chunk, proxy.delay = 16384, 0.0005
    # 24 x 48 KiB: 1.15 MiB per revision, two batch messages each; 16 rounds
    # stay well inside the server's default history (64 MiB per session).
    rounds = 16
    size = 48 * 1024
    info = await session.get_info()
    expected: list[tuple[int, str, str]] = []
    for r in range(rounds):
        batch = {n: f"{r}:{n}:" + chr(0x41 + r % 26) * size for n in names}
        res = await session.set_variables(batch)
        expected.extend((res.revision, n, v) for n, v in batch.items())
    got: list[tuple[int, str, str]] = []
    async with varbridge.connect(proxy.addr) as pbridge:
        psession = await pbridge.session(session.session_id)
        watch = psession.watch_variables(
            names,
            start_revision=info.revision + 1,
            backoff_base=0.01,
            backoff_cap=0.05,
            max_retries=100,
        )

        async def cutter() -> None:
            # Cut at random, but only after new updates came out since the last cut
            # (a resume inside a revision receives that revision again).
            rng = random.Random(7)
            seen = 0
            while True:
                await asyncio.sleep(rng.uniform(0.005, 0.05))
                if watch.yielded > seen:
                    seen = watch.yielded
                    proxy.cut()

        cut_task = asyncio.create_task(cutter())
        try:
            async with watch:
                async for u in watch:
                    assert not u.resync
                    got.append((u.revision, u.variable_name, u.value))
                    if len(got) == len(expected):
                        break
        finally:
            cut_task.cancel()
        log.info(
            "large revisions: cuts=%d reconnects=%d mid_group_resumes=%d duplicates_skipped=%d",
            proxy.cuts,
            watch.reconnects,
            watch.mid_group_resumes,
            watch.duplicates_skipped,
        )
    revs = [g[0] for g in got]
    assert revs == sorted(revs)
    assert sorted(got) == sorted(expected)
    assert watch.reconnects >= 3


async def _watch_next(watch: varbridge.Watch, timeout: float = 30) -> varbridge.VariableUpdate:
    return await asyncio.wait_for(watch.__anext__(), timeout)


@pytest.mark.timeout(300)
async def test_reconnect_loop_memory_is_bounded(
    session: varbridge.SessionContext, proxy: FaultProxy
) -> None:
    """Many cut-and-resume cycles, then many failed attempts while the
    server is unreachable: neither Python objects nor RSS keep growing."""
    # Log records kept by pytest's capture would look like growth.
    logging.getLogger("varbridge").setLevel(logging.WARNING)
    try:
        await _memory_scenario(session, proxy)
    finally:
        logging.getLogger("varbridge").setLevel(logging.NOTSET)


async def _memory_scenario(session: varbridge.SessionContext, proxy: FaultProxy) -> None:
    reg = await session.register_variable("v", "int", 0)
    async with varbridge.connect(proxy.addr) as pbridge:
        psession = await pbridge.session(session.session_id)
        watch = psession.watch_variables(
            ["v"],
            start_revision=reg.revision + 1,
            backoff_base=0.002,
            backoff_cap=0.01,
            max_retries=1_000_000,
        )
        async with watch:
            value = 0

            async def cycle() -> None:
                nonlocal value
                value += 1
                await session.set_variable("v", value)
                u = await _watch_next(watch)
                assert u.value == value
                proxy.cut()

            for _ in range(60):  # warm up
                await cycle()
            gc.collect()
            tracemalloc.start(1)
            snap0 = tracemalloc.take_snapshot()
            rss0 = rss_bytes()
            n_cycles = 400
            for _ in range(n_cycles):
                await cycle()
            gc.collect()
            snap1 = tracemalloc.take_snapshot()
            rss1 = rss_bytes()
            py_growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
            top = snap1.compare_to(snap0, "lineno")[:5]
            log.info("cut cycles: py growth %d B, rss growth %d B", py_growth, rss1 - rss0)
            for s in top:
                log.info("  %s", s)
            assert watch.reconnects >= n_cycles
            # A leak of a call object per reconnect would be many KB each.
            assert py_growth < 256 * 1024, [str(s) for s in top]
            assert rss1 - rss0 < 24 * 1024 * 1024

            # Server unreachable: every attempt fails (grpc#38499's case).
            proxy.refuse = True
            proxy.cut()
            start_attempts = watch.attempts
            pending = asyncio.ensure_future(watch.__anext__())
            deadline = asyncio.get_running_loop().time() + 150
            while watch.attempts - start_attempts < 50:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            gc.collect()
            snap2 = tracemalloc.take_snapshot()
            rss2 = rss_bytes()
            mid = watch.attempts
            while watch.attempts - mid < 500:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            gc.collect()
            snap3 = tracemalloc.take_snapshot()
            rss3 = rss_bytes()
            failed = watch.attempts - mid
            py_growth = sum(s.size_diff for s in snap3.compare_to(snap2, "filename"))
            top = snap3.compare_to(snap2, "lineno")[:5]
            log.info(
                "%d failed attempts: py growth %d B, rss growth %d B",
                failed,
                py_growth,
                rss3 - rss2,
            )
            assert py_growth < 256 * 1024, [str(s) for s in top]
            assert rss3 - rss2 < 24 * 1024 * 1024
            tracemalloc.stop()

            # And it comes back, resuming where it was.
            proxy.refuse = False
            await session.set_variable("v", value + 1)
            u = await asyncio.wait_for(pending, 60)
            assert u.value == value + 1
