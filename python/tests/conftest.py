"""Fixtures: the real Go server, built from this repo (or $VARBRIDGE_BIN).

Cluster mode (VARBRIDGE_TEST_CLUSTER=1, ``make test-cluster``): the shared
server is two servers over one three-member etcd cluster (the etcd binary is
$VARBRIDGE_ETCD_BIN, else .bin/etcd from ``make build``), and ``addr`` lists
both (``ipv4:127.0.0.1:p1,127.0.0.1:p2``, which ``varbridge.connect`` and gRPC
channels take), so a test's calls and watches spread over the two and a watch
on one sees the writes made through the other. Servers a test starts itself
stay single.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
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

CLUSTER = os.environ.get("VARBRIDGE_TEST_CLUSTER") == "1"
CLUSTER_SERVERS = 2
ETCD_MEMBERS = 3
# etcd's request limit in cluster mode, above its default 1.5 MiB: a write
# is one etcd request holding its variables and their history record, and
# the tests' largest batches (test_cuts) are a few MiB.
ETCD_MAX_REQUEST_BYTES = str(16 << 20)


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
        if has_memory and not {"--data-dir", "--memory", "--etcd-endpoints"} & set(flags):
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


def etcd_bin() -> Path:
    """The etcd binary: $VARBRIDGE_ETCD_BIN, else the .bin/etcd `make build` makes."""
    p = Path(os.environ.get("VARBRIDGE_ETCD_BIN") or REPO_ROOT / ".bin" / "etcd")
    if not p.is_file():
        pytest.fail(f"no etcd binary at {p}: run `make build` or set VARBRIDGE_ETCD_BIN")
    return p


def get_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def etcd_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-member etcd cluster for the whole run: its client endpoints,
    comma-separated, once every member serves (/readyz)."""
    base = tmp_path_factory.mktemp("etcd")
    members = [(f"m{i}", free_port(), free_port()) for i in range(ETCD_MEMBERS)]
    initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    token = f"pytest-{uuid.uuid4().hex}"
    # etcd takes ETCD_ variables as flags.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for name, client, peer in members:
        log = base / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [
                    str(etcd_bin()),
                    *("--name", name, "--data-dir", str(base / f"{name}.etcd")),
                    *("--listen-client-urls", f"http://127.0.0.1:{client}"),
                    *("--advertise-client-urls", f"http://127.0.0.1:{client}"),
                    *("--listen-peer-urls", f"http://127.0.0.1:{peer}"),
                    *("--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"),
                    *("--initial-cluster", initial, "--initial-cluster-state", "new"),
                    *("--initial-cluster-token", token),
                    # As internal/etcdtest: short elections, ten heartbeats each.
                    *("--heartbeat-interval", "50", "--election-timeout", "500"),
                    *("--max-request-bytes", ETCD_MAX_REQUEST_BYTES),
                    # The tests keep nothing across a crash of the machine.
                    "--unsafe-no-fsync",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        procs.append((proc, log))

    def stop() -> None:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    deadline = time.monotonic() + 60
    pending = list(range(ETCD_MEMBERS))
    while pending:
        for i in list(pending):
            proc, log = procs[i]
            if proc.poll() is not None:
                stop()
                tail = log.read_text(errors="replace")[-4000:]
                pytest.fail(f"etcd member {i} exited with {proc.returncode}:\n{tail}")
            if get_200(f"http://127.0.0.1:{members[i][1]}/readyz"):
                pending.remove(i)
        if pending and time.monotonic() > deadline:
            stop()
            pytest.fail(f"etcd members {pending} not ready after 60 s")
        time.sleep(0.05)
    yield ",".join(f"127.0.0.1:{client}" for _, client, _ in members)
    stop()


@pytest.fixture(scope="session")
def servers(start_server: Callable[..., Server], request: pytest.FixtureRequest) -> list[Server]:
    """The shared servers for the whole run: one, or in cluster mode two on
    the shared etcd cluster."""
    if not CLUSTER:
        return [start_server()]
    endpoints = request.getfixturevalue("etcd_endpoints")
    flags = ("--etcd-endpoints", endpoints, "--etcd-max-request-bytes", ETCD_MAX_REQUEST_BYTES)
    return [start_server(*flags) for _ in range(CLUSTER_SERVERS)]


@pytest.fixture(scope="session")
def server(servers: list[Server]) -> Server:
    """The shared server (in cluster mode the first): a test that needs one
    server's address or process."""
    return servers[0]


@pytest.fixture
def addr(servers: list[Server]) -> str:
    """What the tests dial: the shared server, or in cluster mode the list
    of both."""
    for s in servers:
        if s.proc.poll() is not None:
            pytest.fail(f"a shared server died:\n{s.log_tail()}")
    if len(servers) == 1:
        return servers[0].addr
    return "ipv4:" + ",".join(s.addr for s in servers)


def first_addr(addr: str) -> str:
    """The first server of what ``addr`` gives: the one a proxy stands in
    front of."""
    return addr.removeprefix("ipv4:").split(",")[0]


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
