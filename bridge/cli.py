"""The `bridge` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import click
import httpx
import redis.exceptions
from twilio.request_validator import RequestValidator

from bridge.channels import twilio
from bridge.commands.agents import team_commands
from bridge.commands.bulk_export import export
from bridge.commands.check import check
from bridge.commands.migrate import migrate
from bridge.commands.outbound import _one_line, failed, outbox, retry
from bridge.commands.report import report
from bridge.commands.webhooks import webhooks
from bridge.core.tickets import Status
from bridge.devrun import dev_tokens, resolve_redis_url, run_all, runtime_info
from bridge.store.connection import CLUSTER_UNSUPPORTED, async_redis, cluster_node_at
from bridge.store.tickets import TicketStore
from config.settings import Settings, SettingsError, process_environment


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    try:
        return Settings.from_env(environ)
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


class _Commands(click.Group):
    """Redis out of reach is one line saying so, not a traceback, for every command that
    reads the store (tickets, outbox, report, agents, webhooks, ...)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except redis.exceptions.MovedError:
            raise click.ClickException(CLUSTER_UNSUPPORTED) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise click.ClickException(
                f"cannot reach Redis: {exc} Is the bridge running (make run)? Otherwise set "
                "REDIS_URL (or --redis-url) to its Redis.") from None


@click.group(cls=_Commands)
def main() -> None:
    """Help-desk messaging bridge: WhatsApp (Twilio) and web chat into tickets."""


@main.command()
def run() -> None:
    """Everything on this machine: embedded Redis (unless REDIS_URL), web, worker."""
    # A laptop run is development unless BRIDGE_ENV says otherwise (its processes inherit it).
    env = {"BRIDGE_ENV": "development", **process_environment()}
    run_all(load_settings(env), env)


@main.command()
def serve() -> None:
    """The web process only (the Procfile's web dyno)."""
    from aiohttp import web

    from bridge.app import create_app

    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not settings.redis_url:
        raise click.ClickException("REDIS_URL is not set (use `bridge run` for a local Redis)")
    if cluster_node_at(settings):
        raise click.ClickException(CLUSTER_UNSUPPORTED)
    if not settings.twilio_auth_token:
        logging.getLogger("bridge").warning(
            "TWILIO_AUTH_TOKEN is not set: every Twilio webhook will be refused (403)")
    if settings.redis_without_password:
        logging.getLogger("bridge").warning(
            "REDIS_URL has no password: whoever reaches that Redis reads and writes every "
            "ticket (redis://:PASSWORD@host:6379/0, or an ACL user: redis://USER:PASSWORD@host)")
    if not settings.metrics_token and not settings.development:
        logging.getLogger("bridge").warning(
            "BRIDGE_METRICS_TOKEN is not set: /metrics answers 403 to every scraper")
    web.run_app(create_app(settings, freeze_heap=True), host=settings.host, port=settings.port,
                shutdown_timeout=20, keepalive_timeout=settings.idle_timeout_s,
                access_log=None, print=None)


@main.command()
@click.option("--from", "from_", default="whatsapp:+33612345678", show_default=True,
              help="The customer's WhatsApp address, kept whole.")
@click.option("--name", default="Camille", show_default=True, help="ProfileName")
@click.option("--payload", default="", help="ButtonPayload (e.g. csat:<ticket>:5)")
@click.option("--url", default="", help="Bridge base URL (default: the running bridge)")
@click.option("--sid", default="", help="MessageSid: SM and 32 hex digits, as Twilio's "
              "(default: a new one; the same one twice is a provider retry)")
