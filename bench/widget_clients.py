"""Widget visitors for bench/widget.py, in their own process (the measuring process must not
share an event loop with thousands of sockets): `python -m bench.widget_clients URL TOKENS`
opens one WebSocket per token (a file, one per line), says `ready <n>` on stdout once every
socket has its hello answered, then records when each agent reply arrives: after its
commit (the event key's stream id, Redis's clock) and after the call that wrote it (its
body is `bench <ns since the epoch>`). On each `report` line (stdin) it prints one JSON
line: both latencies in ms since the last report, and the count of sockets that closed;
on `stop` (or the end of stdin) it exits."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

import aiohttp

ORIGIN = "http://bench.invalid"
CONNECT_CONCURRENCY = 200


class Visitors:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.call_latencies_ms: list[float] = []
        self.closed = 0
        self.ready = 0

    async def visitor(self, http: aiohttp.ClientSession, url: str, token: str,
                      gate: asyncio.Semaphore, all_ready: asyncio.Event, total: int) -> None:
        async with gate:
            ws = await http.ws_connect(f"{url}/widget/v1/ws", headers={"Origin": ORIGIN},
                                       autoping=True, heartbeat=None)
            await ws.send_str(json.dumps({"type": "hello", "token": token, "after": None}))
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data["type"] == "ready":
                    self.ready += 1
                    if self.ready == total:
                        all_ready.set()
                elif data["type"] == "events":
                    now_ns = time.time_ns()
                    for event in data["events"]:
                        body = event.get("body", "")
                        if event["type"] == "agent" and body.startswith("bench "):
                            # From the commit: the event's stream id is Redis's clock
                            # (this machine's) when the reply was written.
                            committed_ms = int(event["key"].split("-", 1)[0])
                            self.latencies_ms.append(now_ns / 1e6 - committed_ms)
                            self.call_latencies_ms.append((now_ns - int(body[6:])) / 1e6)
        finally:
            self.closed += 1


async def main(url: str, tokens_path: str) -> None:
    with open(tokens_path, encoding="utf-8") as listing:
        tokens = [t for t in listing.read().split() if t]
    visitors = Visitors()
    all_ready = asyncio.Event()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(visitors.visitor(http, url, t, gate, all_ready,
                                                      len(tokens))) for t in tokens]
        await all_ready.wait()
        # Thousands of sockets make this process's full collections last hundreds of ms
        # (measured: up to 0.5 s at 9,900 sockets), which would count as fan-out latency.
        # The sockets live until the end: out of the collector's sight from now on.
        gc.collect()
        gc.freeze()
        print(f"ready {visitors.ready}", flush=True)
        loop = asyncio.get_running_loop()
        # "report": the latencies since the last report; anything else (or EOF): stop.
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "report":
            print(json.dumps({"latencies_ms": visitors.latencies_ms,
                              "call_latencies_ms": visitors.call_latencies_ms,
                              "closed": visitors.closed}), flush=True)
            visitors.latencies_ms, visitors.call_latencies_ms = [], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
