"""A bridge on several servers: connect(["h1:p1", "h2:p2"]) or "h1:p1,h2:p2".

- the target: lists become gRPC's ``ipv4:``/``ipv6:`` address lists (names
  resolved), malformed ones raise InvalidArgument, one address is unchanged;
- two live servers: calls spread over both (round_robin);
- a live server left: two fault proxies in front of one server stand for two
  servers sharing the session; killing the one the watch is on makes it fail
  over at once (``failovers``), nothing lost or repeated;
- a durable server SIGKILLed and one started on the same data directory on
  the list's other port (until servers share sessions through etcd, the way
  to have the session live on at another address): the watch carries on
  there in the same incarnation, every later change exactly once, in order,
  no RESYNC; writes go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

import varbridge
import varbridge.sync
from varbridge._targets import channel_target
from varbridge.v1 import varbridge_pb2 as pb
from varbridge.v1 import varbridge_pb2_grpc as pb_grpc

from .conftest import Server, free_port
from .faultproxy import FaultProxy
from .test_restart import consume, next_update, restart, sigkill, wait_until

log = logging.getLogger(__name__)


def test_channel_target() -> None:
    assert channel_target("127.0.0.1:1") == ("127.0.0.1:1", False, None)
    assert channel_target(["127.0.0.1:1"]) == ("127.0.0.1:1", False, None)
    assert channel_target("localhost:1") == ("localhost:1", False, None)
    assert channel_target("dns:///example.com:443") == ("dns:///example.com:443", True, None)
    assert channel_target("ipv4:127.0.0.1:1,127.0.0.1:2") == (
        "ipv4:127.0.0.1:1,127.0.0.1:2",
        True,
        None,
    )
    want = ("ipv4:127.0.0.1:1,127.0.0.2:2", True, "127.0.0.1:1")
    assert channel_target(["127.0.0.1:1", "127.0.0.2:2"]) == want
    assert channel_target(("127.0.0.1:1", "127.0.0.2:2")) == want
    assert channel_target("127.0.0.1:1, 127.0.0.2:2") == want
    assert channel_target(["[::1]:1", "[::1]:2"]) == ("ipv6:[::1]:1,[::1]:2", True, "[::1]:1")
    assert channel_target("localhost:1,127.0.0.1:2") == (
        "ipv4:127.0.0.1:1,127.0.0.1:2",
        True,
        "localhost:1",
    )
    for bad in (
        [],
        "127.0.0.1:1,",
        ["127.0.0.1:1", "nonsense"],
        ["127.0.0.1:1", "127.0.0.1:99999"],
        ["127.0.0.1:1", "::1:2"],
        ["127.0.0.1:1", "[::1]:2"],  # one family per gRPC address list
    ):
        with pytest.raises(varbridge.errors.InvalidArgument, match="host:port"):
            channel_target(bad)
        with pytest.raises(varbridge.errors.InvalidArgument):
            varbridge.connect(bad)


def test_balanced_channel_options() -> None:
    b = varbridge.connect(["127.0.0.1:1", "127.0.0.1:2"])
    assert b.balanced
    assert b.target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    opts = dict(b._options)
    assert '"round_robin"' in opts["grpc.service_config"]
    assert opts["grpc.default_authority"] == "127.0.0.1:1"
    assert (
        varbridge.BALANCED_SERVICE_CONFIG["methodConfig"]
        == varbridge.SERVICE_CONFIG["methodConfig"]
    )
    single = varbridge.connect("127.0.0.1:1")
    assert not single.balanced
    assert "round_robin" not in dict(single._options)["grpc.service_config"]
    assert "grpc.default_authority" not in dict(single._options)


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_calls_spread_over_live_servers(start_server: Callable[..., Server]) -> None:
    """Two memory servers (they share nothing: each session lives where it
    was created): sessions created through one bridge land on both."""
    s1, s2 = start_server(), start_server()
    prefix = f"spread-{free_port()}-"
    async with varbridge.connect([s1.addr, s2.addr]) as bridge:
        for i in range(20):
            await bridge.session(f"{prefix}{i}")
    counts: dict[str, int] = {}
    for srv in (s1, s2):
        with grpc.insecure_channel(srv.addr) as ch:
            resp = pb_grpc.BridgeServiceStub(ch).ListSessions(
                pb.ListSessionsRequest(pattern=prefix + "*"), timeout=10
            )
            counts[srv.addr] = len(resp.sessions)
    log.info("20 sessions over two servers: %s", counts)
    assert sum(counts.values()) == 20
    assert all(n >= 5 for n in counts.values()), counts


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_watch_fails_over_to_live_server(server: Server) -> None:
    """Two proxies in front of one server stand for two servers that share the
    session. Each is killed in turn (refuse, cut): whichever carries the
    watch's stream, the watch resumes on the other at once."""
    q: asyncio.Queue[object] = asyncio.Queue()
    async with (
        FaultProxy(server.addr) as pa,
        FaultProxy(server.addr) as pb,
        varbridge.connect(server.addr) as wbridge,
        varbridge.connect([pa.addr, pb.addr]) as bridge,
    ):
        writer = await wbridge.session(f"failover-{free_port()}")
        await writer.register_variable("x", "integer", 0)
        s = await bridge.session(writer.session_id)
        # max_retries=2: a failure that counted would end the watch.
        w = s.watch_variables(["x"], max_retries=2)
        await w.start()
        task = asyncio.create_task(consume(w, q))
        n = 0
        try:
            for proxy in (pa, pb):
                await wait_until(lambda: pa.live > 0 and pb.live > 0)
                assert pa.live > 0
                assert pb.live > 0
                before = w.failovers
                proxy.refuse = True
                proxy.cut()
                killed = time.monotonic()
                for via in (writer, writer, s):
                    n += 1
                    v = await via.set_variable("x", n)
                    u = await next_update(q)
                    assert (u.value, u.revision, u.resync) == (n, v.revision, False)
                    if via is writer and n % 3 == 1 and w.failovers > before:
                        log.info("failed over: %.3fs from the kill", time.monotonic() - killed)
                proxy.refuse = False
            assert w.failovers >= 1
            assert w.duplicates_skipped == 0
            assert q.empty()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _set_once(s: varbridge.SessionContext, value: int) -> None:
    """Write x = value; a write whose answer was lost (Unavailable: it may or
    may not have been applied) is read back and written again only if it
    was not, as a careful writer does: the client never repeats it itself."""
    while True:
        try:
            await s.set_variable("x", value)
            return
        except varbridge.errors.Unavailable:
            if (await s.get_variable("x")).value == value:
                return


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_watch_resumes_on_other_address_durable(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data = str(tmp_path / "data")
    p1, p2 = free_port(), free_port()
    srv = start_server("--data-dir", data, "--fsync", "always", port=p1)
    addrs = [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]
    q: asyncio.Queue[object] = asyncio.Queue()
    async with (
        varbridge.connect(addrs) as wbridge,
        varbridge.connect(",".join(addrs)) as bridge,
    ):
        writer = await wbridge.session("failover-durable")
        await writer.register_variable("x", "integer", 0)
        s = await bridge.session("failover-durable")
        w = s.watch_variables(max_retries=1000, backoff_base=0.05, backoff_cap=0.5)
        await w.start()
        task = asyncio.create_task(consume(w, q))
        try:
            for i in range(1, 6):
                await _set_once(writer, i)
            got = [await next_update(q) for _ in range(5)]
            assert [u.value for u in got] == [1, 2, 3, 4, 5]
            inc = w.incarnation
            assert inc

            sigkill(srv)
            killed = time.monotonic()
            srv = await restart(start_server, ["--data-dir", data, "--fsync", "always"], p2)
            for i in range(6, 21):
                await _set_once(writer, i)
                u = await next_update(q)
                if i == 6:
                    log.info("first update %.3fs after the kill", time.monotonic() - killed)
                assert (u.update_type, u.value, u.resync) == ("value_change", i, False)
                assert u.revision == got[-1].revision + i - 5
            assert w.incarnation == inc
            assert w.incarnation_changes == 0
            assert w.duplicates_skipped == 0
            assert w.reconnects >= 1
            assert q.empty()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_sync_bridge_on_a_list(server: Server) -> None:
    """The blocking facade takes the same lists (here: a live server and a
    port nothing listens on)."""
    with varbridge.sync.connect([server.addr, f"127.0.0.1:{free_port()}"]) as bridge:
        s = bridge.session(f"sync-list-{free_port()}")
        s.register_variable("x", "integer", 0)
        for i in range(1, 6):
            assert s.set_variable("x", i).value == i
        assert s.get_variable("x").value == 5
