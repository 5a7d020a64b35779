"""`bridge agents|groups|views ...` against a real Redis."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import redis
from click.testing import CliRunner

import bridge
from bridge.cli import main
from bridge.core.teams import Role
from bridge.store.teams import TeamStore
from bridge.store.tickets import TicketStore
from tests.conftest import CONTACT_KEY


def _bridge(redis_url: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env={
        "REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY, "BRIDGE_ADMIN_TOKEN": "",
        "BRIDGE_AGENT_TOKENS": "", **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output


def test_people_and_groups_from_the_command_line(redis_url: str,
                                                 sync_redis: redis.Redis) -> None:
    _bridge(redis_url, "groups", "add", "fr", "--description", "France desk")
    out = _bridge(redis_url, "agents", "add", "awa", "--role", "manager", "--group", "fr",
                  "--time-zone", "Africa/Dakar", "--capacity", "8")
    token = out.rsplit(" ", 1)[-1].strip()

    async def check() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            teams = TeamStore(client)
            assert await teams.name_of_token(token) == "awa"
            person = await teams.get_person("awa")
            assert (person.role, person.groups, person.capacity, person.time_zone) == (
                Role.MANAGER, frozenset({"fr"}), 8, "Africa/Dakar")
        finally:
            await client.aclose()

    asyncio.run(check())
    _bridge(redis_url, "agents", "set", "awa", "--available", "--capacity", "3")
    listing = _bridge(redis_url, "agents", "list")
    assert "awa" in listing and "0/3" in listing and "yes" in listing
    assert "awa" in _bridge(redis_url, "groups", "list")
    new_token = _bridge(redis_url, "agents", "token", "awa").rsplit(" ", 1)[-1].strip()
    assert new_token != token
    _bridge(redis_url, "agents", "remove", "awa")
    assert "no agents yet" in _bridge(redis_url, "agents", "list")


def test_bad_input_is_refused_and_writes_nothing(redis_url: str,
                                                 sync_redis: redis.Redis) -> None:
    env = {"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY}
    for args in (["agents", "add", "Bad Name"], ["agents", "add", "system"],
                 ["agents", "add", "x", "--group", "nope"],
                 ["agents", "add", "x", "--time-zone", "Mars/Olympus"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code != 0, args
    assert sync_redis.dbsize() == 0


def test_the_tickets_table_keeps_long_names_to_a_column(redis_url: str,
                                                        sync_redis: redis.Redis) -> None:
    from tests.factories import inbound
    from tests.faults.workers_support import in_store
    in_store(redis_url, lambda store: inbound(store, name="Camille " + "x" * 190))
    out = _bridge(redis_url, "tickets")
    row = out.splitlines()[1]
    assert "Camille xxx" in row and "…" in row and len(row) < 160


def test_a_change_or_removal_that_would_strand_held_tickets_is_refused(
        redis_url: str, sync_redis: redis.Redis) -> None:
    """As in the API: tickets are not left with someone who can no longer hold them."""
    from tests.factories import inbound
    from tests.faults.workers_support import in_store

    _bridge(redis_url, "groups", "add", "fr")
    _bridge(redis_url, "groups", "add", "sn")
    _bridge(redis_url, "agents", "add", "awa", "--group", "fr")

    async def held(store: TicketStore) -> str:
        tid = str((await inbound(store)).ticket_id)
        await store.update_ticket(tid, author="admin", now_ms=1, group="fr", assignee="awa")
        return tid

    tid = in_store(redis_url, held)
    env = {"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY}
    for args in (["agents", "set", "awa", "--group", "sn"],
                 ["agents", "set", "awa", "--role", "read_only"],
                 ["agents", "remove", "awa"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code != 0 and f"({tid})" in result.output, (args, result.output)
    assert "fr" in _bridge(redis_url, "agents", "list")  # unchanged
    _bridge(redis_url, "agents", "set", "awa", "--group", "fr", "--group", "sn")


def test_adding_an_existing_group_is_refused_and_keeps_it(redis_url: str,
                                                          sync_redis: redis.Redis) -> None:
    """As the API's 409 group_exists: `groups add` never replaces a group silently."""
    _bridge(redis_url, "groups", "add", "fr", "--description", "France desk")
    result = CliRunner().invoke(main, ["groups", "add", "fr", "--description", "other"],
                                env={"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY})
    assert result.exit_code != 0
    assert "group fr exists" in result.output and "saved" not in result.output

    async def kept() -> list[tuple[str, str]]:
        async with redis.asyncio.Redis.from_url(redis_url) as client:
            return [(g.name, g.description) for g in await TeamStore(client).groups()]
    assert asyncio.run(kept()) == [("fr", "France desk")]


def test_the_cli_checks_people_as_the_api_does(redis_url: str, sync_redis: redis.Redis
                                               ) -> None:
    """It saved what the API refuses (a bad locale, a long display name, a read-only person
    available for assignment), and such a person could then not be changed by the API."""
    env = {"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY}
    for args in (["agents", "add", "x", "--locale", "xx!!"],
                 ["agents", "add", "x", "--display-name", "y" * 101]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code != 0, args
    assert sync_redis.dbsize() == 0
    _bridge(redis_url, "agents", "add", "ro", "--role", "read_only")
    refused = CliRunner().invoke(main, ["agents", "set", "ro", "--available"], env=env)
    assert refused.exit_code != 0 and "read_only" in refused.output
    _bridge(redis_url, "agents", "add", "awa")
    _bridge(redis_url, "agents", "set", "awa", "--available", "--locale", "pt-BR")
    _bridge(redis_url, "agents", "set", "awa", "--role", "read_only")  # leaves the rotation
    assert "pt-BR" in (listing := _bridge(redis_url, "agents", "list"))
    assert [line.split()[4] for line in listing.splitlines()[1:]] == ["no", "no"]


def test_made_available_from_the_cli_takes_the_waiting_tickets(
        redis_url: str, sync_redis: redis.Redis, tmp_path: Path) -> None:
    """As PUT /api/v1/me/availability: the waiting tickets of their groups at once."""
    from tests.factories import inbound
    from tests.faults.workers_support import in_store
    config = tmp_path / "config"
    shutil.copytree(Path(bridge.__file__).parent.parent / "config", config)
    teams = config / "teams.toml"
    teams.write_text(teams.read_text().replace("auto = false", "auto = true")
                     .replace('default_group = ""', 'default_group = "fr"'))
    env = {"BRIDGE_CONFIG_DIR": str(config)}
    _bridge(redis_url, "groups", "add", "fr")
    _bridge(redis_url, "agents", "add", "awa", "--group", "fr")

    async def waiting(store: TicketStore) -> str:
        tid = str((await inbound(store)).ticket_id)
        await store.update_ticket(tid, author="admin", now_ms=1, group="fr")
        await TeamStore(store.redis).wait("fr", tid, 1)
        return tid

    tid = in_store(redis_url, waiting)
    _bridge(redis_url, "agents", "set", "awa", "--available", env=env)

    async def holder(store: TicketStore) -> str:
        return (await store.get_ticket(tid)).assignee
    assert in_store(redis_url, holder) == "awa"


def test_a_group_is_removed_from_the_cli_once_empty(redis_url: str,
                                                    sync_redis: redis.Redis) -> None:
    """`bridge groups remove`, refused as the API's DELETE is while it has members."""
    env = {"REDIS_URL": redis_url, "BRIDGE_CONTACT_KEY": CONTACT_KEY}
    _bridge(redis_url, "groups", "add", "fr")
    _bridge(redis_url, "agents", "add", "awa", "--group", "fr")
    refused = CliRunner().invoke(main, ["groups", "remove", "fr"], env=env)
    assert refused.exit_code != 0 and "still has members: awa" in refused.output
    _bridge(redis_url, "agents", "remove", "awa")
    assert "removed group fr" in _bridge(redis_url, "groups", "remove", "fr")
    assert "fr" not in _bridge(redis_url, "groups", "list")
    missing = CliRunner().invoke(main, ["groups", "remove", "fr"], env=env)
    assert missing.exit_code != 0 and "no group fr" in missing.output
