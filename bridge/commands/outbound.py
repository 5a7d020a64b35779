"""Operator commands for outbound messages: `bridge outbox`, `bridge failed`, `bridge retry`.

They read Redis directly (REDIS_URL, `--redis-url`, or the embedded Redis of a running
`bridge run`), so they work whether or not the web process is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import click

from bridge.devrun import resolve_redis_url
from bridge.failed_jobs import FailedJob, failed_jobs, reopen_delivery, requeue_failed
from bridge.store.connection import async_redis, sync_redis
from bridge.store.outbox import Outbox, OutboxEntry
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
# (the registry reads and the re-drive live in bridge/failed_jobs.py, which the workspace's
# operations page shares)

__all__ = ["FailedJob", "failed", "failed_jobs", "outbox", "reopen_delivery",
           "requeue_failed", "retry"]


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
