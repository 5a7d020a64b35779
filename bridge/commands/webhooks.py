"""`bridge webhooks ...`: the webhook export's endpoints, their health, failed deliveries
and replays, from the command line (Redis directly, like `bridge outbox`).

    bridge webhooks list
    bridge webhooks add URL [--event TYPE]... [--description TEXT] [--anonymize]
                        [--follow-redirects]
    bridge webhooks update ID [--url URL] [--event TYPE]... [--enable | --disable]
                           [--description TEXT] [--(no-)follow-redirects] [--(no-)anonymize]
    bridge webhooks remove ID
    bridge webhooks rotate-secret ID
    bridge webhooks health ID
    bridge webhooks failed ID [--limit N]
    bridge webhooks replay ID (--webhook-id ID | --since 2026-12-01T00:00:00Z)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from redis.asyncio import Redis

from bridge.commands.outbound import _settings_and_url, _table, redis_url_option
from bridge.core.export_events import check_event_filter, iso
from bridge.core.export_policy import description_refusal, since_ms, target_refusal
from bridge.devrun import running_bridge
from bridge.store.connection import async_redis
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox
from bridge.store.records import NotFound

T = TypeVar("T")


def _run(redis_url: str | None, work: Callable[[Redis], Awaitable[T]]) -> T:
    settings, url = _settings_and_url(redis_url)

    async def go() -> T:
        client = async_redis(settings, url)
        try:
            return await work(client)
        except NotFound as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            await client.aclose()

    return asyncio.run(go())


def _now_ms() -> int:
    return int(time.time() * 1000)


def _events(values: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return check_event_filter(list(values) or ["*"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--event") from None


def _checked_url(url: str, redis_url: str | None) -> str:
    settings, _ = _settings_and_url(redis_url)
    running = running_bridge(settings, redis_url)
    development = settings.development or running.get("development") is True
    allow_private = settings.export_allow_private or running.get("export_allow_private") is True
    refusal = target_refusal(url, allow_http=development, allow_private=allow_private)
    if refusal:
        raise click.BadParameter(refusal, param_hint="URL")
    return url


@click.group()
def webhooks() -> None:
    """Webhook export endpoints (Standard Webhooks): set-up, health, failures, replays."""


@webhooks.command("list")
@redis_url_option
def list_endpoints(redis_url: str | None) -> None:
    """Every endpoint and its health."""
    async def work(redis: Redis) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for e in await EndpointStore(redis).all():
            h = await Outbox(redis, e.id).health()
            state = ("disabled" + (f" ({e.disabled_reason})" if e.disabled_reason else "")
                     if not e.enabled else "failing" if h.consecutive_failures else "healthy")
            rows.append((e.id, state, e.url, ",".join(e.events), str(h.delivered),
                         str(h.backlog), str(h.retrying_tickets), str(h.failed)))
        return rows

    rows = _run(redis_url, work)
    if not rows:
        click.echo("no webhook endpoints: add one with `bridge webhooks add https://...`")
        return
    _table(("ID", "STATE", "URL", "EVENTS", "DELIVERED", "BACKLOG", "RETRYING", "FAILED"), rows)


@webhooks.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, help="An event type (repeat; default *).")
@click.option("--description", default="")
@click.option("--anonymize", is_flag=True, help="Leave message bodies and phone numbers out.")
@click.option("--follow-redirects", is_flag=True,
              help="Follow the receiver's redirects (each target checked like the URL).")
@redis_url_option
def add(url: str, events: tuple[str, ...], description: str, anonymize: bool,
        follow_redirects: bool, redis_url: str | None) -> None:
    """Add an endpoint; prints its secret (shown this once)."""
    refusal = description_refusal(description)
    if refusal is not None:
        raise click.BadParameter(refusal, param_hint="--description")
    checked = _checked_url(url, redis_url)
    chosen = _events(events)
    endpoint, secret = _run(redis_url, lambda r: EndpointStore(r).create(
        url=checked, events=chosen, description=description, anonymize=anonymize,
        follow_redirects=follow_redirects, now_ms=_now_ms()))
    click.echo(f"{endpoint.id}\nsecret: {secret}   (shown once: give it to the receiver)")


@webhooks.command("update")
@click.argument("endpoint_id")
@click.option("--url", default=None)
@click.option("--event", "events", multiple=True)
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--anonymize/--no-anonymize", "anonymize", default=None)
@click.option("--description", default=None)
@click.option("--follow-redirects/--no-follow-redirects", "follow_redirects", default=None)
@redis_url_option
def update(endpoint_id: str, url: str | None, events: tuple[str, ...], enabled: bool | None,
           anonymize: bool | None, description: str | None, follow_redirects: bool | None,
           redis_url: str | None) -> None:
    """Change an endpoint's URL, events, description, redirects, or switch it on or off."""
    changes: dict[str, Any] = {}
    if description is not None:
        refusal = description_refusal(description)
        if refusal is not None:
            raise click.BadParameter(refusal, param_hint="--description")
        changes["description"] = description
    if follow_redirects is not None:
        changes["follow_redirects"] = follow_redirects
    if url is not None:
        changes["url"] = _checked_url(url, redis_url)
    if events:
        changes["events"] = _events(events)
    if enabled is not None:
        changes["enabled"] = enabled
    if anonymize is not None:
        changes["anonymize"] = anonymize
    if not changes:
        raise click.UsageError("nothing to change")
    endpoint = _run(redis_url, lambda r: EndpointStore(r).update(endpoint_id, **changes))
    click.echo(f"{endpoint.id} {'enabled' if endpoint.enabled else 'disabled'} {endpoint.url}")


