"""The client against the real Go server."""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import numpy as np
import pytest

import varbridge
from varbridge import _convert as cv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Session = varbridge.SessionContext


# -- sessions ---------------------------------------------------------------


async def test_session_create_get_heartbeat_cleanup(bridge: varbridge.Bridge, session_id) -> None:
    s = await bridge.session(session_id, ttl=120, metadata={"owner": "py"})
    assert s.created
    assert s.session_id == session_id
    assert s.info is not None
    assert s.info.ttl is not None
    assert s.info.ttl.total_seconds() == 120
    assert s.info.metadata == {"owner": "py"}
    again = await bridge.session(session_id)
    assert not again.created
    await s.register_variable("x", "int", 1)
    info = await s.get_info()
    assert info.variable_count == 1
    assert info.revision == 1
    hb = await s.heartbeat()
    assert hb.expires_at is not None
    assert info.expires_at is not None
    assert hb.expires_at >= info.expires_at
    assert await s.cleanup() == 1
    with pytest.raises(varbridge.SessionNotFound):
        await s.get_info()
    with pytest.raises(varbridge.SessionNotFound):
        await s.get_variable("x")
    with pytest.raises(varbridge.SessionNotFound):
        await s.heartbeat()


async def test_generated_session_id(bridge: varbridge.Bridge) -> None:
    s = await bridge.session()
    assert s.session_id
    assert s.created
    await s.cleanup()


async def test_connect_is_awaitable(addr: str) -> None:
    b = await varbridge.connect(addr)
    try:
        s = await b.session()
        await s.cleanup()
    finally:
        await b.close()


# -- types ------------------------------------------------------------------

FLOATS = [0.0, -0.0, 0.1, 1 / 3, 1e308, 5e-324, -2.5, math.inf, -math.inf]


async def test_integer_roundtrip(session: Session) -> None:
    await session.register_variable("i", "integer", 0)
    for x in (2**63 - 1, -(2**63), 1, -1, 0, 123456789012345678):
        v = await session.set_variable("i", x)
        assert v.value == x
        got = await session.get_variable("i")
        assert got.value == x
        assert type(got.value) is int
        assert got.type == "integer"
    with pytest.raises(varbridge.InvalidValue):
        await session.set_variable("i", True)
    with pytest.raises(varbridge.InvalidValue):
        await session.set_variable("i", 2**63)


async def test_float_roundtrip_bit_exact(session: Session) -> None:
    await session.register_variable("f", "float", 0.5)
    for x in [*FLOATS, math.nan]:
        await session.set_variable("f", x)
        got = (await session.get_variable("f")).value
        assert struct.pack("<d", got) == struct.pack("<d", x) or (math.isnan(x) and math.isnan(got))
    await session.set_variable("f", 7)  # int is fine for a float variable
    got = await session.get_variable("f")
    assert got.value == 7.0
    assert isinstance(got.value, float)


@pytest.mark.parametrize(
    "text", ["", "plain", "héllo wörld", "日本語テキスト", "🚀 emoji 🧪", "tab\tnl\n"]
)
async def test_string_unicode(session: Session, text: str) -> None:
    await session.register_variable("s", "string", "init")
    await session.set_variable("s", text)
    assert (await session.get_variable("s")).value == text


async def test_boolean_choice_module(session: Session) -> None:
    await session.register_variable("b", "bool", False)
    await session.set_variable("b", True)
    assert (await session.get_variable("b")).value is True
    await session.register_variable(
        "model", "choice", "gpt", constraints={"choices": ["gpt", "claude", "ñandú"]}
    )
    await session.set_variable("model", "ñandú")
    v = await session.get_variable("model")
    assert v.value == "ñandú"
    assert v.type == "choice"
    assert v.constraints["choices"] == ["gpt", "claude", "ñandú"]
    with pytest.raises(varbridge.ConstraintViolation) as ei:
        await session.set_variable("model", "llama")
    assert ei.value.constraint == "choices"
    await session.register_variable(
        "mod", "module", "pkg.a", constraints={"allowed_modules": ["pkg.a", "pkg.b"]}
    )
    await session.set_variable("mod", "pkg.b")
    assert (await session.get_variable("mod")).value == "pkg.b"
    with pytest.raises(varbridge.ConstraintViolation, match="allowed_modules"):
        await session.set_variable("mod", "os")


