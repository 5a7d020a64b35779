"""Operator commands for outbound messages: `bridge outbox`, `bridge failed`, `bridge retry`.

They read Redis directly (REDIS_URL, `--redis-url`, or the embedded Redis of a running
`bridge run`), so they work whether or not the web process is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bridge.core.tickets import Delivery
from bridge.devrun import resolve_redis_url
from bridge.jobs import QUEUES_BY_PRIORITY, SEND_OUTBOUND
from bridge.store.connection import async_redis, sync_redis
from bridge.store.outbox import Outbox, OutboxEntry
from bridge.store.tickets import NotFound, TicketStore
from config.settings import Settings, SettingsError

redis_url_option = click.option(
    "--redis-url", default=None, metavar="URL",
    help="Redis to read (default: REDIS_URL, else the one a running `bridge run` started).",
)


def _settings_and_url(redis_url: str | None) -> tuple[Settings, str]:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    return settings, redis_url or resolve_redis_url(settings)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _when(ms_or_dt: int | datetime | None) -> str:
    if ms_or_dt is None:
        return "-"
    moment = (ms_or_dt if isinstance(ms_or_dt, datetime)
              else datetime.fromtimestamp(ms_or_dt / 1000, UTC))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # RQ stores naive UTC datetimes
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------------------- bridge outbox


def outbox_rows(entries: Sequence[OutboxEntry], *, width: int = 60) -> list[tuple[str, ...]]:
    return [(e.provider_id, _when(e.at_ms), e.to, e.ticket_id or "-",
             _one_line(e.summary(), width)) for e in entries]


@click.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@redis_url_option
def outbox(limit: int, redis_url: str | None) -> None:
    """The local outbox, newest first: what would have gone to Twilio."""
    settings, url = _settings_and_url(redis_url)

    async def fetch() -> tuple[list[OutboxEntry], int]:
        client = async_redis(settings, url)
        try:
            box = Outbox(client)
            return await box.latest(limit), await box.count()
        finally:
            await client.aclose()

    entries, total = asyncio.run(fetch())
    if not entries:
        hint = ("Twilio credentials are set, so messages go to Twilio"
                if settings.twilio_enabled else "reply to a ticket to see a message here")
        click.echo(f"the outbox is empty ({hint})")
        return
    _table(("ID", "SENT AT", "TO", "TICKET", "MESSAGE"), outbox_rows(entries))
    if total > len(entries):
        click.echo(f"({len(entries)} newest of {total}; --limit for more)")


# ---------------------------------------------------------------------------- bridge failed


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    func: str
    payload: dict[str, Any]
    failed_at: datetime | None
    error: str

    @property
    def target(self) -> str:
        if "ticket_id" in self.payload:
            event = self.payload.get("event_id") or self.payload.get("automation") or ""
            return f"ticket {self.payload['ticket_id']}" + (f" {event}" if event else "")
        return "-"


def _queues(connection: redis.Redis) -> list[Queue]:
    return [Queue(name, connection=connection, serializer=JSONSerializer)
            for name in QUEUES_BY_PRIORITY]


def _error_line(job: Job) -> str:
    """The exception line of the job's last failure (its traceback's last line)."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "failed (no error recorded: retries exhausted or worker lost)"
    # "workers.tasks.SendFailed: ..." -> "SendFailed: ..."
    kind, sep, message = lines[-1].strip().partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}{sep}{message}"


def failed_jobs(connection: redis.Redis) -> list[FailedJob]:
    """Every job in the bridge queues' FailedJobRegistry, most recent failure first."""
    found: list[FailedJob] = []
    for queue in _queues(connection):
        ids = queue.failed_job_registry.get_job_ids(desc=True)
        for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
            if job is None:  # expired between the two reads
                continue
            args = job.args
            payload = args[0] if args and isinstance(args[0], dict) else {}
            found.append(FailedJob(
                id=job.id, queue=queue.name, func=job.func_name or "?", payload=payload,
                failed_at=job.ended_at, error=_error_line(job),
            ))
    found.sort(key=lambda j: j.failed_at.timestamp() if j.failed_at else 0.0, reverse=True)
    return found


