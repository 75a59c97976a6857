"""The fault suite for the Python client (issue 6, item 1).

A proxy cuts, stalls and blackholes the watchers' connection at random every
100-500 ms while writers on a direct connection commit single sets and
SetVariables batches; two ``watch_variables`` loops (WatchVariableBatches
naming every variable, WatchVariables on the whole session) must each see
every committed revision exactly once, in order, batches whole. A blackhole
must be found by the server's keepalive (observers gone within its time +
timeout) and by the client's (the watches come back). A server restart
(in-memory store) must end a watch with ``SessionNotFound``, not a hang.

Sizes: VARBRIDGE_CHAOS_UPDATES (default 10,000; ``make chaos``: 100,000) and
VARBRIDGE_CHAOS_BLACKHOLES (default 1; each costs the client keepalive,
~11 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import varbridge

from .conftest import Server, free_port
from .faultproxy import FaultProxy

pytestmark = [pytest.mark.integration]

UPDATES = int(os.environ.get("VARBRIDGE_CHAOS_UPDATES", "10000"))
BLACKHOLES = int(os.environ.get("VARBRIDGE_CHAOS_BLACKHOLES", "1"))

# The server pings a silent client after 1 s and drops it 0.5 s later.
SERVER_KA = ("--keepalive-time", "1s", "--keepalive-timeout", "500ms")
SERVER_KA_S = 1.5
# Clients ping every 10 s, the most often the server permits, and give up
# on a ping unanswered for 1 s. With grpcio 1.85 the wait for a keepalive
# ping's answer is grpc.http2.ping_timeout_ms (default 1 min), not
# grpc.keepalive_timeout_ms: with only the latter, a blackholed watch was not
# noticed within a minute.
CLIENT_KA_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 1_000,
    "grpc.http2.ping_timeout_ms": 1_000,
}
CLIENT_KA_S = 11.0


@dataclass
class Commits:
    by_rev: dict[int, list[str]] = field(default_factory=dict)
    updates: int = 0
    batches: int = 0
    last: int = 0

    def add(self, rev: int, ids: list[str]) -> None:
        assert rev not in self.by_rev, f"two writes at revision {rev}"
        self.by_rev[rev] = ids
        self.updates += len(ids)
        self.batches += len(ids) > 1
        self.last = max(self.last, rev)


@dataclass
class Tally:
    updates: int = 0
    revisions: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    split: int = 0
    extra: int = 0
    resyncs: int = 0

    def clean(self) -> bool:
        return not (
            self.lost + self.duplicated + self.out_of_order + self.split + self.extra + self.resyncs
        )


def check_exactly_once(want: dict[int, list[str]], got: list[tuple[int, str, bool]]) -> Tally:
    """Every (revision, variable id) once, revisions ascending, members of a
    revision consecutive."""
    expected = {(rev, vid) for rev, ids in want.items() for vid in ids}
    t = Tally(updates=len(expected), revisions=len(want))
    seen: set[tuple[int, str]] = set()
    done_revs: set[int] = set()
    cur = 0
    for rev, vid, resync in got:
        if resync:
            t.resyncs += 1
            continue
        k = (rev, vid)
        if k in seen:
            t.duplicated += 1
            continue
        if k not in expected:
            t.extra += 1
            continue
        seen.add(k)
        if rev != cur:
            if rev < cur:
                t.out_of_order += 1
            if rev in done_revs:
                t.split += 1
            if cur:
                done_revs.add(cur)
            cur = rev
    t.lost = len(expected) - len(seen)
    return t


async def writer(
    session: varbridge.SessionContext,
    names: list[str],
    ids: dict[str, str],
    commits: Commits,
    counter: list[int],
    stop: asyncio.Event,
    paused: Callable[[], bool],
    seed: int,
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        if paused():
            await asyncio.sleep(0.005)
            continue
        if rng.random() < 0.35:
            batch = {}
            for n in rng.sample(names, rng.randint(2, 6)):
                counter[0] += 1
                batch[n] = counter[0]
            res = await session.set_variables(batch)
            assert sorted(res.changed) == sorted(batch)
            commits.add(res.revision, [ids[n] for n in batch])
        else:
            counter[0] += 1
            v = await session.set_variable(rng.choice(names), counter[0])
            commits.add(v.revision, [v.id])


@pytest.mark.timeout(300 + UPDATES // 100 + 30 * BLACKHOLES)
async def test_chaos_watchers_see_every_revision_once(start_server: Callable[..., Server]) -> None:
    n = UPDATES
    srv = start_server(
        *SERVER_KA, "--history-limit", str(3 * n + 10_000), "--history-bytes", str(4 << 30)
    )
    sid = f"chaos-{uuid.uuid4().hex[:8]}"
    names = [f"v{i:02d}" for i in range(16)]
    async with (
        FaultProxy(srv.addr) as proxy,
        varbridge.connect(srv.addr) as wbridge,
        varbridge.connect(proxy.addr, options=CLIENT_KA_OPTIONS) as rbridge,
    ):
        ws = await wbridge.session(sid)
        ids = {}
        for name in names:
            ids[name] = (await ws.register_variable(name, "int", 0)).id
        rs = await rbridge.session(sid)

        got: list[list[tuple[int, str, bool]]] = [[], []]
        watches = [
            rs.watch_variables(
                names if i == 0 else None,
                include_initial=False,
                batched=i == 0,
                heartbeat_interval_ms=50,
                max_retries=1000,
                backoff_base=0.01,
                backoff_cap=0.2,
            )
            for i in range(2)
        ]

        async def consume(i: int) -> None:
            async for u in watches[i]:
                got[i].append((u.revision, u.variable_id, u.resync))

        consumers = [asyncio.create_task(consume(i)) for i in range(2)]

        async def watch_count() -> int:
            return (await ws.get_info()).watch_count

        # Both streams registered on the server before the first write.
        deadline = time.monotonic() + 30
        while await watch_count() < 2:
            assert time.monotonic() < deadline, "the watches did not start"
            await asyncio.sleep(0.01)

        commits = Commits()
        counter = [0]
        stop_writes = asyncio.Event()
        min_faults = max(20, n // 2000)
        every = max(5, min_faults // (BLACKHOLES + 1))
        server_gone: list[float] = []
        client_back: list[float] = []
        problems: list[str] = []

        async def blackhole() -> bool:
            # New connections are refused until the server has dropped the
            # blackholed observers, so that a watch back early (a BDP ping
            # unanswered for 1 s also ends a connection) does not hide them.
            proxy.refuse = True
            t0 = time.monotonic()
            try:
                if proxy.blackhole() == 0:
                    return False
                while True:
                    if await watch_count() == 0 or time.monotonic() - t0 > 3 * (SERVER_KA_S + 1):
                        break
                    await asyncio.sleep(0.005)
                gone = time.monotonic() - t0
                server_gone.append(gone)
                if await watch_count() > 0:
                    problems.append(f"server kept the blackholed observers {gone:.1f}s")
                elif gone > SERVER_KA_S + 1:
                    problems.append(f"server dropped the blackholed observers after {gone:.2f}s")
            finally:
                proxy.refuse = False
            while True:
                if await watch_count() >= 2 or time.monotonic() - t0 > 2 * (CLIENT_KA_S + 5):
                    break
                await asyncio.sleep(0.01)
            back = time.monotonic() - t0
            client_back.append(back)
            if await watch_count() < 2:
                problems.append(f"the watches were not back {back:.1f}s after a blackhole")
            elif back > CLIENT_KA_S + 5:
                problems.append(f"the watches came back {back:.1f}s after a blackhole")
            return True

        async def inject() -> None:
            rng = random.Random()
            faults = holes = 0
            while not (stop_faults.is_set() and faults >= min_faults and holes >= BLACKHOLES):
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                if holes < BLACKHOLES and faults >= (holes + 1) * every:
                    if await blackhole():
                        holes += 1
                        faults += 1
                elif rng.random() < 0.5:
                    faults += proxy.cut() > 0
                else:
                    # Shorter than the server's keepalive timeout: delays, never breaks.
                    faults += proxy.stall(rng.uniform(0.05, 0.3)) > 0

        stop_faults = asyncio.Event()
        injector = asyncio.create_task(inject())
        t0 = time.monotonic()

        def paused() -> bool:  # the history (3n and more) holds what a blackholed watch needs
            return commits.updates >= 3 * n

        writers = [
            asyncio.create_task(writer(ws, names, ids, commits, counter, stop_writes, paused, s))
            for s in (1, 2)
        ]
        while commits.updates < n:
            await asyncio.sleep(0.02)
            for w in writers:
                if w.done():
                    w.result()  # raises the writer's error
        stop_faults.set()
        await injector
        stop_writes.set()
        await asyncio.gather(*writers)
        write_time = time.monotonic() - t0

        # Heartbeats (every 50 ms) move last_revision once the updates are in.
        deadline = time.monotonic() + 120
        while any(w.last_revision < commits.last for w in watches):
            for c in consumers:
                if c.done():
                    c.result()  # raises the watch's error
                    pytest.fail("a watch loop ended")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the watches reached {[w.last_revision for w in watches]} of {commits.last}"
                )
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
        for c in consumers:
            c.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)

        faults = (
            f"{proxy.cuts} cuts, {proxy.stalls} stalls, {proxy.blackholes} blackholes "
            f"(server dropped observers after {[round(x, 2) for x in server_gone]} s, "
            f"watches back after {[round(x, 2) for x in client_back]} s)"
        )
        print(
            f"\n{commits.updates} updates ({commits.batches} batches) at "
            f"{len(commits.by_rev)} revisions in {write_time:.1f}s "
            f"({commits.updates / write_time:.0f}/s), all delivered after {elapsed:.1f}s; {faults}"
        )
        for i, (w, g) in enumerate(zip(watches, got, strict=True)):
            t = check_exactly_once(commits.by_rev, g)
            kind = "batches, named" if i == 0 else "single, session"
            print(
                f"{kind}: {t.updates} updates at {t.revisions} revisions: {t.lost} lost, "
                f"{t.duplicated} duplicated, {t.out_of_order} out of order, "
                f"{t.split} batches split, {t.extra} unexpected, {t.resyncs} resyncs; "
                f"{w.reconnects} reconnects, {w.duplicates_skipped} duplicates skipped by the watch"
            )
            assert t.clean(), f"{kind}: {t}"
            assert t.updates == commits.updates
        assert not problems, problems
        assert proxy.cuts, faults
        assert proxy.stalls, faults
        assert proxy.blackholes >= BLACKHOLES, faults


@pytest.mark.timeout(90)
async def test_server_restart_ends_watch_with_session_not_found(
    start_server: Callable[..., Server],
) -> None:
    """A restarted server (in-memory store) has lost the session: the watch
    loop raises SessionNotFound within a bound, and so do calls."""
    port = free_port()
    srv = start_server(port=port)
    async with varbridge.connect(srv.addr) as bridge:
        session = await bridge.session(f"restart-{uuid.uuid4().hex[:8]}")
        await session.register_variable("x", "int", 1)
        got: list[varbridge.VariableUpdate] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for u in session.watch_variables(["x"], include_initial=True):
                got.append(u)
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)

        srv.stop()  # SIGTERM: the server drains for up to 2 s and exits
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        await asyncio.to_thread(start_server, port=port)
        with pytest.raises(varbridge.SessionNotFound):
            await asyncio.wait_for(task, 45)
        print(
            f"\nthe watch raised SessionNotFound {time.monotonic() - t0:.1f}s after the server "
            "was started again"
        )
        with pytest.raises(varbridge.SessionNotFound):
            await session.set_variable("x", 2)
        assert [u.value for u in got] == [1]
