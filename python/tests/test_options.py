"""Issue 14 item 4: the watch options are declared once (``WatchOptions``),
the keyword arguments of both ``watch_variables`` come from it, and
``varbridge.watch`` does not import ``varbridge.client``."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import varbridge
import varbridge.sync
from varbridge._options import WatchArgs, WatchOptions

from .test_api import run_mypy

FIELDS = {f.name: f for f in dataclasses.fields(WatchOptions)}


def test_keyword_types_are_the_options_fields() -> None:
    # The TypedDict that types **kwargs names every field but batch_window
    # (a keyword of its own: it picks the return type), with the same types.
    declared = {n: getattr(t, "__forward_arg__", t) for n, t in WatchArgs.__annotations__.items()}
    assert declared == {n: f.type for n, f in FIELDS.items() if n != "batch_window"}


@pytest.mark.parametrize(
    "method",
    [varbridge.SessionContext.watch_variables, varbridge.sync.SyncSession.watch_variables],
)
def test_signature_shows_every_option_with_its_default(method: object) -> None:
    params = inspect.signature(method).parameters  # type: ignore[arg-type]
    assert list(params) == ["self", "identifiers", *FIELDS, "options"]
    for name, f in FIELDS.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default == f.default
    assert params["options"].default is None


def test_options_validate_and_merge() -> None:
    for bad, msg in [
        ({"debounce": 0}, "debounce must be positive"),
        ({"batch_window": -1.0}, "batch_window must be positive"),
        ({"max_retries": 0}, "max_retries must be >= 1"),
        ({"start_revision": 0}, "start_revision must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            WatchOptions(**bad)  # type: ignore[arg-type]
    base = WatchOptions(where="new > 1", max_retries=3)
    assert WatchOptions.of(base, {}) is base
    assert WatchOptions.of(base, {"max_retries": 4}) == WatchOptions(where="new > 1", max_retries=4)
    assert WatchOptions.of(None, {"coalesce": True}) == WatchOptions(coalesce=True)
    with pytest.raises(TypeError):
        WatchOptions.of(None, {"no_such_option": 1})


async def test_watch_takes_the_options_object() -> None:
    # Nothing is dialled until the watch is read.
    async with varbridge.connect("127.0.0.1:9") as bridge:
        s = varbridge.SessionContext(bridge, "s")
        opts = WatchOptions(where="true", heartbeat_interval_ms=50)
        w = s.watch_variables(["a"], options=opts, max_retries=2)
        assert isinstance(w, varbridge.Watch)
        assert w.options == dataclasses.replace(opts, max_retries=2)
        bw = s.watch_variables(options=WatchOptions(batch_window=0.5, debounce=0.1))
        assert isinstance(bw, varbridge.BatchWatch)
        assert (bw.window, bw.watch.options.debounce) == (0.5, 0.1)
        with pytest.raises(ValueError, match="debounce must be positive"):
            s.watch_variables(debounce=-1)


def test_watch_does_not_import_the_client() -> None:
    code = (
        "import sys, varbridge.watch; "
        "assert 'varbridge.client' not in sys.modules, 'varbridge.watch imports the client'"
    )
    # A fresh interpreter imports only varbridge.watch (the package's
    # __init__ imports the client; skip it by importing the modules by path).
    src = Path(varbridge.__file__).parent.parent
    script = f"""
import importlib.util, sys, types
pkg = types.ModuleType("varbridge"); pkg.__path__ = [{str(src / "varbridge")!r}]
sys.modules["varbridge"] = pkg
{code.replace("import sys, varbridge.watch; ", "import varbridge.watch; ")}
"""
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert r.returncode == 0, r.stderr
    # Nor for type checking: no import of it anywhere in the module.
    tree = ast.parse((src / "varbridge" / "watch.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    }
    assert "varbridge.client" not in imported
    assert "varbridge.sync" not in imported


TYPED = """
from typing_extensions import assert_type

import varbridge
import varbridge.sync
from varbridge.models import VariableUpdate


async def main(s: varbridge.SessionContext, ss: varbridge.sync.SyncSession) -> None:
    assert_type(s.watch_variables(["a"], include_initial=True), varbridge.Watch)
    assert_type(s.watch_variables(batch_window=0.5, debounce=0.1), varbridge.BatchWatch)
    opts = varbridge.WatchOptions(where="true")
    assert_type(s.watch_variables(options=opts), varbridge.Watch | varbridge.BatchWatch)
    assert_type(ss.watch_variables(["a"]), varbridge.sync.SyncWatch[VariableUpdate])
    assert_type(
        ss.watch_variables(batch_window=1.0), varbridge.sync.SyncWatch[list[VariableUpdate]]
    )
    s.watch_variables(include_initial="yes")
    ss.watch_variables(max_retires=3)
"""


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_mypy_types_the_keywords_and_the_overloads(tmp_path: Path) -> None:
    r = run_mypy(tmp_path, "typed", TYPED)
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[1] for e in errors] == ["18", "19"], r.stdout + r.stderr
