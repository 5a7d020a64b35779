"""`python -m bench.stub_server --port P --control-port C --latency S`: the Twilio stub
(tests/stubs/twilio_stub.py, every request checked against Twilio's OpenAPI document) in a
process of its own, for bench/outbound.py; GET /healthz and /records (every request it
answered) on C."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from bench.corpus import ACCOUNT_SID

AUTH_TOKEN = "bench-twilio-token-" + "0123456789abcdef"


async def _serve_stub(port: int, control_port: int, latency_s: float) -> None:
    from aiohttp import web

    from tests.stubs.twilio_stub import TwilioStub

    stub = TwilioStub(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency_s=latency_s,
                      port=port)
    await stub.start()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def records(request: web.Request) -> web.Response:
        return web.json_response({
            "accepted": stub.accepted, "refused": stub.refused,
            "requests": [[r.status, r.get("To"), r.get("Body"), r.sid, r.at,
                          "; ".join(r.problems)] for r in stub.requests],
        })

    control = web.Application()
    control.router.add_get("/healthz", healthz)
    control.router.add_get("/records", records)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await stub.stop()


def stub_main(argv: Sequence[str]) -> None:
    """The Twilio stub on --port; /healthz and /records on --control-port."""
    parser = argparse.ArgumentParser(prog="python -m bench.stub_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.15)
    args = parser.parse_args(argv)
    asyncio.run(_serve_stub(args.port, args.control_port, args.latency))


@dataclass(frozen=True)
class StubRequest:
    status: int
    to: str
    body: str
    sid: str
    at: float
    problems: str


def stub_requests(control_port: int) -> list[StubRequest]:
    with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/records", timeout=10) as r:
        data = json.loads(r.read())
    return [StubRequest(*row) for row in data["requests"]]


if __name__ == "__main__":
    stub_main(sys.argv[1:])