async def test_embedding_roundtrip(session: Session) -> None:
    vec = np.array([0.25, -1.0, 1e-300, math.inf, 3.0])
    await session.register_variable("e", "embedding", vec, constraints={"dimensions": 5})
    got = (await session.get_variable("e")).value
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float64
    assert got.tobytes() == vec.tobytes()
    await session.set_variable("e", [1, 2, 3, 4, 5])
    assert (await session.get_variable("e")).value.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(varbridge.ConstraintViolation) as ei:
        await session.set_variable("e", [1.0, 2.0])
    assert ei.value.constraint == "dimensions"


TENSOR_CASES = [
    ("float32", (2, 3)),
    ("float32", (4,)),
    ("float64", (3, 1, 2)),
    ("float64", ()),
    ("int8", (5,)),
    ("int8", (2, 2, 2)),
    ("int64", (3, 2)),
    ("uint8", (16,)),
    ("uint8", (2, 0)),
    ("bool", (3, 3)),
    ("float16", (2, 2)),
    ("uint64", (2,)),
    ("int16", (1, 1, 1, 1)),
]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    if dtype == "bool":
        return (np.arange(n) % 3 == 0).reshape(shape)
    if dtype.startswith("float"):
        a = (np.arange(n, dtype=np.float64) - n / 2) / 7
        a = a.astype(dtype)
        if n >= 2:
            a[0], a[1] = np.nan, -np.inf
        return a.reshape(shape)
    info = np.iinfo(dtype)
    a = np.arange(n).astype(dtype)
    if n >= 2:
        a[0], a[-1] = info.min, info.max
    return a.reshape(shape)


@pytest.mark.parametrize(("dtype", "shape"), TENSOR_CASES, ids=lambda x: str(x))
async def test_tensor_roundtrip_numpy(session: Session, dtype: str, shape: tuple[int, ...]) -> None:
    arr = sample(dtype, shape)
    await session.register_variable(
        "t", "tensor", arr, constraints={"dtype": dtype, "shape": list(shape)}
    )
    got = (await session.get_variable("t")).value
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == shape
    assert got.tobytes() == arr.tobytes()
    arr2 = sample(dtype, shape)[::-1] if shape else sample(dtype, shape)
    await session.set_variable("t", np.ascontiguousarray(arr2))
    got2 = (await session.get_variable("t")).value
    assert got2.tobytes() == np.ascontiguousarray(arr2).tobytes()


async def test_tensor_without_numpy(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv, "_np", None)
    await session.register_variable(
        "t", "tensor", [[1, 2, 3], [4, 5, 6]], constraints={"dtype": "int8", "shape": [2, 3]}
    )
    got = (await session.get_variable("t")).value
    assert isinstance(got, varbridge.Tensor)
    assert got.dtype == "int8"
    assert got.shape == (2, 3)
    assert got.tolist() == [[1, 2, 3], [4, 5, 6]]
    await session.set_variable("t", varbridge.Tensor((2, 3), "int8", bytes([255] * 6)))
    assert (await session.get_variable("t")).value.tolist() == [[-1] * 3] * 2
    await session.register_variable("e", "embedding", [1.0, 2.0])
    e = (await session.get_variable("e")).value
    assert e == [1.0, 2.0]
    assert isinstance(e, list)
    await session.register_variable("f", "tensor", [0.5, 1.5], constraints={"dtype": "float32"})
    assert (await session.get_variable("f")).value.tolist() == [0.5, 1.5]


async def test_tensor_constraints(session: Session) -> None:
    await session.register_variable(
        "t",
        "tensor",
        np.zeros((2, 3), np.float32),
        constraints={"dtype": "float32", "shape": [-1, 3]},
    )
    await session.set_variable("t", np.ones((5, 3), np.float32))
    with pytest.raises(varbridge.ConstraintViolation) as ei:
        await session.set_variable("t", np.ones((5, 3), np.float64))
    assert ei.value.constraint == "dtype"
    with pytest.raises(varbridge.ConstraintViolation) as ei:
        await session.set_variable("t", np.ones((3, 2), np.float32))
    assert ei.value.constraint == "shape"


