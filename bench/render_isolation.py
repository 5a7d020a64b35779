"""Render isolation: new-contact webhook latency while agents hammer slow macro previews.

A slow template must not slow down ingest: rendering has its own bounded executor and its
helpers run at a lower CPU priority (bridge/web/rendering.py, bridge/render_helpers.py).
Set-up: an embedded Redis and one `python -m bridge serve` process pinned to the first CPU
(its render helpers inherit the pinning: one dyno), the clients on the other CPUs.

Phases, alternating `rounds` times in the same run (short phases, so that a noisy spell of a
shared machine lands on both):
* idle: signed Twilio webhooks, each from a new contact (routing opens a ticket and
  logs its change), open loop at `webhook_rate` per second;
* loaded: the same webhook stream while `agents` admins (one token each: only those who
  may edit macros preview a draft) post previews of a draft whose every template loops
  until stopped, so each admitted preview renders for
  the whole request budget (set to 1 s: the render threads are as busy as with the default
  5 s, and a loaded phase winds down within about a second); a refused one (503 busy /
  429) is retried after `retry_s`, ignoring Retry-After, as a hammering client would (the
  agents run in a process of their own, on the clients' CPUs). Any other answer is an
  error of the set-up and fails the run: until 2026-12-05 the agents' tokens were not
  allowed to preview drafts, and the phase measured a flood of 403 answers instead.

The figure is the p99 of the webhook latencies of all loaded phases against that of all
idle phases; the target is a ratio of at most 1.5.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.data import CONTACT_KEY
from bench.forms import TWILIO_PATH, Signer, inbound_form
from bench.procs import ROOT, Server, cpu_layout, own_affinity, python_module
from bench.report import Context, Row, Target, fmt, table
from bench.stats import summary_ms
from bridge.store.embedded import EmbeddedRedis, free_port

PUBLIC_BASE_URL = "https://bridge.example.com"
TOKEN = "bench-auth-token-" + "0123456789abcdef"
ADMIN_TOKEN = "bench-admin-token-" + "0123456789abcdef"
TOKENS_ENV = "BENCH_PREVIEW_TOKENS"  # the hammer's tokens, comma-separated
# What a hammering agent may be answered: its draft rendered for the whole budget (422:
# the templates never finish), or a refusal to retry.
RENDERED = "422 render_budget_exceeded"
EXPECTED_ANSWERS = frozenset({RENDERED, "503 busy", "429 too_many_renders"})
# Never finishes on its own: stopped by the per-template limit, then by the request budget.
ENDLESS = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
           "{% endfor %}Hi")
SLOW_DRAFT: dict[str, Any] = {
    "locales": {"en": ENDLESS},
    "actions": {"content_sid": "HX" + "0" * 32,
                "content_variables": {str(n): ENDLESS for n in range(1, 9)}},
}


@dataclass(frozen=True, kw_only=True)
class RenderIsolationConfig:
    agents: int = 8
    # BRIDGE_RENDER_WORKERS: the most the setting allows, so that as many helpers as a web
    # process can have render at once share its CPU. At the default of 2 the webhooks' p99
    # held even before helpers yielded the CPU; at 4 it rose 4.3-4.6 times without that
    # (bridge/render_helpers.YIELD_EVERY_S).
    render_workers: int = 4
    webhook_rate: float = 40.0  # new contacts per second, open loop
    # Many short rounds: a noisy spell of a shared machine then lands on both phases.
    rounds: int = 7
    phase_s: float = 2.5
    load_warmup_s: float = 0.5  # agents start (helpers spawn) before measuring
    # The server's BRIDGE_RENDER_REQUEST_BUDGET_S (its smallest value): the render threads
    # are as busy as with a longer budget, and a loaded phase ends within about a second.
    budget_s: int = 1
    retry_s: float = 0.1
    timeout_s: float = 30.0


QUICK = RenderIsolationConfig(rounds=2, phase_s=2.0)


@dataclass
class Outcome:
    idle_s: list[float] = field(default_factory=list)
    loaded_s: list[float] = field(default_factory=list)
    round_p99_ms: list[tuple[float, float]] = field(default_factory=list)  # idle, loaded
    webhook_errors: Counter[str] = field(default_factory=Counter)
    previews: Counter[str] = field(default_factory=Counter)
    layout: str = ""


class _Bench:
    def __init__(self, cfg: RenderIsolationConfig, port: int) -> None:
        self.cfg = cfg
        self.tokens: list[str] = []
        self.base = f"http://127.0.0.1:{port}"
        self.signer = Signer(TOKEN, PUBLIC_BASE_URL + TWILIO_PATH)
        self.contact = 0
        self.out = Outcome()

    async def webhook(self, session: aiohttp.ClientSession, into: list[float]) -> None:
        self.contact += 1
        n = self.contact
        form = inbound_form(f"SM{os.getpid():08x}{n:024x}", 500_000 + n, "Hello, new here")
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": self.signer.sign(form)}
        started = time.perf_counter()
        try:
            async with session.post(self.base + TWILIO_PATH, data=form,
                                    headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.out.webhook_errors[type(exc).__name__] += 1
            return
        if status != 200:
            self.out.webhook_errors[str(status)] += 1
            return
        into.append(time.perf_counter() - started)

    async def webhooks(self, session: aiohttp.ClientSession, duration_s: float,
                       into: list[float]) -> None:
        """Open loop: one new contact every 1/rate s, whatever the answers take."""
        interval = 1 / self.cfg.webhook_rate
        start = time.perf_counter()
        tasks = []
        for i in range(int(duration_s * self.cfg.webhook_rate)):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.webhook(session, into)))
        await asyncio.gather(*tasks)

    async def main(self) -> Outcome:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self.tokens = [await self._admin(session, f"admin{n}")
                           for n in range(self.cfg.agents)]
            # Warm-up, not counted: connections, and the render helpers (started on demand).
            url = f"{self.base}/api/v1/macros/greeting/preview"
            headers = [{"Authorization": f"Bearer {token}"} for token in self.tokens[:2]]

            async def preview(h: dict[str, str]) -> None:
                async with session.post(url, json={}, headers=h) as response:
                    await response.read()

            await asyncio.gather(self.webhooks(session, 2.0, []), *map(preview, headers))
            for _ in range(self.cfg.rounds):
                idle: list[float] = []
                loaded: list[float] = []
                await self.webhooks(session, self.cfg.phase_s, idle)
                # The agents are another process (their browsers are not Twilio's
                # client): their answers do not queue up in this measuring event loop.
                agents = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.render_isolation", "hammer", self.base,
                    str(self.cfg.retry_s), cwd=ROOT,
                    env={**os.environ, TOKENS_ENV: ",".join(self.tokens)},
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                assert agents.stdin is not None
                await asyncio.sleep(self.cfg.load_warmup_s)
                await self.webhooks(session, self.cfg.phase_s, loaded)
                agents.stdin.close()  # stop; in-flight previews end within the budget
                answers, _ = await agents.communicate()
                if agents.returncode != 0:
                    raise RuntimeError(f"render_isolation: the agents' process failed "
                                       f"({agents.returncode}); see its stderr above")
                self.out.previews.update(json.loads(answers))
                self.out.idle_s += idle
                self.out.loaded_s += loaded
                self.out.round_p99_ms.append((summary_ms(idle)["p99"],
                                              summary_ms(loaded)["p99"]))
        return self.out

    async def _admin(self, session: aiohttp.ClientSession, name: str) -> str:
        """A person who may preview drafts; returns their token."""
        async with session.post(f"{self.base}/api/v1/agents",
                                json={"name": name, "role": "admin"},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as answer:
            if answer.status != 201:
                raise RuntimeError(f"creating {name}: {answer.status} {await answer.text()}")
            return str((await answer.json())["token"])


def unexpected_answers(previews: Counter[str]) -> dict[str, int]:
    """Answers the agents should never get: the load was not what the bench claims."""
    return {kind: n for kind, n in previews.items() if kind not in EXPECTED_ANSWERS}


async def _agent(session: aiohttp.ClientSession, base: str, token: str, retry_s: float,
                 stop: asyncio.Event, answers: Counter[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/api/v1/macros/greeting/preview"
    while not stop.is_set():
        try:
            async with session.post(url, json=SLOW_DRAFT, headers=headers) as response:
                body = await response.json(content_type=None)
                code = body.get("error", {}).get("code", "ok") if isinstance(body, dict) \
                    else "not a JSON object"
                answers[f"{response.status} {code}"] += 1
                rendered = f"{response.status} {code}" == RENDERED
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: no JSON
            answers[type(exc).__name__] += 1
            rendered = False
        if not rendered:  # a refusal (or an error: never a flood of requests)
            await asyncio.sleep(retry_s)


async def hammer(base: str, tokens: list[str], retry_s: float) -> Counter[str]:
    """The agents' process: preview the slow draft until stdin closes."""
    answers: Counter[str] = Counter()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(_agent(session, base, token, retry_s, stop, answers))
                 for token in tokens]
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        stop.set()
        await asyncio.gather(*tasks)
    return answers


