"""Session tokens (serve --require-auth) and TLS (serve --tls-cert/--tls-key)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

import varbridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def auth_server(start_server):
    return start_server("--require-auth")


async def test_session_token_flow(auth_server) -> None:
    async with varbridge.connect(auth_server.addr) as b:
        s = await b.session("secured")
        assert s.created
        assert s.token  # returned by InitializeSession, sent on every call
        await s.register_variable("v", "int", 1)
        await s.set_variable("v", 2)
        w = s.watch_variables(["v"], include_initial=True)
        assert (await w.__anext__()).value == 2
        await w.aclose()

        # Another client without the token.
        async with varbridge.connect(auth_server.addr) as other:
            with pytest.raises(varbridge.AlreadyExists):
                await other.session("secured")
            with pytest.raises(varbridge.PermissionDenied):
                await other.session("secured", token="not-the-token")
            stranger = varbridge.SessionContext(other, "secured")
            with pytest.raises(varbridge.Unauthenticated):
                await stranger.get_variable("v")
            with pytest.raises(varbridge.Unauthenticated):
                async for _ in stranger.watch_variables(["v"], include_initial=True):
                    pass
            # Joining with the token works; no new token is issued.
            joined = await other.session("secured", token=s.token)
            assert not joined.created
            assert joined.token == s.token
            assert (await joined.get_variable("v")).value == 2
        # connect(token=...) sends it on every call too
        async with varbridge.connect(auth_server.addr, token=s.token) as third:
            assert (await varbridge.SessionContext(third, "secured").get_variable("v")).value == 2
        await s.cleanup()


def _make_cert(d: Path) -> tuple[Path, Path]:
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_tls(start_server, tmp_path: Path) -> None:
    cert, key = _make_cert(tmp_path)
    srv = start_server("--tls-cert", str(cert), "--tls-key", str(key))
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with varbridge.connect(srv.addr, credentials=creds) as b:
        s = await b.session()
        await s.register_variable("v", "string", "over tls")
        assert (await s.get_variable("v")).value == "over tls"
        await s.cleanup()
    # Plaintext against a TLS server fails (quickly, as UNAVAILABLE).
    async with varbridge.connect(srv.addr, timeout=3) as plain:
        with pytest.raises((varbridge.Unavailable, varbridge.DeadlineExceeded)):
            await asyncio.wait_for(plain.session(), 10)