# -- constraints and errors --------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "initial", "constraints", "bad", "name"),
    [
        ("float", 0.7, {"min": 0.0, "max": 2.0}, 2.5, "max"),
        ("float", 0.7, {"min": 0.0, "max": 2.0}, -0.1, "min"),
        ("integer", 5, {"min": 0, "max": 10}, 11, "max"),
        ("string", "abc", {"min_length": 2}, "a", "min_length"),
        ("string", "abc", {"max_length": 4}, "abcde", "max_length"),
        ("string", "abc", {"pattern": "^[a-z]+$"}, "ABC", "pattern"),
    ],
)
async def test_constraint_violation_names_constraint(
    session: Session, type_, initial, constraints, bad, name
) -> None:
    await session.register_variable("v", type_, initial, constraints=constraints)
    with pytest.raises(varbridge.ConstraintViolation) as ei:
        await session.set_variable("v", bad, metadata={"why": "test"})
    e = ei.value
    assert e.constraint == name
    assert name in str(e)
    assert '"v"' in str(e)
    assert isinstance(e, varbridge.InvalidArgument)
    v = await session.get_variable("v")
    assert v.value == initial
    assert v.version == 1


async def test_register_violating_initial(session: Session) -> None:
    with pytest.raises(varbridge.ConstraintViolation):
        await session.register_variable("v", "float", 5.0, constraints={"max": 1.0})
    with pytest.raises(varbridge.VariableNotFound):
        await session.get_variable("v")


async def test_bad_constraint_definition_is_invalid_argument(session: Session) -> None:
    with pytest.raises(varbridge.InvalidArgument) as ei:
        await session.register_variable("v", "float", 0.0, constraints={"min": 2.0, "max": 1.0})
    assert not isinstance(ei.value, varbridge.ConstraintViolation)


async def test_already_exists(session: Session) -> None:
    await session.register_variable("v", "int", 1)
    with pytest.raises(varbridge.AlreadyExists):
        await session.register_variable("v", "int", 2)


async def test_compare_and_set(session: Session) -> None:
    v = await session.register_variable("v", "int", 1)
    assert v.version == 1
    v2 = await session.set_variable("v", 2, expected_version=1)
    assert v2.version == 2
    with pytest.raises(varbridge.VersionConflict) as ei:
        await session.set_variable("v", 3, expected_version=1)
    assert ei.value.code.name == "FAILED_PRECONDITION"
    assert (await session.get_variable("v")).value == 2


async def test_same_value_is_a_noop(session: Session) -> None:
    await session.register_variable("v", "string", "a")
    v = await session.set_variable("v", "a")
    assert v.version == 1


async def test_not_found(session: Session, bridge: varbridge.Bridge) -> None:
    with pytest.raises(varbridge.VariableNotFound) as ei:
        await session.get_variable("missing")
    assert ei.value.code.name == "NOT_FOUND"
    assert "missing" in str(ei.value)
    with pytest.raises(varbridge.VariableNotFound):
        await session.set_variable("missing", 1.0)
    with pytest.raises(varbridge.VariableNotFound):
        await session.delete_variable("missing")
    with pytest.raises(varbridge.SessionNotFound):
        await bridge.get_session("no-such-session-xyz")
    gone = varbridge.SessionContext(bridge, "no-such-session-xyz")
    with pytest.raises(varbridge.SessionNotFound):
        await gone.get_variable("x")
    with pytest.raises(varbridge.SessionNotFound):
        await gone.set_variables({"x": 1})
    with pytest.raises(varbridge.SessionNotFound):
        async for _ in gone.watch_variables(["x"], include_initial=True):
            pass


async def test_type_mismatch_is_client_side(session: Session) -> None:
    await session.register_variable("v", "float", 0.0)
    with pytest.raises(varbridge.InvalidValue):
        await session.set_variable("v", "not a number")
    with pytest.raises(varbridge.ConstraintViolation):  # InvalidValue is one
        await session.set_variable("v", [1.0])


async def test_stale_type_cache_recovers(session: Session, bridge: varbridge.Bridge) -> None:
    await session.register_variable("v", "float", 0.0)
    await session.set_variable("v", 1.0)  # type cached as float
    other = await bridge.session(session.session_id)
    await other.delete_variable("v")
    await other.register_variable("v", "string", "s")
    v = await session.set_variable("v", "now a string")
    assert v.value == "now a string"


# -- reads, lists, deletes, batches -----------------------------------------


async def test_get_variables_and_ids(session: Session) -> None:
    a = await session.register_variable("a", "int", 1)
    await session.register_variable("b", "string", "x")
    res = await session.get_variables([a.id, "b", "nope"])
    found, missing = res
    assert set(found) == {a.id, "b"}
    assert found[a.id].name == "a"
    assert missing == ["nope"]
    assert res.revision == 2
    assert (await session.get_variable(a.id)).value == 1
    await session.set_variable(a.id, 5)
    assert (await session.get_variable("a")).value == 5