@webhooks.command("remove")
@click.argument("endpoint_id")
@redis_url_option
def remove(endpoint_id: str, redis_url: str | None) -> None:
    """Delete an endpoint and its undelivered events."""
    _run(redis_url, lambda r: EndpointStore(r).delete(endpoint_id))
    click.echo(f"removed {endpoint_id}")


@webhooks.command("rotate-secret")
@click.argument("endpoint_id")
@redis_url_option
def rotate(endpoint_id: str, redis_url: str | None) -> None:
    """A new secret; the old one keeps signing for 24 hours."""
    secret = _run(redis_url, lambda r: EndpointStore(r).rotate_secret(endpoint_id,
                                                                      now_ms=_now_ms()))
    click.echo(f"secret: {secret}   (the previous one stays valid for 24 h)")


@webhooks.command("health")
@click.argument("endpoint_id")
@redis_url_option
def health(endpoint_id: str, redis_url: str | None) -> None:
    """Delivered, failing, backlog and the last answer of one endpoint."""
    async def work(redis: Redis) -> dict[str, Any]:
        await EndpointStore(redis).get(endpoint_id)
        return (await Outbox(redis, endpoint_id).health()).__dict__

    for name, value in _run(redis_url, work).items():
        if name.endswith("_ms"):
            name, value = name[:-3], iso(value) if value else "-"
        click.echo(f"{name:22} {value if value not in (None, '') else '-'}")


@webhooks.command("failed")
@click.argument("endpoint_id")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@redis_url_option
def failed(endpoint_id: str, limit: int, redis_url: str | None) -> None:
    """Deliveries that used up their attempts (newest first)."""
    async def work(redis: Redis) -> list[dict[str, Any]]:
        await EndpointStore(redis).get(endpoint_id)
        return await Outbox(redis, endpoint_id).failed(limit=limit)

    rows = [(f["item"].webhook_id, f["item"].type, f["item"].ticket_id, str(f["attempts"]),
             iso(f["failed_at_ms"]), f["error"]) for f in _run(redis_url, work)]
    if not rows:
        click.echo("no failed deliveries")
        return
    _table(("WEBHOOK-ID", "TYPE", "TICKET", "ATTEMPTS", "FAILED AT", "ERROR"), rows)


@webhooks.command("replay")
@click.argument("endpoint_id")
@click.option("--webhook-id", default=None, help="One failed delivery.")
@click.option("--since", default=None, help="Everything since (ISO 8601, e.g. 2026-12-01T00:00Z).")
@redis_url_option
def replay(endpoint_id: str, webhook_id: str | None, since: str | None,
           redis_url: str | None) -> None:
    """Deliver again: one failed delivery, or everything since a time (same webhook-ids)."""
    if (webhook_id is None) == (since is None):
        raise click.UsageError("give either --webhook-id or --since")
    start_ms = 0
    if since is not None:
        parsed = since_ms(since)
        if parsed is None:
            raise click.BadParameter("an ISO 8601 time", param_hint="--since")
        start_ms = parsed

    async def work(redis: Redis) -> int:
        await EndpointStore(redis).get(endpoint_id)
        outbox = Outbox(redis, endpoint_id)
        if webhook_id is not None:
            return await outbox.replay_failed(webhook_id)
        return await outbox.replay_since(start_ms)

    count = _run(redis_url, work)
    if webhook_id is not None and not count:
        raise click.ClickException(f"no failed delivery {webhook_id} on {endpoint_id}")
    click.echo(f"replaying {count} deliveries")
