"""The README's Python example runs against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "readme" / "example.py"


def test_readme_example_runs(addr: str) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={**os.environ, "VARBRIDGE_ADDR": addr},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("temperature None -> 0.7 at "), out
    assert lines[1].startswith("temperature 0.7 -> 0.9 at "), out
    assert lines[2].startswith("rejected: "), out
    assert "max" in lines[2], out