def measure(cfg: RenderIsolationConfig, workdir: Path, *, pin: bool = True) -> Outcome:
    layout_cpus = cpu_layout() if pin else None
    server_cpus, other_cpus = layout_cpus or (None, None)
    workdir.mkdir(parents=True, exist_ok=True)
    with own_affinity(other_cpus), EmbeddedRedis(workdir / "redis", appendonly=True) as rds:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_"))}
        env.update(REDIS_URL=rds.url, PORT=str(port), HOST="127.0.0.1",
                   PUBLIC_BASE_URL=PUBLIC_BASE_URL, TWILIO_AUTH_TOKEN=TOKEN,
                   BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN, BRIDGE_DATA_DIR=str(workdir / "var"),
                   BRIDGE_RENDER_WORKERS=str(cfg.render_workers),
                   BRIDGE_RENDER_REQUEST_BUDGET_S=str(cfg.budget_s),
                   BRIDGE_CONTACT_KEY=CONTACT_KEY)
        with Server("bridge", python_module("bridge", "serve"), port=port,
                    log_path=workdir / "render-isolation.log", env=env) as bridge:
            bridge.start(cpus=server_cpus)
            out = asyncio.run(_Bench(cfg, port).main())
    wrong = unexpected_answers(out.previews)
    if wrong or not out.previews[RENDERED]:
        raise RuntimeError(f"render_isolation: the agents' previews were not rendered "
                           f"(answers: {dict(out.previews)})")
    out.layout = (f"bridge and its render helpers on CPU {server_cpus}, clients and Redis on "
                  f"CPU {other_cpus}" if layout_cpus else "no CPU pinning")
    return out


