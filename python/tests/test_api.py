"""Issue 10, Python friction: typed arguments, clear argument errors, the
session as ``async with``, and ``__version__`` from the package metadata.

* ``type`` is a Literal and ``constraints`` a TypedDict: ``mypy --strict``
  flags a misspelt type name or constraint key;
* an unknown type name (or constraint key) raises InvalidArgument, a
  ValueError and not a ConstraintViolation, before any RPC;
* ``async with bridge.session(id, cleanup=True) as s:`` removes the session
  on exit; without ``cleanup`` the session stays; the context's watches are
  closed either way;
* ``varbridge.__version__`` is the installed distribution's version.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import varbridge

from .conftest import REPO_ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("bad", ["flaot", "number", "", "VARIABLE_TYPE_NOPE"])
async def test_unknown_type_name_is_a_value_error_before_any_rpc(bad: str) -> None:
    # Nothing listens here: any RPC would wait out its 5 s deadline.
    async with varbridge.connect(f"127.0.0.1:{free_port()}", timeout=5) as bridge:
        s = varbridge.SessionContext(bridge, "nobody")
        t0 = time.monotonic()
        with pytest.raises(varbridge.InvalidArgument, match="unknown variable type") as ei:
            await s.register_variable("x", bad, 1)  # type: ignore[arg-type]
        assert time.monotonic() - t0 < 1
        assert isinstance(ei.value, ValueError)
        assert not isinstance(ei.value, varbridge.ConstraintViolation)
        with pytest.raises(varbridge.InvalidArgument, match="unknown constraint") as ei:
            await s.register_variable("x", "float", 1.0, constraints={"maximum": 2})  # type: ignore[typeddict-unknown-key]
        assert not isinstance(ei.value, varbridge.ConstraintViolation)


async def test_unknown_type_name_registers_nothing(session: varbridge.SessionContext) -> None:
    with pytest.raises(ValueError, match="unknown variable type"):
        await session.register_variable("x", "flaot", 1.0)  # type: ignore[arg-type]
    assert await session.list_variables() == []
    v = await session.register_variable("x", "float", 1.0, constraints={"min": 0.0, "max": 2.0})
    assert (v.type, v.constraints) == ("float", {"min": 0.0, "max": 2.0})


GOOD = """
import varbridge

async def main(s: varbridge.SessionContext) -> None:
    await s.register_variable("t", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
    await s.register_variable("m", "choice", "a", constraints={"choices": ["a", "b"]})
    await s.register_variable("e", "embedding", [0.0, 1.0], constraints={"dimensions": 2})
    c: varbridge.Constraints = {"shape": [2, 2], "dtype": "float32"}
    await s.register_variable("x", "tensor", None, constraints=c)
"""

BAD = """
import varbridge

async def main(s: varbridge.SessionContext) -> None:
    await s.register_variable("t", "flaot", 0.7)
    await s.register_variable("u", "float", 0.7, constraints={"mni": 0.0})
    await s.register_variable("v", "float", 0.7, constraints={"min": "zero"})
"""


def run_mypy(tmp_path: Path, name: str, source: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / f"{name}.py"
    f.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(f),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_mypy_strict_catches_typos(tmp_path: Path) -> None:
    good = run_mypy(tmp_path, "good", GOOD)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_mypy(tmp_path, "bad", BAD)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    out = bad.stdout
    assert "bad.py:5: error" in out  # "flaot"
    assert "bad.py:6: error" in out  # "mni"
    assert "bad.py:7: error" in out  # "zero" is not a float
    assert "'flaot'" in out


async def test_session_async_with_cleanup(bridge: varbridge.Bridge, session_id: str) -> None:
    async with bridge.session(session_id, cleanup=True) as s:
        assert isinstance(s, varbridge.SessionContext)
        await s.register_variable("v", "integer", 1)
        w = await s.watch_variables(["v"]).start()
    assert w.closed
    with pytest.raises(varbridge.SessionNotFound):
        await bridge.get_session(session_id)


async def test_session_async_with_keeps_the_session_by_default(
    bridge: varbridge.Bridge, session_id: str
) -> None:
    async with bridge.session(session_id) as s:
        await s.register_variable("v", "integer", 1)
        w = await s.watch_variables(["v"]).start()
    assert w.closed  # the context's watches end with it
    info = await bridge.get_session(session_id)
    assert info.variable_count == 1
    # the older forms still work: await, and async with on the context
    s2 = await bridge.session(session_id, cleanup=True)
    async with s2:
        assert (await s2.get_variable("v")).value == 1
    with pytest.raises(varbridge.SessionNotFound):
        await bridge.get_session(session_id)


async def test_cleanup_on_exit_after_an_exception(
    bridge: varbridge.Bridge, session_id: str
) -> None:
    with pytest.raises(RuntimeError):
        async with bridge.session(session_id, cleanup=True) as s:
            await s.register_variable("v", "integer", 1)
            raise RuntimeError("boom")
    with pytest.raises(varbridge.SessionNotFound):
        await bridge.get_session(session_id)
    # leaving a block whose session is already gone is fine
    async with bridge.session(session_id, cleanup=True) as s:
        await s.cleanup()
    await asyncio.sleep(0)


def test_version_from_package_metadata() -> None:
    assert varbridge.__version__ == importlib.metadata.version("varbridge")
    pyproject = (REPO_ROOT / "python" / "pyproject.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert m is not None
    assert varbridge.__version__ == m.group(1)
