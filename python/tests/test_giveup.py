"""Issue 10 item 8: a watch gives up on the same budget as Go's and says so.

* defaults: base 1 s, cap 30 s, 10 consecutive failures;
* against a server that went away: GaveUp (an Unavailable) after exactly
  max_retries attempts, "gave up after N attempts over T: last error: ...";
* a session cleaned up under a watch is SessionClosed (in test_integration).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable

import pytest

import varbridge
from varbridge.watch import backoff

from .conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_defaults_match_go() -> None:
    params = inspect.signature(varbridge.SessionContext.watch_variables).parameters
    assert params["backoff_base"].default == 1.0
    assert params["backoff_cap"].default == 30.0
    assert params["max_retries"].default == 10
    assert params["include_initial"].default is False
    # The waits before attempts 1..9 (the 10th failure gives up): about 2 min,
    # as Go's 119 s, not the 179 s the old schedule took.
    lo = sum(0.9 * min(30.0, 2.0 ** (n - 2)) for n in range(2, 10))
    hi = 0.1 + sum(1.1 * min(30.0, 2.0 ** (n - 2)) for n in range(2, 10))
    total = sum(backoff(1.0, 30.0, n) for n in range(1, 10))
    assert lo <= total <= hi
    assert lo > 105
    assert hi < 135


async def test_gives_up_on_a_server_that_went_away(
    start_server: Callable[..., Server],
) -> None:
    srv = start_server()
    async with varbridge.connect(srv.addr) as bridge:
        s = await bridge.session("giveup")
        await s.register_variable("v", "integer", 0)
        w = s.watch_variables(["v"], max_retries=4, backoff_base=0.2, backoff_cap=0.4)
        await w.start()
        srv.proc.kill()
        srv.proc.wait(10)
        t0 = time.monotonic()
        with pytest.raises(varbridge.GaveUp) as ei:
            await asyncio.wait_for(w.__anext__(), 30)
        took = time.monotonic() - t0
    e = ei.value
    assert isinstance(e, varbridge.Unavailable)
    assert e.attempts == 4
    assert isinstance(e.last_error, varbridge.Unavailable)
    assert e.__cause__ is e.last_error
    # from the first failure to the fourth: the waits after failures 1..3,
    # <=0.02 + 0.2 + 0.4 (+-10 %), and the attempts themselves
    assert 0.6 * 0.9 <= e.elapsed <= took
    m = re.fullmatch(r"gave up after 4 attempts over (\d+\.\d)s: last error: (.+)", str(e))
    assert m is not None, str(e)
    assert m.group(1) == f"{e.elapsed:.1f}"
    assert m.group(2) == str(e.last_error)
    assert w.closed
