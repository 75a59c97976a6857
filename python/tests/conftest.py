"""Fixtures: the real Go server, built from this repo (or $VARBRIDGE_BIN)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import varbridge
from varbridge.v1 import varbridge_pb2 as pb
from varbridge.v1 import varbridge_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    addr: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def varbridge_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server binary: $VARBRIDGE_BIN, or `go build ./cmd/varbridge` once per run."""
    env = os.environ.get("VARBRIDGE_BIN")
    if env:
        p = Path(env)
        if not p.is_file():
            pytest.fail(f"VARBRIDGE_BIN={env} does not exist")
        return p
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain and no $VARBRIDGE_BIN: cannot build the server")
    out = tmp_path_factory.mktemp("bin") / "varbridge"
    r = subprocess.run(
        ["go", "build", "-o", str(out), "./cmd/varbridge"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if r.returncode != 0:
        pytest.fail(f"go build ./cmd/varbridge failed:\n{r.stdout}\n{r.stderr}")
    return out


def wait_ready(
    addr: str, proc: subprocess.Popen[bytes], *, tls: bool, timeout: float = 30.0
) -> None:
    """Wait until the server accepts connections and (plaintext) answers an RPC."""
    deadline = time.monotonic() + timeout
    host, port = addr.rsplit(":", 1)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError as e:
            last = e
            time.sleep(0.05)
            continue
        if tls:
            return
        with grpc.insecure_channel(addr) as ch:
            stub = pb_grpc.BridgeServiceStub(ch)
            try:
                stub.GetSession(pb.GetSessionRequest(session_id="__ready__"), timeout=1)
                return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return  # the server answers (NOT_FOUND, or UNAUTHENTICATED with auth on)
                last = e
        time.sleep(0.05)
    raise TimeoutError(f"server at {addr} not ready: {last}")


@pytest.fixture(scope="session")
def start_server(
    varbridge_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Factory: start a server with extra flags; all are stopped at the end."""
    started: list[Server] = []
    logdir = tmp_path_factory.mktemp("serverlogs")
    help_text = subprocess.run(
        [str(varbridge_bin), "serve", "--help"], capture_output=True, text=True, check=False
    )
    has_memory = "--memory" in help_text.stdout + help_text.stderr

    def start(*flags: str, port: int | None = None) -> Server:
        if has_memory and "--data-dir" not in flags and "--memory" not in flags:
            # Test servers keep nothing, unless a test asks for a data dir:
            # a durable default would put every one in the same ./varbridge.data.
            flags = (*flags, "--memory")
        port = port or free_port()
        addr = f"127.0.0.1:{port}"
        log = logdir / f"serve-{port}-{len(started)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(varbridge_bin), "serve", "--listen", addr, "--log-level", "warn", *flags],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        srv = Server(addr, proc, log)
        started.append(srv)
        try:
            wait_ready(addr, proc, tls="--tls-cert" in flags)
        except Exception as e:
            srv.stop()
            pytest.fail(f"server did not start: {e}\n{srv.log_tail()}")
        return srv

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Server]) -> Server:
    """One shared server for the whole run."""
    return start_server()


@pytest.fixture
def addr(server: Server) -> str:
    if server.proc.poll() is not None:
        pytest.fail(f"the shared server died:\n{server.log_tail()}")
    return server.addr


@pytest.fixture
async def bridge(addr: str) -> AsyncIterator[varbridge.Bridge]:
    async with varbridge.connect(addr) as b:
        yield b


@pytest.fixture
def session_id() -> str:
    return f"py-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def session(
    bridge: varbridge.Bridge, session_id: str
) -> AsyncIterator[varbridge.SessionContext]:
    s = await bridge.session(session_id)
    yield s
    with contextlib.suppress(varbridge.VarbridgeError):
        await s.cleanup()
