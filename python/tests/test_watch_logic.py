"""Resume, reconnect and lifecycle of Watch against a scripted in-process server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

import varbridge
from varbridge.v1 import varbridge_pb2 as pb

from .fake_server import HANG, Abort, FakeBridge, FakeServer, heartbeat, upd

pytestmark = pytest.mark.timeout(30)

INITIAL = pb.UPDATE_TYPE_INITIAL_VALUE


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeBridge, varbridge.SessionContext]]:
    servicer = FakeBridge()
    async with FakeServer(servicer) as srv, varbridge.connect(srv.addr) as bridge:
        yield servicer, await bridge.session("s")


def fast(session: varbridge.SessionContext, **kw: object) -> varbridge.Watch:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return session.watch_variables([], **kw)  # type: ignore[arg-type]


async def take(w: varbridge.Watch, n: int) -> list[tuple[int, str, object]]:
    out = []
    async for u in w:
        out.append((u.revision, u.variable_id, u.value))
        if len(out) == n:
            break
    return out


async def test_cut_mid_batch_resumes_at_same_revision_and_skips(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(5, "var_a", 1, last=False), upd(5, "var_b", 2, last=False), Abort()],
        [
            upd(5, "var_a", 1, last=False),
            upd(5, "var_b", 2, last=False),
            upd(5, "var_c", 3, last=True),
            upd(6, "var_a", 4),
            HANG,
        ],
    ]
    w = fast(s, start_revision=5)
    got = await take(w, 4)
    assert got == [(5, "var_a", 1), (5, "var_b", 2), (5, "var_c", 3), (6, "var_a", 4)]
    assert [r.start_revision for r in srv.requests] == [5, 5]
    assert w.duplicates_skipped == 2
    assert w.reconnects == 1


async def test_cut_after_complete_group_resumes_after_it(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(5, "var_a", last=False), upd(5, "var_b", last=True), Abort()],
        [upd(6, "var_a", 9), HANG],
    ]
    got = await take(fast(s, start_revision=1), 3)
    assert [g[:2] for g in got] == [(5, "var_a"), (5, "var_b"), (6, "var_a")]
    assert [r.start_revision for r in srv.requests] == [1, 6]


async def test_group_without_last_flag_is_closed_by_next_revision(fake) -> None:
    # A server that never sets last_in_revision still resumes without loss.
    srv, s = fake
    srv.scripts = [
        [upd(3, "var_a", last=False), upd(4, "var_a", last=False), Abort()],
        [upd(4, "var_a", last=False), upd(4, "var_b", last=False), HANG],
    ]
    got = await take(fast(s, start_revision=3), 3)
    assert [g[:2] for g in got] == [(3, "var_a"), (4, "var_a"), (4, "var_b")]
    assert srv.requests[1].start_revision == 4


async def test_heartbeat_advances_resume_point_and_is_not_yielded(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(3, "var_a"), heartbeat(10), heartbeat(12), Abort()],
        [upd(13, "var_a", 5), HANG],
    ]
    w = fast(s, start_revision=1)
    got = await take(w, 2)
    assert [g[0] for g in got] == [3, 13]
    assert srv.requests[1].start_revision == 13
    assert w.last_revision == 13


async def test_initial_values_then_resume_without_initial(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [
            upd(7, "var_a", 1, kind=INITIAL, last=False, var_rev=2),
            upd(7, "var_b", 2, kind=INITIAL, last=True, var_rev=7),
            Abort(),
        ],
        [upd(8, "var_a", 3, old=1), HANG],
    ]
    w = fast(s, include_initial=True)
    ups = []
    async for u in w:
        ups.append(u)
        if len(ups) == 3:
            break
    assert [(u.initial, u.old_value, u.value) for u in ups] == [
        (True, None, 1),
        (True, None, 2),
        (False, 1, 3),
    ]
    assert srv.requests[0].include_initial_values
    assert srv.requests[0].start_revision == 0
    assert not srv.requests[1].include_initial_values
    assert srv.requests[1].start_revision == 8


async def test_cut_during_initial_values_asks_again_and_skips_unchanged(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [
            upd(7, "var_a", 1, kind=INITIAL, last=False, var_rev=2),
            upd(7, "var_b", 2, kind=INITIAL, last=False, var_rev=3),
            Abort(),
        ],
        [
            upd(9, "var_a", 1, kind=INITIAL, last=False, var_rev=2),  # unchanged: skipped
            upd(9, "var_b", 5, kind=INITIAL, last=False, var_rev=9),  # changed: yielded
            upd(9, "var_c", 6, kind=INITIAL, last=True, var_rev=1),
            upd(10, "var_c", 7, old=6),
            HANG,
        ],
    ]
    w = fast(s, include_initial=True)
    got = await take(w, 5)
    assert got == [
        (7, "var_a", 1),
        (7, "var_b", 2),
        (9, "var_b", 5),
        (9, "var_c", 6),
        (10, "var_c", 7),
    ]
    assert [r.include_initial_values for r in srv.requests] == [True, True]


async def test_from_now_reads_base_revision_first(fake) -> None:
    srv, s = fake
    srv.session_revision = 42
    srv.scripts = [[Abort()], [upd(43, "var_a"), HANG]]
    got = await take(fast(s, include_initial=False), 1)
    assert got[0][0] == 43
    assert [r.start_revision for r in srv.requests] == [43, 43]
    assert not any(r.include_initial_values for r in srv.requests)


async def test_gives_up_after_max_retries(fake) -> None:
    srv, s = fake
    srv.scripts = [[Abort(message="down")] for _ in range(5)]
    w = fast(s, start_revision=1, max_retries=3)
    with pytest.raises(varbridge.GaveUp) as ei:
        await take(w, 1)
    # The third consecutive failure ends it, as in Go (maxFailures).
    assert len(srv.requests) == 3
    assert w.closed
    e = ei.value
    assert isinstance(e, varbridge.Unavailable)
    assert e.attempts == 3
    assert isinstance(e.last_error, varbridge.Unavailable)
    assert e.__cause__ is e.last_error
    assert str(e) == (
        f"gave up after 3 attempts over {e.elapsed:.1f}s: last error: down (UNAVAILABLE)"
    )


def test_backoff_schedule() -> None:
    from varbridge.watch import backoff

    for _ in range(200):
        # the first attempt after a break: a fraction (up to 10 %) of base
        assert 0 <= backoff(1.0, 30.0, 1) <= 0.1
        # then base * 2^(n-2), capped, +-10 %
        for n, want in [(2, 1), (3, 2), (4, 4), (5, 8), (6, 16), (7, 30), (10, 30)]:
            assert want * 0.9 <= backoff(1.0, 30.0, n) <= want * 1.1


async def test_a_message_resets_the_failure_count(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(i, "var_a", float(i)), Abort()] for i in range(1, 8)]
    srv.scripts.append([upd(8, "var_a", 8.0), HANG])
    got = await take(fast(s, start_revision=1, max_retries=2), 8)
    assert [g[0] for g in got] == list(range(1, 9))


@pytest.mark.parametrize(
    ("code", "reason", "exc"),
    [
        (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND", varbridge.SessionNotFound),
        (grpc.StatusCode.NOT_FOUND, "SESSION_CLOSED", varbridge.SessionClosed),
        (grpc.StatusCode.NOT_FOUND, "VARIABLE_NOT_FOUND", varbridge.VariableNotFound),
        (grpc.StatusCode.NOT_FOUND, "", varbridge.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", varbridge.InvalidArgument),
        (grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID", varbridge.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED", varbridge.ResourceExhausted),
        (grpc.StatusCode.OUT_OF_RANGE, "REVISION_OUT_OF_RANGE", varbridge.RevisionOutOfRange),
    ],
)
async def test_permanent_errors_are_raised_at_once(fake, code, reason, exc) -> None:
    srv, s = fake
    srv.scripts = [[Abort(code, "words that say nothing", reason)], [HANG]]
    with pytest.raises(exc):
        await take(fast(s, start_revision=1), 1)
    assert len(srv.requests) == 1


async def test_stream_ended_by_server_reconnects(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a")], [upd(3, "var_a"), HANG]]
    got = await take(fast(s, start_revision=1), 2)
    assert [g[0] for g in got] == [2, 3]
    assert srv.requests[1].start_revision == 3


async def test_filter(fake, caplog: pytest.LogCaptureFixture) -> None:
    srv, s = fake
    srv.scripts = [
        [
            upd(2, "var_a", 1.0, old=0.0),  # filtered out
            upd(3, "var_a", 5.0, old=1.0),  # kept
            upd(4, "var_a", -1.0, old=5.0),  # filter raises: kept
            Abort(),
        ],
        [upd(5, "var_a", 9.0, old=-1.0), HANG],
    ]

    def f(old: float, new: float) -> bool:
        if new < 0:
            raise ValueError("boom")
        return abs(new - old) > 2

    w = fast(s, start_revision=2, filter=f)
    with caplog.at_level(logging.WARNING, logger="varbridge.watch"):
        got = await take(w, 3)
    assert [g[0] for g in got] == [3, 4, 5]
    assert w.filtered == 1
    assert w.filter_errors == 1
    assert "filter raised" in caplog.text
    assert srv.requests[1].start_revision == 5


async def test_filter_not_applied_to_initial_and_resync(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [
            upd(3, "var_a", 1.0, kind=INITIAL),
            upd(9, "var_a", 2.0, kind=pb.UPDATE_TYPE_RESYNC),
            HANG,
        ]
    ]
    w = fast(s, filter=lambda old, new: False)
    ups = []
    async for u in w:
        ups.append(u)
        if len(ups) == 2:
            break
    assert ups[0].initial
    assert ups[1].resync
    assert ups[1].update_type == "resync"


async def test_duplicate_after_complete_is_skipped(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(3, "var_a"), upd(3, "var_a"), upd(2, "var_b"), upd(4, "var_b"), HANG]]
    w = fast(s, start_revision=1)
    got = await take(w, 2)
    assert [g[:2] for g in got] == [(3, "var_a"), (4, "var_b")]
    assert w.duplicates_skipped == 2


async def wait_for(pred, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_break_cancels_the_rpc(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a"), HANG]]
    async for _ in fast(s, start_revision=1):
        break
    await wait_for(lambda: srv.active == 0)
    assert srv.cancelled == 1


async def test_exception_in_body_cancels_the_rpc(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a"), HANG]]
    with pytest.raises(RuntimeError):
        async for _ in fast(s, start_revision=1):
            raise RuntimeError("body failed")
    await wait_for(lambda: srv.active == 0)


async def test_async_with_and_aclose(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a"), HANG], [HANG]]
    async with fast(s, start_revision=1) as w:
        async for _ in w:
            break
        # still referenced: the with block closes it
    assert w.closed
    await wait_for(lambda: srv.active == 0)
    w2 = fast(s, start_revision=1)
    task = asyncio.create_task(w2.__anext__())
    await wait_for(lambda: srv.active == 1)
    await w2.aclose()
    await wait_for(lambda: srv.active == 0)
    with pytest.raises(StopAsyncIteration):
        await task


async def test_task_cancel_cancels_the_rpc(fake) -> None:
    srv, s = fake
    srv.scripts = [[HANG]]
    w = fast(s, start_revision=1)

    async def run() -> None:
        async for _ in w:
            pass

    task = asyncio.create_task(run())
    await wait_for(lambda: srv.active == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert w.closed
    await wait_for(lambda: srv.active == 0)
    with pytest.raises(StopAsyncIteration):
        await w.__anext__()


async def test_bridge_close_closes_watches(fake) -> None:
    srv, s = fake
    srv.scripts = [[HANG]]
    w = fast(s, start_revision=1)
    task = asyncio.create_task(w.__anext__())
    await wait_for(lambda: srv.active == 1)
    await s.bridge.close()
    await wait_for(lambda: srv.active == 0)
    assert w.closed
    with pytest.raises(StopAsyncIteration):
        await task


async def test_no_deadline_on_watch(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a"), HANG]]
    w = fast(s, start_revision=1)
    await w.__anext__()
    assert w._call is not None
    assert w._call.time_remaining() is None
    await w.aclose()


async def test_batches_cut_mid_revision(fake) -> None:
    srv, s = fake
    srv.batches = True
    srv.scripts = [
        # one message holds a whole revision and the start of the next
        [
            [upd(5, "var_a", 1, last=False), upd(5, "var_b", 2, last=True)],
            [upd(6, "var_a", 3, last=False)],
            Abort(),
        ],
        [
            [upd(6, "var_a", 3, last=False), upd(6, "var_b", 4, last=True), upd(7, "var_c", 5)],
            HANG,
        ],
    ]
    w = fast(s, start_revision=5)
    got = await take(w, 5)
    assert got == [
        (5, "var_a", 1),
        (5, "var_b", 2),
        (6, "var_a", 3),
        (6, "var_b", 4),
        (7, "var_c", 5),
    ]
    assert [r.start_revision for r in srv.batch_requests] == [5, 6]
    assert srv.requests == []  # WatchVariables never used
    assert w.received == 6
    assert w.duplicates_skipped == 1


async def test_batch_is_drained_before_a_reconnect(fake) -> None:
    srv, s = fake
    srv.batches = True
    srv.scripts = [
        [[upd(2, "var_a", 1), upd(3, "var_a", 2), upd(4, "var_a", 3)], Abort()],
        [[upd(5, "var_a", 4)], HANG],
    ]
    w = fast(s, start_revision=2)
    got = await take(w, 4)
    assert [g[0] for g in got] == [2, 3, 4, 5]
    assert srv.batch_requests[1].start_revision == 5


async def test_falls_back_to_watch_variables(fake) -> None:
    srv, s = fake
    srv.scripts = [[upd(2, "var_a"), HANG]]
    w = fast(s, start_revision=2)
    assert (await take(w, 1))[0][0] == 2
    assert not w.batched
    assert w.reconnects == 0
    assert len(srv.requests) == 1


async def test_batched_false_uses_watch_variables(fake) -> None:
    srv, s = fake
    srv.batches = True
    srv.scripts = [[upd(2, "var_a"), HANG]]
    w = fast(s, start_revision=2, batched=False)
    assert (await take(w, 1))[0][0] == 2
    assert srv.batch_requests == []
    assert len(srv.requests) == 1


async def test_start_opens_the_stream_before_the_first_read(fake) -> None:
    srv, s = fake
    srv.session_revision = 7
    srv.batches = True
    srv.scripts = [[upd(8, "var_a"), HANG]]
    w = fast(s, include_initial=False)
    assert await w.start() is w
    await wait_for(lambda: len(srv.batch_requests) == 1)
    assert srv.batch_requests[0].start_revision == 8
    assert (await take(w, 1))[0][0] == 8
    assert len(srv.batch_requests) == 1


async def test_start_fixes_the_base_even_before_a_fallback(fake) -> None:
    srv, s = fake
    srv.session_revision = 7
    srv.scripts = [[upd(8, "var_a"), HANG]]
    w = await fast(s, include_initial=False).start()
    srv.session_revision = 99  # later writes: must not move the starting point
    assert (await take(w, 1))[0][0] == 8
    assert srv.requests[0].start_revision == 8


async def test_aclose_during_backoff_ends_iteration(fake) -> None:
    srv, s = fake
    # Two failures: the first reconnect waits only a random fraction of the
    # base (it may be too short to see), the second waits the base itself.
    srv.scripts = [[Abort()], [Abort()], [HANG]]
    w = s.watch_variables([], start_revision=1, backoff_base=0.5, backoff_cap=0.5)
    task = asyncio.create_task(w.__anext__())
    await wait_for(lambda: w.attempts == 2 and w._call is None)
    await w.aclose()
    with pytest.raises(StopAsyncIteration):
        await task
    await asyncio.sleep(0.6)
    assert len(srv.requests) == 2  # no new call after the close


# -- session incarnation (issue 10 item 1) --------------------------------------

RESYNC = pb.UPDATE_TYPE_RESYNC


async def take_updates(w: varbridge.Watch, n: int) -> list[varbridge.VariableUpdate]:
    out = []
    async for u in w:
        out.append(u)
        if len(out) == n:
            break
    return out


async def test_resume_sends_the_incarnation_it_saw(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(5, "var_a", 1.0, incarnation="aa"), upd(6, "var_a", 2.0), Abort()],
        [upd(7, "var_a", 3.0), HANG],
    ]
    w = fast(s, start_revision=5)
    got = await take(w, 3)
    assert [g[0] for g in got] == [5, 6, 7]
    assert [(r.start_revision, r.incarnation) for r in srv.requests] == [(5, ""), (7, "aa")]
    assert w.incarnation == "aa"


async def test_from_now_takes_the_incarnation_from_the_session(fake) -> None:
    srv, s = fake
    srv.session_revision, srv.session_incarnation = 9, "cc"
    srv.scripts = [[upd(10, "var_a"), HANG]]
    await take(fast(s), 1)
    assert [(r.start_revision, r.incarnation) for r in srv.requests] == [(10, "cc")]


async def test_new_incarnation_yields_resync_and_moves_the_resume_point(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(22, "var_a", 22.0, incarnation="aa"), Abort()],
        # The server lost the session; a writer created it again (revision 6).
        [
            upd(6, "var_a", 5.0, kind=RESYNC, last=False, incarnation="bb"),
            upd(6, "var_b", 0.5, kind=RESYNC, last=True, incarnation="bb"),
            upd(7, "var_a", 6.0),
            Abort(),
        ],
        [upd(8, "var_a", 7.0), HANG],
    ]
    w = fast(s, start_revision=22)
    got = await take_updates(w, 5)
    assert [(u.revision, u.variable_id, u.value, u.resync) for u in got] == [
        (22, "var_a", 22.0, False),
        (6, "var_a", 5.0, True),
        (6, "var_b", 0.5, True),
        (7, "var_a", 6.0, False),
        (8, "var_a", 7.0, False),
    ]
    assert [(r.start_revision, r.incarnation) for r in srv.requests] == [
        (22, ""),
        (23, "aa"),
        (8, "bb"),
    ]
    assert w.incarnation_changes == 1


async def test_cut_inside_a_resync_asks_for_it_again(fake) -> None:
    srv, s = fake
    srv.scripts = [
        [upd(22, "var_a", 22.0, incarnation="aa"), Abort()],
        [upd(6, "var_a", 5.0, kind=RESYNC, last=False, incarnation="bb"), Abort()],
        # Resumed with the old incarnation: the server sends the RESYNC again.
        [
            upd(6, "var_a", 5.0, kind=RESYNC, last=False, incarnation="bb"),
            upd(6, "var_b", 0.5, kind=RESYNC, last=True, incarnation="bb"),
            upd(7, "var_a", 6.0),
            HANG,
        ],
    ]
    w = fast(s, start_revision=22)
    got = await take_updates(w, 4)
    assert [(u.revision, u.variable_id, u.resync) for u in got] == [
        (22, "var_a", False),
        (6, "var_a", True),
        (6, "var_b", True),
        (7, "var_a", False),
    ]
    assert [r.incarnation for r in srv.requests] == ["", "aa", "aa"]
    assert w.incarnation == "bb"
    assert w.duplicates_skipped == 1