async def test_list_variables(session: Session) -> None:
    for name in ("temp_a", "temp_b", "other"):
        await session.register_variable(name, "int", 0)
    assert [v.name for v in await session.list_variables()] == ["other", "temp_a", "temp_b"]
    assert [v.name for v in await session.list_variables("temp_*")] == ["temp_a", "temp_b"]
    with pytest.raises(varbridge.InvalidArgument):
        await session.list_variables("[")


async def test_delete_variable(session: Session) -> None:
    await session.register_variable("v", "int", 3)
    gone = await session.delete_variable("v")
    assert gone.value == 3
    with pytest.raises(varbridge.VariableNotFound):
        await session.get_variable("v")


async def test_metadata_and_source(session: Session) -> None:
    v = await session.register_variable("v", "int", 1, metadata={"unit": "C"}, source="py-test")
    assert v.metadata == {"unit": "C"}
    assert v.source == "py-test"
    v = await session.set_variable("v", 2, metadata={"source": "meta-src"})
    assert v.source == "meta-src"
    v = await session.set_variable("v", 3, source="explicit")
    assert v.source == "explicit"
    assert v.updated_at is not None


async def test_set_variables_atomic(session: Session) -> None:
    await session.register_variable("a", "int", 0, constraints={"max": 10})
    await session.register_variable("b", "float", 0.0)
    await session.register_variable("c", "string", "")
    res = await session.set_variables({"a": 1, "b": 2, "c": "three"}, metadata={"batch": "1"})
    assert sorted(res.changed) == ["a", "b", "c"]
    assert {v.revision for v in res.variables.values()} == {res.revision}
    assert res.variables["b"].value == 2.0
    before = (await session.get_info()).revision
    # one bad value changes nothing
    with pytest.raises(varbridge.ConstraintViolation):
        await session.set_variables({"a": 99, "b": 5.0, "c": "x"})
    got = (await session.get_variables(["a", "b", "c"])).found
    assert (got["a"].value, got["b"].value, got["c"].value) == (1, 2.0, "three")
    assert (await session.get_info()).revision == before
    # one missing identifier changes nothing
    with pytest.raises(varbridge.VariableNotFound):
        await session.set_variables({"a": 2, "nope": 1})
    assert (await session.get_variable("a")).value == 1
    # compare-and-set per identifier
    with pytest.raises(varbridge.VersionConflict):
        await session.set_variables({"a": 3, "b": 3.0}, expected_versions={"a": 1})
    assert (await session.get_variable("b")).value == 2.0


# -- watching ---------------------------------------------------------------


async def collect(
    w: varbridge.Watch, n: int, timeout: float = 10.0
) -> list[varbridge.VariableUpdate]:
    out: list[varbridge.VariableUpdate] = []

    async def run() -> None:
        async for u in w:
            out.append(u)
            if len(out) >= n:
                break

    await asyncio.wait_for(run(), timeout)
    return out


async def test_watch_with_initial_values(session: Session) -> None:
    await session.register_variable("temperature", "float", 0.7)
    await session.register_variable("model", "string", "gpt")
    w = session.watch_variables(["temperature", "model"], include_initial=True)
    first = await w.__anext__()
    second = await w.__anext__()
    assert {first.variable_name, second.variable_name} == {"temperature", "model"}
    assert first.initial
    assert second.initial
    assert first.old_value is None
    assert first.revision == second.revision == 2
    await session.set_variable("temperature", 0.9, metadata={"source": "py"})
    u = await w.__anext__()
    assert (u.variable_name, u.old_value, u.value, u.revision) == ("temperature", 0.7, 0.9, 3)
    assert u.update_type == "value_change"
    assert u.metadata == {"source": "py"}
    assert u.source == "py"
    assert not u.initial
    assert u.variable is not None
    assert u.variable.version == 2
    assert u.timestamp is not None
    await w.aclose()


