"""Issue 10 item 7: unary calls wait for the connection within their deadline
(wait-for-ready) and idempotent reads retry UNAVAILABLE by the channel's
service-config retryPolicy, not by loops of our own.

* connect() to an address whose server starts about 1 s later: the first
  call succeeds (it used to fail at once with "connection refused");
* a read issued while the server restarts succeeds once it is back;
* a read whose connection breaks while it is in flight is retried by gRPC,
  while a write in the same position is not (it may have been applied).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import varbridge

from .conftest import Server, free_port
from .faultproxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_service_config_is_the_contracts() -> None:
    opts = dict(varbridge.DEFAULT_OPTIONS)
    cfg = json.loads(opts["grpc.service_config"])
    assert cfg == varbridge.SERVICE_CONFIG
    reads, others = cfg["methodConfig"]
    assert {n["method"] for n in reads["name"]} == {
        "GetSession",
        "GetVariable",
        "GetVariables",
        "ListVariables",
        "ListSessions",
        "Heartbeat",
    }
    assert reads["waitForReady"] is True
    assert reads["retryPolicy"] == {
        "maxAttempts": 5,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert others["waitForReady"] is True
    assert "retryPolicy" not in others
    methods = {n["method"] for mc in cfg["methodConfig"] for n in mc["name"]}
    assert not methods & {"WatchVariables", "WatchVariableBatches"}


async def test_first_call_waits_for_a_server_that_starts_later(
    start_server: Callable[..., Server],
) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"

    async def start_late() -> Server:
        await asyncio.sleep(1.0)
        return await asyncio.to_thread(start_server, port=port)

    async with varbridge.connect(addr, timeout=20) as bridge:
        starter = asyncio.create_task(start_late())
        t0 = time.monotonic()
        s = await bridge.session("late")  # issued while nothing listens
        waited = time.monotonic() - t0
        srv = await starter
        assert s.created
        assert waited >= 0.9, "the call did not wait: was the server already up?"
        await s.register_variable("v", "integer", 1)
        assert (await s.get_variable("v")).value == 1
    srv.stop()


def has_durable_store(binary: Path) -> bool:
    out = subprocess.run(
        [str(binary), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--data-dir" in out.stdout + out.stderr


async def test_read_during_a_server_restart(
    start_server: Callable[..., Server], varbridge_bin: Path, tmp_path: Path
) -> None:
    if not has_durable_store(varbridge_bin):
        pytest.skip("server without --data-dir: a restart loses the session")
    port = free_port()
    flags = ["--data-dir", str(tmp_path / "data")]
    srv = start_server(*flags, port=port)
    async with varbridge.connect(srv.addr, timeout=20) as bridge:
        s = await bridge.session("restart")
        await s.register_variable("v", "integer", 7)
        srv.proc.kill()
        srv.proc.wait(10)

        async def restart_soon() -> Server:
            await asyncio.sleep(0.5)
            return await asyncio.to_thread(start_server, *flags, port=port)

        restarter = asyncio.create_task(restart_soon())
        v = await s.get_variable("v")  # issued while the server is down
        srv = await restarter
        assert v.value == 7
    srv.stop()


async def test_read_during_a_restart_through_a_proxy(addr: str) -> None:
    """The same with the restart played by a proxy (connections cut, new ones
    refused for a second), so the server keeps its data on any store."""
    async with FaultProxy(addr) as proxy, varbridge.connect(proxy.addr, timeout=20) as bridge:
        s = await bridge.session(f"py-restart-{free_port()}")
        await s.register_variable("v", "integer", 7)
        proxy.refuse = True
        proxy.cut()

        async def back_soon() -> None:
            await asyncio.sleep(1.0)
            proxy.refuse = False

        t0 = time.monotonic()
        back = asyncio.create_task(back_soon())
        v = await s.get_variable("v")
        await back
        assert v.value == 7
        assert time.monotonic() - t0 >= 0.9
        await s.cleanup()


async def test_read_cut_in_flight_is_retried_write_is_not(addr: str) -> None:
    async with FaultProxy(addr) as proxy, varbridge.connect(proxy.addr, timeout=20) as bridge:
        s = await bridge.session(f"py-retry-{free_port()}")
        await s.register_variable("v", "integer", 7)

        async def cut_in_flight(call: asyncio.Future[object]) -> None:
            # The request is held in the proxy, then its connection breaks:
            # the server never answered, the client sees UNAVAILABLE.
            await asyncio.sleep(0.3)
            assert not call.done()
            proxy.cut()

        proxy.stall(5.0)
        read = asyncio.ensure_future(s.get_variable("v"))
        await cut_in_flight(read)
        assert (await read).value == 7  # retried on a new connection

        proxy.stall(5.0)
        write = asyncio.ensure_future(s.set_variable("v", 8))
        await cut_in_flight(write)
        with pytest.raises(varbridge.Unavailable):
            await write
        # A read (retried, like the first) settles on a new connection;
        # the write was refused by the client, never applied twice.
        assert (await s.get_variable("v")).value in (7, 8)
        await s.cleanup()