def rows(o: Outcome, cfg: RenderIsolationConfig) -> list[Row]:
    idle, loaded = summary_ms(o.idle_s), summary_ms(o.loaded_s)
    load = f"{cfg.agents} admins previewing slow drafts"
    return [
        Row(bench="render_isolation", name="new-contact webhook p50, idle", value=idle["p50"],
            unit="ms"),
        Row(bench="render_isolation", name="new-contact webhook p99, idle", value=idle["p99"],
            unit="ms", note=f"{idle['n']:.0f} webhooks at {fmt(cfg.webhook_rate)}/s"),
        Row(bench="render_isolation", name=f"new-contact webhook p50, {load}",
            value=loaded["p50"], unit="ms", baseline=idle["p50"], baseline_name="idle p50"),
        Row(bench="render_isolation", name=f"new-contact webhook p99, {load}",
            value=loaded["p99"], unit="ms", baseline=idle["p99"], baseline_name="idle p99",
            target=Target(op="<=", threshold=1.5, on="ratio"),
            note=f"{loaded['n']:.0f} webhooks; {sum(o.webhook_errors.values())} errors"),
    ]


def section(ctx: Context, o: Outcome, cfg: RenderIsolationConfig) -> None:
    idle, loaded = summary_ms(o.idle_s), summary_ms(o.loaded_s)
    templates = len(SLOW_DRAFT["actions"]["content_variables"]) + 1
    lines = [
        f"New-contact webhooks at {fmt(cfg.webhook_rate)}/s (open loop), {cfg.rounds} rounds "
        f"of {fmt(cfg.phase_s)} s idle then {fmt(cfg.phase_s)} s with {cfg.agents} admins "
        f"(one token each) posting previews of a draft whose {templates} "
        "templates never finish, retrying a refusal after "
        f"{fmt(cfg.retry_s * 1000)} ms; render budget {cfg.budget_s} s a request, "
        f"{cfg.render_workers} render workers (BRIDGE_RENDER_WORKERS); "
        f"{o.layout}.",
        "",
        table(["phase", "webhooks", "p50 ms", "p90 ms", "p99 ms", "max ms"], [
            [name, fmt(s["n"]), fmt(s["p50"]), fmt(s["p90"]), fmt(s["p99"]), fmt(s["max"])]
            for name, s in (("idle", idle), ("loaded", loaded))
        ]),
        "",
        "p99 per round (idle / loaded, ms): " + ", ".join(
            f"{fmt(i)} / {fmt(x)}" for i, x in o.round_p99_ms) + ".",
        "",
        "Preview answers during the loaded phases: " + (", ".join(
            f"{count} × {kind}" for kind, count in o.previews.most_common()) or "none") + ".",
    ]
    if o.webhook_errors:
        lines.append("Webhook errors: " + ", ".join(
            f"{count} × {kind}" for kind, count in o.webhook_errors.most_common()) + ".")
    ctx.add_section("Render isolation", "\n".join(lines))


def main(argv: list[str]) -> int:
    """`python -m bench.render_isolation hammer BASE_URL RETRY_S`, with the agents' tokens
    in $BENCH_PREVIEW_TOKENS (see _Bench)."""
    tokens = [t for t in os.environ.get(TOKENS_ENV, "").split(",") if t]
    if len(argv) != 3 or argv[0] != "hammer" or not tokens:
        print(__doc__)
        return 2
    answers = asyncio.run(hammer(argv[1], tokens, float(argv[2])))
    print(json.dumps(answers))
    return 0


def run(ctx: Context, cfg: RenderIsolationConfig | None = None) -> list[Row]:
    cfg = cfg or (QUICK if ctx.quick else RenderIsolationConfig())
    o = measure(cfg, ctx.workdir / "render_isolation", pin=ctx.pin_cpus)
    section(ctx, o, cfg)
    return rows(o, cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