async def test_watch_without_initial(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    await session.set_variable("v", 1)
    w = session.watch_variables(["v"], include_initial=False)
    await w.start()  # from here on, every change is delivered
    task = asyncio.create_task(collect(w, 2))
    await session.set_variable("v", 2)
    await session.set_variable("v", 3)
    got = await task
    assert [(u.old_value, u.value) for u in got] == [(1, 2), (2, 3)]


async def test_watch_start_fixes_the_starting_point(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    w = session.watch_variables(["v"], include_initial=False)
    await w.start()
    # Nothing has been read yet; the watch reads from the revision start()
    # fixed, so every write from here on arrives.
    for i in range(1, 6):
        await session.set_variable("v", i)
    got = await collect(w, 5)
    assert [u.value for u in got] == [1, 2, 3, 4, 5]


async def test_watch_start_with_initial_values_registers_first(session: Session) -> None:
    # start() returns once the server has the watch: a write right after is
    # a change, never part of the initial values (it raced before).
    await session.register_variable("v", "int", 0)
    for i in range(1, 16):
        async with session.watch_variables(["v"], include_initial=True) as w:
            await w.start()
            await session.set_variable("v", i)
            got = await collect(w, 2)
        assert [(u.update_type, u.old_value, u.value) for u in got] == [
            ("initial_value", None, i - 1),
            ("value_change", i - 1, i),
        ], i


async def test_watch_all_variables_and_deletes(session: Session) -> None:
    await session.register_variable("a", "int", 0)
    w = session.watch_variables([], include_initial=True)
    first = await w.__anext__()  # the snapshot is taken: what follows is a change
    task = asyncio.create_task(collect(w, 3))
    await session.register_variable("b", "int", 7)  # registered later: still watched
    await session.set_variable("b", 8)
    await session.delete_variable("a")
    got = [first, *await task]
    assert [(u.variable_name, u.update_type, u.old_value, u.value) for u in got] == [
        ("a", "initial_value", None, 0),
        ("b", "value_change", None, 7),  # registered after the watch began: no old value
        ("b", "value_change", 7, 8),
        ("a", "deleted", 0, None),
    ]
    deleted = got[-1]
    assert deleted.deleted
    assert deleted.value is None
    assert deleted.old_value == 0


async def test_watch_where_filter(session: Session) -> None:
    await session.register_variable("t", "float", 0.0)
    w = session.watch_variables(["t"], include_initial=False, where="new > 1.0")
    await w.start()  # from here on, every change is delivered
    task = asyncio.create_task(collect(w, 2))
    for x in (0.5, 1.5, 0.2, 3.0):
        await session.set_variable("t", x)
    got = await task
    assert [u.value for u in got] == [1.5, 3.0]


async def test_watch_where_invalid(session: Session) -> None:
    await session.register_variable("t", "float", 0.0)
    with pytest.raises(varbridge.InvalidArgument):
        async for _ in session.watch_variables(["t"], include_initial=True, where="new >>> 1"):
            pass


async def test_watch_client_filter_raising_still_notifies(session: Session) -> None:
    await session.register_variable("t", "float", 0.0)

    def f(old: float, new: float) -> bool:
        if new == 99.0:
            raise RuntimeError("filter bug")
        return new - old >= 1.0

    w = session.watch_variables(["t"], include_initial=False, filter=f)
    await w.start()  # from here on, every change is delivered
    task = asyncio.create_task(collect(w, 3))
    for x in (0.5, 2.0, 2.1, 99.0, 100.0, 100.5):
        await session.set_variable("t", x)
    got = await task
    assert [u.value for u in got] == [2.0, 99.0, 100.0]
    assert w.filter_errors == 1
    assert w.filtered >= 2


async def test_watch_start_revision_resume(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    revs = []
    for i in range(1, 11):
        revs.append((await session.set_variable("v", i)).revision)
    w = session.watch_variables(["v"], start_revision=revs[4])
    got = await collect(w, 6)
    assert [u.value for u in got] == [5, 6, 7, 8, 9, 10]
    assert [u.revision for u in got] == revs[4:]


async def test_watch_batch_shares_revision(session: Session) -> None:
    for n in "abc":
        await session.register_variable(n, "int", 0)
    w = session.watch_variables(["a", "b", "c"], include_initial=False)
    await w.start()  # from here on, every change is delivered
    task = asyncio.create_task(collect(w, 4))
    res = await session.set_variables({"a": 1, "b": 2, "c": 3})
    await session.set_variable("a", 10)
    got = await task
    assert [u.revision for u in got[:3]] == [res.revision] * 3
    assert [u.last_in_revision for u in got[:3]] == [False, False, True]
    assert got[3].revision == res.revision + 1


async def test_watch_resync_outside_history(start_server) -> None:
    srv = start_server("--history-limit", "5")
    async with varbridge.connect(srv.addr) as b:
        s = await b.session("resync")
        await s.register_variable("v", "int", 0)
        for i in range(1, 20):
            await s.set_variable("v", i)
        w = s.watch_variables(["v"], start_revision=2)
        u = await w.__anext__()
        assert u.resync
        assert u.value == 19
        await s.set_variable("v", 20)
        u = await w.__anext__()
        assert not u.resync
        assert u.value == 20
        await w.aclose()


async def get_watch_count(session: Session) -> int:
    return (await session.get_info()).watch_count


async def eventually(fn, expect: Any, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got == expect or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


async def test_leaving_the_loop_cancels_the_rpc(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    for i in range(50):
        async for u in session.watch_variables(["v"], include_initial=True):
            assert u.initial
            break
        if i % 10 == 0:
            assert await eventually(lambda: get_watch_count(session), 0) == 0

    # exceptions and cancellation
    with pytest.raises(ZeroDivisionError):
        async for _ in session.watch_variables(["v"], include_initial=True):
            1 / 0  # noqa: B018

    async def forever() -> None:
        async for _ in session.watch_variables(["v"], include_initial=True):
            pass

    tasks = [asyncio.create_task(forever()) for _ in range(20)]
    assert await eventually(lambda: get_watch_count(session), 20) == 20
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await eventually(lambda: get_watch_count(session), 0) == 0
    # the server still works
    await session.set_variable("v", 1)
    assert (await session.get_variable("v")).value == 1


async def test_cleanup_ends_watch_with_session_closed(session: Session, bridge) -> None:
    await session.register_variable("v", "int", 0)
    w = session.watch_variables(["v"], include_initial=True, backoff_base=0.01)
    await w.__anext__()
    other = await bridge.session(session.session_id)
    await other.cleanup()
    # SessionClosed (reason SESSION_CLOSED), Go's ErrSessionClosed; still a
    # SessionNotFound for code written before it existed.
    with pytest.raises(varbridge.SessionClosed) as ei:
        await asyncio.wait_for(w.__anext__(), 10)
    assert isinstance(ei.value, varbridge.SessionNotFound)
    assert ei.value.reason == "SESSION_CLOSED"
    assert ei.value.cause == "cleaned_up"
    assert w.closed


async def test_watch_unknown_identifier(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    with pytest.raises(varbridge.VariableNotFound) as ei:
        async for _ in session.watch_variables(["v", "nope"], include_initial=True):
            pass
    assert "nope" in str(ei.value)


async def test_heartbeats_advance_resume_point_of_quiet_watch(session: Session) -> None:
    await session.register_variable("quiet", "int", 0)
    await session.register_variable("busy", "int", 0)
    w = session.watch_variables(["quiet"], include_initial=False, heartbeat_interval_ms=20)
    pending = asyncio.ensure_future(w.__anext__())
    last = 0
    for i in range(1, 6):
        last = (await session.set_variable("busy", i)).revision
    assert await eventually(lambda: _ready(w.last_revision), last) == last
    assert not pending.done()
    v = await session.set_variable("quiet", 1)
    u = await asyncio.wait_for(pending, 10)
    assert (u.variable_name, u.revision) == ("quiet", v.revision)
    await w.aclose()


async def _ready(x: int) -> int:
    return x


async def test_watch_coalesce(session: Session) -> None:
    await session.register_variable("v", "int", 0)
    start = (await session.get_info()).revision + 1
    for i in range(1, 201):
        await session.set_variable("v", i)
    w = session.watch_variables(["v"], start_revision=start, coalesce=True)
    seen = []
    async for u in w:
        seen.append(u.value)
        if u.value == 200:
            break
    assert seen == sorted(seen)
    assert seen[-1] == 200
    assert len(seen) <= 200


async def test_server_limits(start_server) -> None:
    srv = start_server("--max-watches", "2", "--max-value-bytes", "1024")
    async with varbridge.connect(srv.addr) as b:
        s = await b.session("limits")
        await s.register_variable("v", "string", "")
        w1 = await s.watch_variables(["v"], include_initial=True).start()
        w2 = await s.watch_variables(["v"], include_initial=True).start()
        await w1.__anext__()
        await w2.__anext__()
        with pytest.raises(varbridge.ResourceExhausted) as ei:
            async for _ in s.watch_variables(["v"], include_initial=True):
                pass
        assert ei.value.limit == "max_watches_per_session"
        await w1.aclose()
        assert await eventually(lambda: get_watch_count(s), 1) == 1
        w3 = s.watch_variables(["v"], include_initial=True)  # room again
        assert (await w3.__anext__()).initial
        await w3.aclose()
        await w2.aclose()
        with pytest.raises(varbridge.ResourceExhausted) as ei2:
            await s.set_variable("v", "x" * 4096)
        assert ei2.value.limit == "max_value_bytes"
        assert (await s.get_variable("v")).value == ""


async def test_open_watch_keeps_session_alive(bridge: varbridge.Bridge, session_id: str) -> None:
    # An open watch counts as use (issue 10 item 4): a watch-only worker is
    # not cut off at the TTL; the TTL restarts when the last watch closes.
    s = await bridge.session(session_id, ttl=1)
    await s.register_variable("v", "int", 0)
    w = s.watch_variables(["v"], backoff_base=0.05)
    await w.start()
    await asyncio.sleep(2.5)
    other = await bridge.session(session_id)  # joins: still there
    assert not other.created
    await other.set_variable("v", 1)
    u = await asyncio.wait_for(w.__anext__(), 10)
    assert (u.value, u.resync) == (1, False)
    await w.aclose()
    deadline = asyncio.get_running_loop().time() + 15
    with pytest.raises(varbridge.SessionNotFound):
        while asyncio.get_running_loop().time() < deadline:
            await s.get_info()
            await asyncio.sleep(0.2)


async def test_heartbeat_keeps_session_alive(bridge: varbridge.Bridge, session_id: str) -> None:
    s = await bridge.session(session_id, ttl=1)
    for _ in range(4):
        await asyncio.sleep(0.4)
        await s.heartbeat()
    assert (await s.get_info()).session_id == session_id
    await s.cleanup()


async def test_concurrent_writers_watchers_see_one_history(addr: str, session: Session) -> None:
    """Watchers that start while several clients write: each sees its snapshot,
    then every later change once, in revision order, with no gap (old values
    chain from the snapshot)."""
    names = [f"x{i}" for i in range(6)]
    for n in names:
        await session.register_variable(n, "int", 0)
    per_writer = 150
    n_writers = 4

    async def writer(k: int) -> None:
        async with varbridge.connect(addr) as b:
            s = await b.session(session.session_id)
            for i in range(per_writer):
                n = names[(i + k) % len(names)]
                if i % 7 == 0:
                    await s.set_variables(
                        {n: k * 10_000 + i, names[(i + k + 1) % 6]: -k * 10_000 - i}
                    )
                else:
                    await s.set_variable(n, k * 10_000 + i)

    async def watcher() -> list[varbridge.VariableUpdate]:
        out: list[varbridge.VariableUpdate] = []
        async with session.watch_variables(names, include_initial=True) as w:
            async for u in w:
                out.append(u)
                if u.variable_name == "x0" and u.value == -1:
                    return out
        return out

    writers = [asyncio.create_task(writer(k)) for k in range(1, n_writers + 1)]
    await asyncio.sleep(0.05)
    watchers = [asyncio.create_task(watcher()) for _ in range(3)]
    await asyncio.gather(*writers)
    await session.set_variable("x0", -1)
    results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    final = {v.name: v.value for v in await session.list_variables()}

    for ups in results:
        initial = [u for u in ups if u.initial]
        assert len(initial) == len(names)
        snap = initial[0].revision
        assert all(u.revision == snap for u in initial)
        changes = ups[len(initial) :]
        assert all(not u.initial for u in changes)
        revs = [u.revision for u in changes]
        assert revs == sorted(revs)
        assert not changes or revs[0] > snap
        assert len({(u.revision, u.variable_id) for u in changes}) == len(changes)
        state = {u.variable_name: u.value for u in initial}
        for u in changes:
            assert u.old_value == state[u.variable_name], "gap in the history"
            state[u.variable_name] = u.value
        assert state == final
    # watchers that started at different snapshots agree on the common part
    tails = [
        [(u.revision, u.variable_name, u.value) for u in ups if not u.initial] for ups in results
    ]
    common = max(t[0][0] for t in tails if t)
    cut = [sorted(x for x in t if x[0] >= common) for t in tails]
    assert cut[0] == cut[1] == cut[2]