@click.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@redis_url_option
def failed(limit: int, redis_url: str | None) -> None:
    """Failed jobs (sends, timers, triggers) and their errors.

    Lists RQ's failed-job registry of every bridge queue, newest failure first."""
    settings, url = _settings_and_url(redis_url)
    connection = sync_redis(settings, url)
    try:
        jobs = failed_jobs(connection)
    finally:
        connection.close()
    if not jobs:
        click.echo("no failed jobs")
        return
    rows = [(j.id, j.func.rsplit(".", 1)[-1], j.target, _when(j.failed_at),
             _one_line(j.error, 120)) for j in jobs[:limit]]
    _table(("JOB ID", "JOB", "FOR", "FAILED AT", "ERROR"), rows)
    if len(jobs) > limit:
        click.echo(f"({limit} of {len(jobs)}; --limit for more)")
    click.echo("re-run with: bridge retry JOB_ID  (or: bridge retry --all)")


# ---------------------------------------------------------------------------- bridge retry


async def reopen_delivery(store: TicketStore, ticket_id: str, event_id: str, *,
                          now_ms: int) -> bool:
    """Let a failed send go again: the job skips events whose delivery is settled, so a
    re-driven send starts from `queued` with a fresh attempt budget. A message the provider
    accepted is never reopened. Returns True when the state was reset."""
    try:
        state = await store.delivery_state(ticket_id, event_id)
    except NotFound:
        return False
    current = state.get("state", "")
    accepted = current in (Delivery.SENT, Delivery.DELIVERED, Delivery.READ) or (
        current in (Delivery.QUEUED, Delivery.SENDING) and state.get("provider_id"))
    if accepted or not current or (current == Delivery.QUEUED and not state.get("error_code")):
        return False
    record = {"state": Delivery.QUEUED.value, "attempts": "0", "redriven_at_ms": str(now_ms),
              "previous_state": current,
              "previous_attempts": state.get("attempts", "0")}
    for name in ("error_code", "error_message"):
        if state.get(name):
            record[f"previous_{name}"] = state[name]
    await store.set_delivery(ticket_id, event_id, record)
    return True


def requeue_failed(connection: redis.Redis, store_url: str, settings: Settings,
                   job_ids: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Requeue the given failed jobs (None: all). Returns (requeued, not found)."""
    by_id = {j.id: j for j in failed_jobs(connection)}
    wanted = list(by_id) if job_ids is None else list(dict.fromkeys(job_ids))
    missing = [i for i in wanted if i not in by_id]
    todo = [by_id[i] for i in wanted if i in by_id]
    sends = [(str(j.payload.get("ticket_id", "")), str(j.payload.get("event_id", "")))
             for j in todo if j.func == SEND_OUTBOUND]

    async def reopen_all() -> None:
        client = async_redis(settings, store_url)
        try:
            store = TicketStore(client)
            now_ms = int(time.time() * 1000)
            for tid, eid in sends:
                if tid and eid:
                    await reopen_delivery(store, tid, eid, now_ms=now_ms)
        finally:
            await client.aclose()

    if sends:
        asyncio.run(reopen_all())
    queues = {q.name: q for q in _queues(connection)}
    done: list[str] = []
    for job in todo:
        queues[job.queue].failed_job_registry.requeue(job.id)
        done.append(job.id)
    return done, missing


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Re-run every failed job.")
@redis_url_option
def retry(job_ids: tuple[str, ...], retry_all: bool, redis_url: str | None) -> None:
    """Re-run failed jobs: JOB_ID... (see `bridge failed`) or --all.

    A failed send is reopened and sent again, even one whose outcome was unknown: you are
    deciding that re-sending is right.
    """
    if bool(job_ids) == retry_all:
        raise click.UsageError("give one or more JOB_IDs, or --all")
    settings, url = _settings_and_url(redis_url)
    connection = sync_redis(settings, url)
    try:
        done, missing = requeue_failed(connection, url, settings,
                                       None if retry_all else job_ids)
    finally:
        connection.close()
    for job_id in done:
        click.echo(f"requeued {job_id}")
    if not done and retry_all:
        click.echo("no failed jobs")
    if missing:
        raise click.ClickException(
            f"not in the failed jobs: {', '.join(missing)} (see `bridge failed`)")
