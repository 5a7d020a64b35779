"""The guarded transport over TLS: it connects to the address it checked while TLS checks
the certificate against the endpoint's host name (SNI), not against the address."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from workers.export_http import AiohttpTransport, export_client

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def test_tls_is_checked_against_the_name_while_the_address_is_the_checked_one(
        tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "hooks.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    hosts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hosts.append(request.headers["Host"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client = export_client(allow_http=False, allow_private=True, timeout_s=5,
                           inner=AiohttpTransport(ssl_context=client_ctx),
                           resolve=to_loopback)
    try:
        answer = await client.post(f"https://hooks.test:{port}/hook", content=b"{}")
        assert answer.status_code == 204
        assert hosts == [f"hooks.test:{port}"]
        # Same address, another name: the certificate does not match, nothing is sent.
        with pytest.raises(httpx.TransportError, match=r"(?i)certificate|hostname"):
            await client.post(f"https://other.test:{port}/hook", content=b"{}")
        assert len(hosts) == 1
    finally:
        await client.aclose()
        await runner.cleanup()
