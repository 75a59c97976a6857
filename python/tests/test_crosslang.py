"""Go <-> Python: the Go CLI (`varbridge set/get --json`) against the Python client.

* Go writes, Python watches: every change arrives, in order, once.
* Python writes, Go reads back: values are bit-exact (protojson of the Go side
  parsed into the same messages).
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

import varbridge
from varbridge import _convert as cv
from varbridge.v1 import varbridge_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def cli(binary: Path, addr: str, session: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "--addr",
        addr,
        "--session",
        session,
        "--timeout",
        "20s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"varbridge {' '.join(args)} failed: {err.decode()}")
    return out.decode()


async def cli_get(binary: Path, addr: str, session: str, name: str) -> pb.Variable:
    out = await cli(binary, addr, session, "--json", "get", name)
    # json.loads reads "-0" as the int 0: keep the sign of a negative zero.
    data = json.loads(out, parse_int=lambda s: -0.0 if s == "-0" else int(s))
    resp = json_format.ParseDict(data, pb.GetVariableResponse(), ignore_unknown_fields=True)
    return resp.variable


# -- Go writes, Python watches -------------------------------------------------


async def test_cli_writes_python_watches(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    sid = session.session_id
    await session.register_variable("temperature", "float", 0.0)
    await session.register_variable("model", "string", "none")
    await session.register_variable("steps", "integer", 0)

    received: list[varbridge.VariableUpdate] = []
    ready = asyncio.Event()
    n_expected = 0

    async def watcher(w: varbridge.Watch) -> None:
        async for u in w:
            received.append(u)
            if u.initial and sum(1 for r in received if r.initial) == 3:
                ready.set()
            if not u.initial and len([r for r in received if not r.initial]) == n_expected:
                return

    writes: list[tuple[str, Any]] = []
    for i in range(1, 21):
        writes.append(("temperature", i / 10))
        if i % 5 == 0:
            writes.append(("model", f"model-{i}-ñ"))
    n_expected = len(writes) + 3  # plus one --batch of three below

    async with session.watch_variables(
        ["temperature", "model", "steps"], include_initial=True
    ) as w:
        task = asyncio.create_task(watcher(w))
        await asyncio.wait_for(ready.wait(), 10)
        for name, value in writes:
            await cli(
                varbridge_bin,
                addr,
                sid,
                "set",
                name,
                repr(value) if isinstance(value, float) else value,
            )
        await cli(
            varbridge_bin,
            addr,
            sid,
            "set",
            "--batch",
            "temperature=1.5",
            "model=final",
            "steps=9223372036854775807",
            "--meta",
            "from=go",
        )
        await asyncio.wait_for(task, 30)

    changes = [u for u in received if not u.initial]
    assert [(u.variable_name, u.value) for u in changes[: len(writes)]] == writes
    batch = changes[len(writes) :]
    assert {(u.variable_name, u.value) for u in batch} == {
        ("temperature", 1.5),
        ("model", "final"),
        ("steps", 2**63 - 1),
    }
    assert len({u.revision for u in batch}) == 1
    assert all(u.metadata == {"from": "go"} for u in batch)
    assert all(u.source == "cli" for u in changes)
    revs = [u.revision for u in changes]
    assert revs == sorted(revs)
    assert len(set(revs)) == len(writes) + 1
    # old values chain: nothing lost in between
    last: dict[str, Any] = {"temperature": 0.0, "model": "none"}
    for u in changes[: len(writes)]:
        assert u.old_value == last[u.variable_name]
        last[u.variable_name] = u.value


async def test_cli_special_values_reach_python_exactly(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    sid = session.session_id
    await session.register_variable("f", "float", 0.0)
    await session.register_variable("i", "integer", 0)
    for text, expect in [
        ("nan", math.nan),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("5e-324", 5e-324),
        ("0.1", 0.1),
        ("-0", -0.0),
    ]:
        await cli(varbridge_bin, addr, sid, "set", "--", "f", text)
        got = (await session.get_variable("f")).value
        if math.isnan(expect):
            assert math.isnan(got)
        else:
            assert struct.pack("<d", got) == struct.pack("<d", expect), text
    for x in (-(2**63), 2**63 - 1):
        await cli(varbridge_bin, addr, sid, "set", "--", "i", str(x))
        assert (await session.get_variable("i")).value == x


# -- Python writes, Go reads back -------------------------------------------------

FLOATS = [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan]


async def test_python_writes_cli_reads_bit_exact(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    sid = session.session_id
    await session.register_variable("f", "float", 0.0)
    for x in FLOATS:
        await session.set_variable("f", x)
        got = cv.from_value((await cli_get(varbridge_bin, addr, sid, "f")).value)
        assert struct.pack("<d", got) == struct.pack("<d", x) or (math.isnan(x) and math.isnan(got))

    await session.register_variable("i", "integer", 0)
    for x in (2**63 - 1, -(2**63), -1, 12345678901234567):
        await session.set_variable("i", x)
        assert cv.from_value((await cli_get(varbridge_bin, addr, sid, "i")).value) == x

    await session.register_variable("s", "string", "")
    for text in ("日本語", "🚀 emoji", 'quote " and \\ backslash', "nul\x00inside", ""):
        await session.set_variable("s", text)
        assert (await cli_get(varbridge_bin, addr, sid, "s")).value.string_value == text

    await session.register_variable("b", "boolean", False)
    await session.set_variable("b", True)
    assert (await cli_get(varbridge_bin, addr, sid, "b")).value.bool_value is True

    vec = np.array([0.1, -1e-310, 3.5, math.inf])
    await session.register_variable("e", "embedding", vec)
    got_vec = (await cli_get(varbridge_bin, addr, sid, "e")).value.embedding_value.values
    assert np.array(list(got_vec)).tobytes() == vec.tobytes()


TENSORS = [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array([[np.nan, -np.inf], [1e-40, 3.0]], dtype=np.float64),
    np.array([-128, 0, 127], dtype=np.int8),
    np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([True, False, True]),
    np.array([1.5, -2.25], dtype=np.float16),
    np.array(7, dtype=np.int32),
]


@pytest.mark.parametrize("arr", TENSORS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
async def test_python_tensor_cli_reads_bit_exact(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext, arr: np.ndarray
) -> None:
    await session.register_variable("t", "tensor", arr)
    t = (await cli_get(varbridge_bin, addr, session.session_id, "t")).value.tensor_value
    assert t.dtype == arr.dtype.name
    assert list(t.shape) == list(arr.shape)
    assert t.data == arr.astype(arr.dtype.newbyteorder("<")).tobytes()


async def test_cli_tensor_reaches_python(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    sid = session.session_id
    await cli(
        varbridge_bin,
        addr,
        sid,
        "register",
        "w",
        "tensor",
        json.dumps({"shape": [2, 2], "dtype": "float32", "data": [1, 2.5, -3, 4]}),
    )
    got = (await session.get_variable("w")).value
    assert got.dtype == np.float32
    assert got.tolist() == [[1.0, 2.5], [-3.0, 4.0]]


# -- Go BridgedState watcher: Python writes, Go watches ---------------------------


def _json_value(x: Any) -> Any:
    """A value as `varbridge watch --json` prints it, back in Python terms."""
    if isinstance(x, str) and x in ("NaN", "Infinity", "-Infinity"):
        return float(x.replace("Infinity", "inf"))
    return x


async def test_python_writes_go_bridgedstate_watches(
    varbridge_bin: Path, addr: str, session: varbridge.SessionContext
) -> None:
    """`varbridge watch --json` (a Go BridgedState watch) sees every Python write,
    in order, once, with exact values."""
    names = ["temperature", "model", "steps"]
    await session.register_variable("temperature", "float", 0.0)
    await session.register_variable("model", "string", "")
    await session.register_variable("steps", "integer", 0)
    proc = await asyncio.create_subprocess_exec(
        str(varbridge_bin),
        "--addr",
        addr,
        "--session",
        session.session_id,
        "--json",
        "watch",
        "--initial",
        *names,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []

    async def read_until(n: int) -> None:
        assert proc.stdout is not None
        while len(lines) < n:
            line = await proc.stdout.readline()
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"varbridge watch ended: {err.decode()}")
            lines.append(json.loads(line, parse_int=lambda t: -0.0 if t == "-0" else int(t)))

    try:
        await asyncio.wait_for(read_until(3), 20)  # the initial values
        assert {(d["update"], d["name"]) for d in lines} == {("initial", n) for n in names}
        expected: list[tuple[int, str, Any]] = []
        floats = [0.1, 1 / 3, -0.0, 5e-324, math.inf, -math.inf, 1e308, -2.5]
        for i in range(300):
            if i % 10 == 9:
                res = await session.set_variables(
                    {"temperature": float(i), "model": f"m-{i}-ü", "steps": -(2**63) + i}
                )
                expected += [
                    (res.revision, "temperature", float(i)),
                    (res.revision, "model", f"m-{i}-ü"),
                    (res.revision, "steps", -(2**63) + i),
                ]
            else:
                x = floats[i] if i < len(floats) else floats[i % len(floats)] + i
                v = await session.set_variable("temperature", x)
                expected.append((v.revision, "temperature", x))
        await session.set_variable("temperature", math.nan)
        await asyncio.wait_for(read_until(3 + len(expected) + 1), 60)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()

    changes = lines[3:]
    assert all(d["update"] == "change" for d in changes)
    assert math.isnan(_json_value(changes[-1]["new"]))
    got = [
        (
            d["revision"],
            d["name"],
            float(_json_value(d["new"])) if d["type"] == "float" else d["new"],
        )
        for d in changes[:-1]
    ]
    revs = [g[0] for g in got]
    assert revs == sorted(revs)

    def key(t: tuple[int, str, Any]) -> tuple[int, str, bytes]:
        r, n, v = t
        return r, n, struct.pack("<d", v) if isinstance(v, float) else repr(v).encode()

    assert sorted(map(key, got)) == sorted(map(key, expected))
