"""Slow clients: a stalled body is cut off (408); stalled clients do not slow others."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlencode

import httpx

from bridge.store.embedded import EmbeddedRedis
from tests.factories import inbound_form, sign
from tests.faults.conftest import WebProcess, start_web


def _open(web: WebProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=10)


def test_stalled_body_is_answered_408_and_others_are_served(aof_redis: EmbeddedRedis) -> None:
    web = start_web(aof_redis.url, BRIDGE_BODY_READ_TIMEOUT_S="1")
    stalled: list[socket.socket] = []
    try:
        form = inbound_form("patience")
        body = urlencode(form).encode()
        for _ in range(20):
            s = _open(web)
            s.sendall(b"POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n"
                      b"X-Twilio-Signature: " + sign("/webhooks/twilio", form).encode() +
                      b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
                      body[:10])  # ...and then nothing
            stalled.append(s)
        # Twenty stalled clients (and some stalled mid-headers) do not hold up others.
        for _ in range(5):
            half = _open(web)
            half.sendall(b"POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\nContent-Le")
            stalled.append(half)
        with httpx.Client(base_url=web.url, timeout=5) as client:
            for n in range(20):
                f = inbound_form(f"fast {n}", sender=f"whatsapp:+3364000{n:04d}")
                answer = client.post("/webhooks/twilio", content=urlencode(f), headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": sign("/webhooks/twilio", f)})
                assert answer.status_code == 200
        first = stalled[0]
        first.settimeout(10)
        started = time.monotonic()
        reply = first.recv(4096)
        status_line = reply.split(b"\r\n", 1)[0].decode()
        print(f"\nstalled body cut off after {time.monotonic() - started:.1f} s: {status_line}")
        assert reply.startswith(b"HTTP/1.1 408")
        assert b"request_timeout" in reply
    finally:
        for s in stalled:
            s.close()
        web.stop()
