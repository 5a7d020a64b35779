"""`bridge migrate contact-ids`: move stored contacts to their keyed ids (README: upgrading)."""

from __future__ import annotations

import asyncio

import click

from bridge.core.messages import contact_id_for
from bridge.devrun import dev_tokens, resolve_redis_url
from bridge.store.connection import async_redis
from bridge.store.migrate import MigrationReport, migrate_contact_ids
from config.settings import Settings, SettingsError


@click.group()
def migrate() -> None:
    """Bring stored data up to date after an upgrade."""


@migrate.command("contact-ids")
@click.option("--redis-url", default=None, metavar="URL",
              help="Redis to migrate (default: REDIS_URL, else a running `bridge run`'s).")
def contact_ids(redis_url: str | None) -> None:
    """Move every contact to the id BRIDGE_CONTACT_KEY gives it (safe to run again and to
    interrupt). Stop the web process first."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    url = redis_url or resolve_redis_url(settings)
    # Development: the key `bridge run` generated and gives its processes.
    key = (str(settings.contact_key)
           or dev_tokens(settings.data_dir)["BRIDGE_CONTACT_KEY"]).encode()

    async def go() -> MigrationReport:
        client = async_redis(settings, url)
        try:
            return await migrate_contact_ids(
                client, lambda channel, address: contact_id_for(key, channel, address))
        finally:
            await client.aclose()

    report = asyncio.run(go())
    click.echo(f"moved {report.moved} contact(s); {report.already} already keyed; "
               f"{report.provider_refs} delivery reference(s) rewritten")
    if report.skipped:
        # Key names only, never addresses (not known for these anyway).
        raise click.ClickException(
            f"{len(report.skipped)} contact hash(es) lack a channel, an address or an id and "
            f"were left as they are: {', '.join(sorted(report.skipped)[:20])}")