@click.argument("body")
def simulate(from_: str, name: str, payload: str, url: str, sid: str, body: str) -> None:
    """Post a correctly signed fake WhatsApp message to a running bridge."""
    settings = load_settings()
    if not settings.twilio_auth_token and not (settings.data_dir / "dev-tokens.json").exists():
        # Signing with a token made up here would only earn a 403 bad_signature.
        raise click.ClickException(
            f"no bridge's signing token in {settings.data_dir.resolve()}: run this from the "
            "checkout that runs `make run`, or set BRIDGE_DATA_DIR to its var/ folder (or "
            "TWILIO_AUTH_TOKEN to the running bridge's)")
    token = str(settings.twilio_auth_token) or dev_tokens(settings.data_dir)["TWILIO_AUTH_TOKEN"]
    running = runtime_info(settings.data_dir)
    base = (url or f"http://127.0.0.1:{running.get('port', settings.port)}").rstrip("/")
    # Sign as Twilio would: against the public URL the bridge checks signatures with.
    public_base_url = str(running.get("public_base_url", settings.public_base_url))
    if sid and not twilio.is_message_sid(sid):
        raise click.BadParameter("two capitals (SM, MM) and 32 hex digits, as Twilio's",
                                param_hint="--sid")
    sid = sid or "SM" + uuid.uuid4().hex
    form = {
        "MessageSid": sid, "SmsMessageSid": sid, "AccountSid": "AC" + "0" * 32,
        "From": from_, "To": "whatsapp:+14155238886", "Body": body, "NumMedia": "0",
        "ProfileName": name, "WaId": from_.removeprefix("whatsapp:").lstrip("+"),
        "MessageType": "button" if payload else "text", "ApiVersion": "2010-04-01",
    }
    if payload:
        form["ButtonPayload"] = payload
        form["ButtonText"] = body
    signature = RequestValidator(token).compute_signature(
        public_base_url + "/webhooks/twilio", form)
    try:
        response = httpx.post(f"{base}/webhooks/twilio", data=form,
                              headers={"X-Twilio-Signature": signature}, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach the bridge at {base}: {exc}") from None
    click.echo(f"{response.status_code} {sid}")
    if response.status_code != 200:
        raise click.ClickException(response.text)


@main.command()
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
def tickets(status: str | None, limit: int) -> None:
    """A readable table of the newest tickets."""
    settings = load_settings()
    url = resolve_redis_url(settings)

    async def fetch() -> list[tuple[str, ...]]:
        client = async_redis(settings, url)
        try:
            store = TicketStore(client)
            page, _ = await store.list_tickets(
                status=Status(status) if status else None, limit=limit)
            rows: list[tuple[str, ...]] = []
            now = time.time()
            for t in page:
                contact = await store.get_contact(t.contact_id)
                rows.append((t.id, t.status.value, t.channel,
                             _one_line(contact.name, 32) or "-",
                             _one_line(contact.address, 40), str(t.message_count),
                             t.session.value,
                             t.assignee or "-", f"{int(now - t.created_at_ms / 1000)}s"))
            return rows
        finally:
            await client.aclose()

    rows = asyncio.run(fetch())
    header = ("ID", "STATUS", "CHANNEL", "NAME", "ADDRESS", "MSGS", "SESSION", "ASSIGNEE",
              "AGE")
    if not rows:
        click.echo("no tickets yet: try `bridge simulate \"Bonjour\"`")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


@main.command()
def reindex() -> None:
    """Rebuild the ticket list indexes from the tickets themselves."""
    settings = load_settings()
    url = resolve_redis_url(settings)

    async def go() -> int:
        client = async_redis(settings, url)
        try:
            return await TicketStore(client).reindex_all()
        finally:
            await client.aclose()

    click.echo(f"reindexed {asyncio.run(go())} tickets")


@main.command("openapi")
@click.option("--output", type=click.Path(path_type=Path), default=None)
def openapi_cmd(output: Path | None) -> None:
    """Print (or write) the OpenAPI document."""
    from bridge.web.openapi import DOCUMENT

    text = json.dumps(DOCUMENT, indent=2)
    if output:
        output.write_text(text)
    else:
        click.echo(text)


main.add_command(outbox)
main.add_command(failed)
main.add_command(retry)
main.add_command(check)
main.add_command(migrate)
main.add_command(report)
main.add_command(webhooks)
main.add_command(export)
for team_command in team_commands:
    main.add_command(team_command)
