"""A Python watcher that sleeps instead of reading (issue 6, item 3).

Writers on the same channel (so the same HTTP/2 connection) as the sleeping
watcher keep their throughput; the server's memory stays bounded by its
history window; when the watcher reads again it gets a resync and then every
later revision in order.

Throughput: the median of the neighbour-round ratios (rounds alternate ABBA
between no watcher and a sleeping one) must be at least 90% with
VARBRIDGE_CHAOS_STRICT=1 (``make chaos``). In ``make test`` it is printed, not
asserted: a timing figure on a machine that other tests share is a
benchmark, not a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest

import varbridge

from .conftest import Server, free_port

pytestmark = [pytest.mark.integration]

STRICT = bool(os.environ.get("VARBRIDGE_CHAOS_STRICT"))
HISTORY = 2_000
WRITERS = 4


def scrape(url: str) -> dict[str, float]:
    """Sum each metric's samples over its labels."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


@pytest.mark.timeout(180)
async def test_sleeping_watcher_does_not_slow_writers(start_server: Callable[..., Server]) -> None:
    mport = free_port()
    srv = start_server("--history-limit", str(HISTORY), "--metrics-listen", f"127.0.0.1:{mport}")
    metrics_url = f"http://127.0.0.1:{mport}/metrics"
    pairs, round_s = (20, 0.3) if STRICT else (8, 0.3)
    bound = 0.90 if STRICT else 0.0
    pad = "x" * 500
    # Without BDP probing the sleeping stream's window stays at 64 KiB, so it
    # is full (and the server blocked sending to it) after a few hundred
    # writes rather than megabytes: rounds start sooner, nothing else changes.
    async with varbridge.connect(srv.addr, options={"grpc.http2.bdp_probe": 0}) as bridge:
        session = await bridge.session(f"slow-{uuid.uuid4().hex[:8]}")
        names = [f"w{i}" for i in range(WRITERS)]
        for n in names:
            await session.register_variable(n, "string", "")
        counter = [0]

        def value() -> str:
            counter[0] += 1
            return f"{pad}{counter[0]:012d}"

        async def rate(seconds: float) -> float:
            done = [0]
            t0 = time.monotonic()
            deadline = t0 + seconds

            async def write(name: str) -> None:
                while time.monotonic() < deadline:
                    await session.set_variable(name, value())
                    done[0] += 1

            await asyncio.gather(*(write(n) for n in names))
            return done[0] / (time.monotonic() - t0)

        async def write_n(n: int) -> None:
            async def write(name: str) -> None:
                for _ in range(n // WRITERS):
                    await session.set_variable(name, value())

            await asyncio.gather(*(write(n) for n in names))

        class Sleeper:
            """A watch whose loop body sleeps until released."""

            def __init__(self) -> None:
                self.released = asyncio.Event()
                self.got: list[varbridge.VariableUpdate] = []
                # A stream of its own: the server's send to it blocks once
                # its window is full, which is what this test is about. (On
                # the shared stream a sleeping watch is left behind instead
                # and blocks nothing; see test_mux.)
                self.watch = session.watch_variables(include_initial=False, own_stream=True)
                self.task = asyncio.create_task(self.run())

            async def run(self) -> None:
                async with self.watch:  # cancelling the task cancels the RPC
                    async for u in self.watch:
                        self.got.append(u)
                        while not self.released.is_set():  # noqa: ASYNC110 (sleeping is the point)
                            await asyncio.sleep(0.05)

            async def stalled(self) -> None:
                """Wait until the server is blocked sending to the watch: it
                has stopped reading and every window is full."""
                deadline = time.monotonic() + 10
                while (await session.get_info()).watch_count < 1:
                    assert time.monotonic() < deadline, "the sleeping watch did not start"
                    await asyncio.sleep(0.01)
                while scrape(metrics_url)["varbridge_watch_sends_in_flight"] < 1:
                    assert time.monotonic() < deadline, "the sleeping watch is not blocking a send"
                    await write_n(100)

            async def stop(self) -> None:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
                deadline = time.monotonic() + 10
                while (await session.get_info()).watch_count > 0:
                    assert time.monotonic() < deadline, "the sleeping watch stayed on the server"
                    await asyncio.sleep(0.01)

        await write_n(2 * HISTORY)  # warm up, fill the history window
        heap_full = scrape(metrics_url)["go_memstats_heap_inuse_bytes"]

        without: list[float] = []
        with_: list[float] = []
        ratios: list[float] = []
        for i in range(2 * pairs):
            if i % 4 in (1, 2):  # ABBA: drift cancels out
                s = Sleeper()
                await s.stalled()
                with_.append(await rate(round_s))
                await s.stop()
            else:
                without.append(await rate(round_s))
            if i % 2 == 1:
                ratios.append(with_[-1] / without[-1])

        # Once more, and the sleeper stays: memory, then reading again.
        s = Sleeper()
        await s.stalled()
        await write_n(3 * HISTORY)
        m = scrape(metrics_url)
        heap_stalled = m["go_memstats_heap_inuse_bytes"]
        in_flight = m["varbridge_watch_sends_in_flight"]

        med_without, med_with = statistics.median(without), statistics.median(with_)
        print(
            f"\nwriter throughput, {WRITERS} writers, {pairs}+{pairs} rounds of {round_s}s: "
            f"without a watcher {med_without:.0f}/s (median of {[round(x) for x in without]}), "
            f"with a sleeping watcher {med_with:.0f}/s (median of {[round(x) for x in with_]}): "
            f"{100 * med_with / med_without:.1f}% (median of the neighbour ratios "
            f"{100 * statistics.median(ratios):.1f}%)"
        )
        print(
            f"server heap in use: {heap_full / 2**20:.1f} MiB with the history full, "
            f"{heap_stalled / 2**20:.1f} MiB with the watcher asleep through {3 * HISTORY} "
            f"more writes; sends in flight {in_flight:.0f}"
        )
        assert statistics.median(ratios) >= bound, (without, with_)
        if STRICT:
            assert in_flight >= 1, "the sleeping watcher's stream should be blocked in a send"
        # Heap in use is read without a collection: allow for the GC's
        # headroom (GOGC=100 lets the heap reach twice the live data) on top
        # of the history window (2,000 changes of ~0.6 KiB).
        assert heap_stalled <= 2 * heap_full + 8 * 2**20

        # Reading again: a resync (the watch fell out of the window), then
        # every later revision in order.
        final = (await session.get_info()).revision
        s.released.set()
        deadline = time.monotonic() + 60
        while s.watch.last_revision < final:
            assert time.monotonic() < deadline, (s.watch.last_revision, final)
            assert not s.task.done(), s.task
            await asyncio.sleep(0.01)
        await s.stop()
        resyncs = [u for u in s.got if u.resync]
        assert resyncs, "a watcher that fell out of the window got no resync"
        prev = 0
        for u in s.got:
            if u.resync:
                assert u.revision >= prev
            else:
                assert prev == 0 or u.revision == prev + 1, (prev, u.revision)
            prev = u.revision
        print(
            f"reading again: {len(s.got)} updates, {len(resyncs)} resync updates at revision "
            f"{resyncs[0].revision}, then in order to revision {prev}; server resyncs "
            f"{scrape(metrics_url)['varbridge_watch_resyncs_total']:.0f}"
        )
