"""Fault-injection helpers: real processes (redis-server, `bridge serve`) on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridge.store.embedded import EmbeddedRedis, free_port
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, AUTH_TOKEN, CONTACT_KEY
from tests.factories import PUBLIC_BASE_URL

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WebProcess:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_web(redis_url: str, **env: str) -> WebProcess:
    """A `bridge serve` process, up (its /healthz answers). A port picked free can be taken
    by another process before the server binds it (the tests run in parallel): then it
    starts again on another port; any other failure to start says what the server said."""
    for _ in range(3):
        port = free_port()
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "REDIS_URL": redis_url,
            "BRIDGE_CONTACT_KEY": CONTACT_KEY,
            "PORT": str(port),
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
            "BRIDGE_AGENT_TOKENS": f"alice:{AGENT_TOKEN}",
            "BRIDGE_CONFIG_DIR": str(ROOT / "config"),
            **env,
        }
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], cwd=ROOT,
                                       env=environment, stdout=subprocess.DEVNULL,
                                       stderr=stderr)
            web = WebProcess(process, port)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                try:
                    if httpx.get(f"{web.url}/healthz", timeout=0.5).status_code == 200:
                        return web
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                web.stop()
                raise RuntimeError("bridge serve did not start within 20 s")
            stderr.seek(0)
            said = stderr.read().decode(errors="replace")
        if "address already in use" not in said.lower():
            raise RuntimeError(f"bridge serve exited at start:\n{said[-3000:]}")
    raise RuntimeError("bridge serve found no free port in 3 tries")


@pytest.fixture
def web_on(aof_redis: EmbeddedRedis) -> Iterator[WebProcess]:
    web = start_web(aof_redis.url)
    try:
        yield web
    finally:
        web.stop()
