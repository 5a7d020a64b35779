"""`bridge agents ...`, `bridge groups ...`, `bridge views ...`: people, groups and saved
views from the command line (the same records as the API's /api/v1/agents, /groups, /views).

    bridge groups add fr --description "France desk"
    bridge agents add awa --role manager --group fr --display-name "Awa Diop" \\
        --locale fr --time-zone Africa/Dakar --capacity 8      (prints the new token once)
    bridge agents list
    bridge agents set awa --available / --unavailable / --capacity 5 / --group fr --group sn
    bridge agents token awa        (a new token; the old one stops working)
    bridge agents remove awa
    bridge views list ; bridge views rebuild [ID]
"""

from __future__ import annotations

import asyncio
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from bridge.assignment import Assigner
from bridge.commands.outbound import _settings_and_url, _table, redis_url_option
from bridge.core.teams import (
    Group,
    Person,
    Role,
    check_name,
    check_person,
    holder_refusal,
)
from bridge.people import group_removal_refusal
from bridge.store.connection import async_redis
from bridge.store.teams import TeamStore
from bridge.store.tickets import TicketStore
from bridge.store.views import ViewStore
from config.settings import RESERVED_AUTHORS

T = TypeVar("T")


def _run(redis_url: str | None, work: Callable[[TeamStore, ViewStore, TicketStore],
                                                Awaitable[T]]) -> T:
    settings, url = _settings_and_url(redis_url)

    async def go() -> T:
        client = async_redis(settings, url)
        try:
            return await work(TeamStore(client), ViewStore(client),
                              TicketStore(client, contact_key=settings.contact_key_bytes))
        finally:
            await client.aclose()
    return asyncio.run(go())


def _name(value: str) -> str:
    try:
        name = check_name("name", value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if name in RESERVED_AUTHORS:
        raise click.BadParameter(f"{name} is a built-in author's name")
    return name


def _checked(person: Person) -> Person:
    """The API's checks of a person's values (bridge.core.teams.check_person): a person
    the CLI saved past them could no longer be changed through the API."""
    try:
        return check_person(person)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _zone(value: str) -> str:
    if value:
        try:
            zoneinfo.ZoneInfo(value)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise click.BadParameter(f"{value!r} is not an IANA time zone") from None
    return value


async def _known_groups(teams: TeamStore, groups: tuple[str, ...]) -> frozenset[str]:
    unknown = set(groups) - {g.name for g in await teams.groups()}
    if unknown:
        raise click.ClickException(f"no such group(s): {', '.join(sorted(unknown))} "
                                   "(bridge groups add NAME)")
    return frozenset(groups)


async def _refuse_stranding(tickets: TicketStore, name: str, after: Person | None) -> None:
    """As the API: no change that leaves unsolved tickets with someone who can no longer
    hold them (core.teams.could_still_hold)."""
    left = await tickets.stranded_by(name, after)
    if left:
        raise click.ClickException(holder_refusal(name, left))


@click.group()
def agents() -> None:
    """People: roles (admin, manager, agent, read_only), groups, capacity, tokens."""


@agents.command("list")
@redis_url_option
def list_agents(redis_url: str | None) -> None:
    """Every person, with their load (active conversations) over their capacity."""
    async def work(teams: TeamStore, _: ViewStore, __: TicketStore) -> list[tuple[str, ...]]:
        people = await teams.people()
        loads = await teams.loads(p.name for p in people)
        return [(p.name, p.role.value, ",".join(sorted(p.groups)) or "-",
                 f"{loads[p.name]}/{p.capacity}", "yes" if p.available else "no",
                 p.display_name or "-", p.locale or "-", p.time_zone or "-") for p in people]
    rows = _run(redis_url, work)
    if not rows:
        click.echo("no agents yet: bridge agents add NAME --group GROUP")
        return
    _table(("NAME", "ROLE", "GROUPS", "LOAD", "AVAILABLE", "DISPLAY NAME", "LOCALE", "ZONE"),
           rows)


@agents.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="agent",
              show_default=True)
@click.option("--group", "groups", multiple=True, help="A group (repeat for several).")
@click.option("--display-name", default="")
@click.option("--locale", default="")
@click.option("--time-zone", default="")
@click.option("--capacity", type=click.IntRange(0, 1000), default=10, show_default=True)
@redis_url_option
def add_agent(name: str, role: str, groups: tuple[str, ...], display_name: str, locale: str,
              time_zone: str, capacity: int, redis_url: str | None) -> None:
    """Add a person and print their API token (shown once)."""
    name, time_zone = _name(name), _zone(time_zone)

    async def work(teams: TeamStore, _: ViewStore, __: TicketStore) -> str:
        if await teams.find_person(name) is not None:
            raise click.ClickException(f"agent {name} exists (bridge agents set)")
        person = _checked(Person(
            name=name, role=Role(role), groups=await _known_groups(teams, groups),
            display_name=display_name, locale=locale, time_zone=time_zone,
            capacity=capacity))
        token = teams.new_token()
        await teams.save_person(person, token=token)
        return token
    token = _run(redis_url, work)
    click.echo(f"added {name} ({role}); API token (shown once): {token}")


