"""Slow clients: a stalled body is cut off (408), stalled or trickled headers are
disconnected after the idle timeout, and stalled clients do not slow others."""

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


def _closed_within(s: socket.socket, limit_s: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closed `s` (None if still open after limit_s). With
    `trickle`, one more byte of it is sent every 0.3 s meanwhile."""
    started = time.monotonic()
    s.settimeout(0.3)
    sent = 0
    while time.monotonic() - started < limit_s:
        try:
            if s.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:  # reset by the server
            return time.monotonic() - started
        if trickle:
            try:
                s.sendall(trickle[sent % len(trickle):][:1])
                sent += 1
            except OSError:
                return time.monotonic() - started
    return None


def test_stalled_and_trickled_headers_are_disconnected(aof_redis: EmbeddedRedis) -> None:
    web = start_web(aof_redis.url, BRIDGE_IDLE_TIMEOUT_S="2")
    sockets: list[socket.socket] = []
    try:
        stalled = _open(web)
        stalled.sendall(b"POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\nContent-Le")
        silent = _open(web)  # connects and never sends a byte
        trickling = _open(web)
        trickling.sendall(b"POST /webhooks/twilio HTTP/1.1\r\n")
        sockets += [stalled, silent, trickling]
        # A header line that never ends, one byte at a time.
        trickled_s = _closed_within(trickling, 15, trickle=b"X-Slow: " + b"a" * 4000)
        stalled_s = _closed_within(stalled, 15)
        silent_s = _closed_within(silent, 15)
        assert trickled_s is not None and stalled_s is not None and silent_s is not None
        print(f"\nidle timeout 2 s: trickled headers closed after {trickled_s:.1f} s; "
              f"stalled headers and a silent connection closed by then too")
        # The server is fine afterwards.
        f = inbound_form("after the slow ones")
        with httpx.Client(base_url=web.url, timeout=5) as client:
            answer = client.post("/webhooks/twilio", content=urlencode(f), headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sign("/webhooks/twilio", f)})
        assert answer.status_code == 200
    finally:
        for s in sockets:
            s.close()
        web.stop()
