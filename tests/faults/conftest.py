"""Fault-injection helpers: real processes (redis-server, `bridge serve`) on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
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
    process = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], cwd=ROOT,
                               env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    web = WebProcess(process, port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("bridge serve exited at start")
        try:
            if httpx.get(f"{web.url}/healthz", timeout=0.5).status_code == 200:
                return web
        except httpx.HTTPError:
            time.sleep(0.1)
    web.stop()
    raise RuntimeError("bridge serve did not start")


@pytest.fixture
def web_on(aof_redis: EmbeddedRedis) -> Iterator[WebProcess]:
    web = start_web(aof_redis.url)
    try:
        yield web
    finally:
        web.stop()