@agents.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=None)
@click.option("--group", "groups", multiple=True, help="Replaces the groups (repeat).")
@click.option("--capacity", type=click.IntRange(0, 1000), default=None)
@click.option("--available/--unavailable", default=None)
@click.option("--display-name", default=None)
@click.option("--locale", default=None)
@click.option("--time-zone", default=None)
@redis_url_option
def set_agent(name: str, role: str | None, groups: tuple[str, ...], capacity: int | None,
              available: bool | None, display_name: str | None, locale: str | None,
              time_zone: str | None, redis_url: str | None) -> None:
    """Change a person (only the options given). As the API: someone made available (or
    given room) takes their groups' waiting tickets at once; made read-only, they leave
    the rotation."""
    settings, _ = _settings_and_url(redis_url)

    async def work(teams: TeamStore, _: ViewStore, tickets: TicketStore) -> None:
        person = await teams.find_person(name)
        if person is None:
            raise click.ClickException(f"no agent {name}")
        changes: dict[str, object] = {}
        if role is not None:
            changes["role"] = Role(role)
        if groups:
            changes["groups"] = await _known_groups(teams, groups)
        for key, value in (("capacity", capacity), ("available", available),
                           ("display_name", display_name), ("locale", locale),
                           ("time_zone", None if time_zone is None else _zone(time_zone))):
            if value is not None:
                changes[key] = value
        after = Person(**{**person.__dict__, **changes})
        if after.role is Role.READ_ONLY and available is None:
            after = Person(**{**after.__dict__, "available": False})  # out of the rotation
        after = _checked(after)
        if (after.role, after.groups) != (person.role, person.groups):
            await _refuse_stranding(tickets, name, after)
        await teams.save_person(after)
        if (after.available, after.capacity) != (person.available, person.capacity):
            await Assigner(tickets, teams, settings.teams).drain_for(
                after, int(time.time() * 1000))
    _run(redis_url, work)
    click.echo(f"updated {name}")


@agents.command("token")
@click.argument("name")
@redis_url_option
def rotate_token(name: str, redis_url: str | None) -> None:
    """Give a person a new API token (the old one stops working)."""
    async def work(teams: TeamStore, _: ViewStore, __: TicketStore) -> str:
        person = await teams.find_person(name)
        if person is None:
            raise click.ClickException(f"no agent {name}")
        token = teams.new_token()
        await teams.save_person(person, token=token)
        return token
    click.echo(f"new API token of {name} (shown once): {_run(redis_url, work)}")


@agents.command("remove")
@click.argument("name")
@redis_url_option
def remove_agent(name: str, redis_url: str | None) -> None:
    """Remove a person and their token."""
    async def work(teams: TeamStore, _: ViewStore, tickets: TicketStore) -> None:
        if await teams.find_person(name) is None:
            raise click.ClickException(f"no agent {name}")
        await _refuse_stranding(tickets, name, None)
        await teams.delete_person(name)
    _run(redis_url, work)
    click.echo(f"removed {name}")


@click.group()
def groups() -> None:
    """Agents' groups (a ticket belongs to at most one)."""


@groups.command("list")
@redis_url_option
def list_groups(redis_url: str | None) -> None:
    async def work(teams: TeamStore, _: ViewStore, __: TicketStore) -> list[tuple[str, ...]]:
        people = await teams.people()
        return [(g.name, ",".join(p.name for p in people if g.name in p.groups) or "-",
                 g.description or "-") for g in await teams.groups()]
    _table(("GROUP", "MEMBERS", "DESCRIPTION"), _run(redis_url, work))


@groups.command("add")
@click.argument("name")
@click.option("--description", default="")
@redis_url_option
def add_group(name: str, description: str, redis_url: str | None) -> None:
    name = _name(name)

    async def work(teams: TeamStore, _: ViewStore, __: TicketStore) -> None:
        # As the API (409 group_exists): adding never replaces a group and its description.
        if await teams.group_exists(name):
            raise click.ClickException(f"group {name} exists (bridge groups list)")
        await teams.save_group(Group(name=name, description=description))
    _run(redis_url, work)
    click.echo(f"group {name} saved")


@groups.command("remove")
@click.argument("name")
@redis_url_option
def remove_group(name: str, redis_url: str | None) -> None:
    """Remove a group that has no members and no unsolved tickets left (as the API)."""
    async def work(teams: TeamStore, _: ViewStore, tickets: TicketStore) -> None:
        if not await teams.group_exists(name):
            raise click.ClickException(f"no group {name}")
        refusal = await group_removal_refusal(teams, tickets, name)
        if refusal is not None:
            raise click.ClickException(refusal.message)
        await teams.delete_group(name)
    _run(redis_url, work)
    click.echo(f"removed group {name}")


@click.group()
def views() -> None:
    """Saved views (created through the API; listed and rebuilt here)."""


@views.command("list")
@redis_url_option
def list_views(redis_url: str | None) -> None:
    async def work(_: TeamStore, store: ViewStore, __: TicketStore) -> list[tuple[str, ...]]:
        return [(v.id, v.name, v.owner or "(shared)", v.group_by.value if v.group_by else "-",
                 str(v.conditions.to_dict())) for v in await store.views()]
    _table(("ID", "NAME", "OWNER", "GROUP BY", "CONDITIONS"), _run(redis_url, work))


@views.command("rebuild")
@click.argument("view_id", required=False)
@redis_url_option
def rebuild_views(view_id: str | None, redis_url: str | None) -> None:
    """Build a view's sets again from every ticket (all views without an id)."""
    async def work(_: TeamStore, store: ViewStore, tickets: TicketStore) -> int:
        count = 0
        for view in await store.views():
            if view_id is None or view.id == view_id:
                await store.rebuild(view, tickets)
                count += 1
        return count
    click.echo(f"rebuilt {_run(redis_url, work)} view(s)")


team_commands = (agents, groups, views)
