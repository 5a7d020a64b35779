"""Automatic assignment: round robin under capacity, driven by the change log (the teams
consumer), capacity freed by session end and solve, taking tickets by hand."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestClient

from bridge.assignment import Assigner
from bridge.core.changes import Origin
from bridge.core.teams import Group, Person, Role, TeamConfig
from bridge.core.tickets import EventType, Status
from bridge.store.keys import RELAY_POSITIONS
from bridge.store.teams import OWNER, TeamStore, load_key
from bridge.store.tickets import TicketStore
from bridge.store.views import ViewStore
from tests.conftest import ADMIN_TOKEN, CONTACT_KEY, make_settings
from tests.factories import inbound, now_ms
from tests.relay_support import relay_all
from workers.teams import TeamsConsumer

AUTO = TeamConfig(auto_assign=True, default_group="support")
AGENTS = ("a1", "a2", "a3", "a4", "a5")


async def _team(teams: TeamStore, *, capacity: int = 10, available: bool = True) -> None:
    await teams.save_group(Group(name="support"))
    for name in AGENTS:
        await teams.save_person(Person(name=name, role=Role.AGENT, groups=frozenset({"support"}),
                                       capacity=capacity, available=available))


def _consumer(store: TicketStore, aredis: redis.asyncio.Redis,
              config: TeamConfig = AUTO) -> TeamsConsumer:
    return TeamsConsumer(store, TeamStore(aredis), ViewStore(aredis), config)


async def _new_tickets(store: TicketStore, count: int) -> list[str]:
    routed = await asyncio.gather(*(inbound(store, address=f"whatsapp:+3361{i:07d}")
                                    for i in range(count)))
    return [str(r.ticket_id) for r in routed]


async def test_200_simultaneous_picks_fill_5_agents_to_capacity_evenly(
        store: TicketStore, redis_url: str, sync_redis: redis.Redis) -> None:
    """The round-robin script alone, from 200 concurrent callers on 8 connections."""
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(8)]
    try:
        await _team(TeamStore(clients[0]))
        picks = await asyncio.gather(*(TeamStore(clients[i % 8]).pick_agent("support", str(i))
                                       for i in range(200)))
        given = Counter(p for p in picks if p)
        assert given == dict.fromkeys(AGENTS, 10)
        assert picks.count(None) == 150
        for name in AGENTS:
            assert sync_redis.scard(load_key(name)) == 10
        # Asking again for a ticket already given answers its holder, without a new slot.
        given_to = next(i for i, p in enumerate(picks) if p)
        holder = str(picks[given_to])
        assert await TeamStore(clients[0]).pick_agent("support", str(given_to)) == holder
        assert sync_redis.scard(load_key(holder)) == 10
    finally:
        for c in clients:
            await c.aclose()


async def test_holding_many_tickets_at_once_moves_each_load_once(
        aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    teams = TeamStore(aredis)
    assert await teams.hold("t1", "a1") == ""
    assert await teams.hold("t2", "a1") == ""
    previous = await teams.hold_many([("t1", "a2"), ("t2", ""), ("t3", ""), ("t4", "a1")])
    assert previous == {"t1": "a1", "t2": "a1", "t3": "", "t4": ""}
    assert sync_redis.smembers(load_key("a1")) == {b"t4"}
    assert sync_redis.smembers(load_key("a2")) == {b"t1"}
    assert sync_redis.hgetall(OWNER) == {b"t1": b"a2", b"t4": b"a1"}
    # Again (a batch handed on twice): nothing moves, each already holds its ticket.
    assert await teams.hold_many([("t1", "a2"), ("t2", ""), ("t4", "a1")]) == {
        "t1": "a2", "t2": "", "t4": "a1"}
    assert sync_redis.smembers(load_key("a1")) == {b"t4"}
    assert await teams.hold_many([]) == {}


async def test_new_tickets_from_the_change_log_spread_evenly_under_capacity(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    await _team(TeamStore(aredis))
    ids = await _new_tickets(store, 200)
    await relay_all(aredis, sync_redis, [_consumer(store, aredis)])
    tickets = await store.get_tickets(ids)
    assert Counter(t.assignee for t in tickets if t.assignee) == dict.fromkeys(AGENTS, 10)
    assert all(t.group == "support" for t in tickets)
    assert len(await TeamStore(aredis).waiting("support", 500)) == 150
    # The assignment is in the thread, by the automatic assigner.
    first = next(t for t in tickets if t.assignee)
    events, _ = await store.events(first.id)
    assert any(e.type is EventType.TICKET_UPDATED and e.data.get("assignee") == first.assignee
               and e.author == "auto-assign" for e in events)


async def test_ending_a_session_or_solving_frees_capacity_for_the_next_waiting(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    teams = TeamStore(aredis)
    await _team(teams, capacity=1)
    ids = await _new_tickets(store, 7)
    consumer = _consumer(store, aredis)
    await relay_all(aredis, sync_redis, [consumer])
    by_id = {t.id: t for t in await store.get_tickets(ids)}
    busy = [tid for tid in ids if by_id[tid].assignee]
    waiting = await teams.waiting("support")
    assert len(busy) == 5 and len(waiting) == 2
    ender, solver = busy[0], busy[1]
    await store.update_ticket(ender, author=by_id[ender].assignee, now_ms=now_ms(),
                              end_session_reason="agent", origin=Origin.AGENT)
    await store.update_ticket(solver, author=by_id[solver].assignee, now_ms=now_ms(),
                              status=Status.SOLVED, origin=Origin.AGENT)
    await relay_all(aredis, sync_redis, [consumer])
    after = {t.id: t for t in await store.get_tickets(waiting)}
    assert {after[w].assignee for w in waiting} == {by_id[ender].assignee,
                                                    by_id[solver].assignee}
    assert await teams.waiting("support") == []
    assert max((await teams.loads(AGENTS)).values()) == 1


async def test_unavailable_agents_get_nothing_and_reopened_tickets_are_assigned(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    teams = TeamStore(aredis)
    await _team(teams, available=False)
    [tid] = await _new_tickets(store, 1)
    consumer = _consumer(store, aredis)
    await relay_all(aredis, sync_redis, [consumer])
    assert (await store.get_ticket(tid)).assignee == ""
    await store.update_ticket(tid, author="x", now_ms=now_ms(), status=Status.SOLVED)
    await teams.save_person(Person(name="a1", role=Role.AGENT, groups=frozenset({"support"}),
                                   capacity=10, available=True))
    await inbound(store, address="whatsapp:+33610000000", body="again")  # reopens
    await relay_all(aredis, sync_redis, [consumer])
    ticket = await store.get_ticket(tid)
    assert (ticket.status, ticket.assignee) == (Status.OPEN, "a1")


async def test_a_ticket_taken_meanwhile_gives_the_slot_back(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    teams = TeamStore(aredis)
    await _team(teams)
    [tid] = await _new_tickets(store, 1)
    await store.update_ticket(tid, author="a3", now_ms=now_ms(), assignee="a3")
    assert await Assigner(store, teams, AUTO).assign(tid, now_ms()) is None
    assert (await store.get_ticket(tid)).assignee == "a3"
    assert await teams.load("a1") == 0


async def test_new_tickets_nobody_places_cost_the_teams_consumer_no_read(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without automatic assignment or a group to join, a new ticket waits as routing
    opened it: the consumer reads nothing for it (the bulk of new-conversation traffic)."""
    reads: list[list[tuple[str, str]]] = []
    tickets_in = store.tickets_in

    async def counting(pairs: list[tuple[str, str]]) -> list[Any]:
        reads.append(list(pairs))
        return await tickets_in(pairs)

    monkeypatch.setattr(store, "tickets_in", counting)
    tids = await _new_tickets(store, 3)
    assert await relay_all(aredis, sync_redis, [_consumer(store, aredis, TeamConfig())]) == 3
    assert [pairs for pairs in reads if pairs] == []
    # The same batch again with a group to join: read, and placed.
    reads.clear()
    await aredis.delete(RELAY_POSITIONS)
    config = TeamConfig(default_group="support")
    await relay_all(aredis, sync_redis, [_consumer(store, aredis, config)])
    assert {t for pairs in reads for _, t in pairs} == set(tids)
    assert {(await store.get_ticket(t)).group for t in tids} == {"support"}


async def test_without_auto_assignment_new_tickets_join_the_default_group(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    await _team(TeamStore(aredis))
    [tid] = await _new_tickets(store, 1)
    config = TeamConfig(channel_groups=(("whatsapp", "support"),))
    await relay_all(aredis, sync_redis, [_consumer(store, aredis, config)])
    ticket = await store.get_ticket(tid)
    assert (ticket.group, ticket.assignee) == ("support", "")


# ------------------------------------------------------------------ through the API

@pytest.fixture
def settings(redis_url: str) -> Any:
    return make_settings(redis_url, teams=AUTO)


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_two_agents_taking_at_once_one_wins(client: TestClient[Any, Any],
                                                  aredis: redis.asyncio.Redis) -> None:
    store = TicketStore(aredis, contact_key=CONTACT_KEY.encode())
    tokens = {}
    await client.post("/api/v1/groups", json={"name": "support"}, headers=ADMIN)
    for name in ("a1", "a2"):
        made = await client.post("/api/v1/agents", headers=ADMIN,
                                 json={"name": name, "groups": ["support"]})
        tokens[name] = (await made.json())["token"]
    [tid] = await _new_tickets(store, 1)
    answers = await asyncio.gather(*(
        client.post(f"/api/v1/tickets/{tid}/take",
                    headers={"Authorization": f"Bearer {tokens[n]}"}) for n in ("a1", "a2")))
    assert sorted(a.status for a in answers) == [200, 409]
    winner = next(n for n, a in zip(("a1", "a2"), answers, strict=True) if a.status == 200)
    assert (await store.get_ticket(tid)).assignee == winner


async def test_becoming_available_hands_over_waiting_tickets(
        client: TestClient[Any, Any], aredis: redis.asyncio.Redis,
        sync_redis: redis.Redis) -> None:
    store = TicketStore(aredis, contact_key=CONTACT_KEY.encode())
    await client.post("/api/v1/groups", json={"name": "support"}, headers=ADMIN)
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "a1", "groups": ["support"], "capacity": 2})
    token = (await made.json())["token"]
    ids = await _new_tickets(store, 3)
    await relay_all(aredis, sync_redis, [_consumer(store, aredis)])
    assert len(await TeamStore(aredis).waiting("support")) == 3
    response = await client.put("/api/v1/me/availability", json={"available": True},
                                headers={"Authorization": f"Bearer {token}"})
    assert (await response.json())["load"] == 2
    assert sorted(t.assignee for t in await store.get_tickets(ids)) == ["", "a1", "a1"]


# ------------------------------------------------------------------ triggers

def test_rules_read_groups_and_fields() -> None:
    from bridge.core.rule_parsing import RuleError, parse_config
    from bridge.core.tickets import Ticket
    config = parse_config({"triggers": [{
        "name": "visa_to_sn", "on": ["ticket.created"],
        "when": {"group": [""], "fields": {"topic": "visa"}},
        "then": {"set_group": "sn", "assign": ""}}]})
    [rule] = config.triggers
    ticket = Ticket(id="1", contact_id="c", channel="whatsapp", status=Status.NEW,
                    created_at_ms=0, updated_at_ms=0, field_values={"topic": "visa"})
    assert rule.when.matches(ticket, 0)
    assert not rule.when.matches(Ticket(**{**ticket.__dict__, "group": "fr"}), 0)
    assert not rule.when.matches(Ticket(**{**ticket.__dict__, "field_values": {}}), 0)
    assert rule.then.set_group == "sn" and rule.then.changes_ticket
    with pytest.raises(RuleError):
        parse_config({"triggers": [{"name": "x", "on": ["ticket.created"],
                                    "then": {"set_group": "Not A Group"}}]})


async def test_a_trigger_moves_a_ticket_to_another_group(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    from bridge.core.rule_parsing import parse_config
    from bridge.jobs import JobQueues
    from bridge.store.macros import MacroStore
    from workers.automations import Deps, handle_ticket_event
    config = parse_config({"triggers": [{
        "name": "widget_to_web", "on": ["ticket.created"], "when": {"group": [""]},
        "then": {"set_group": "web"}}]})
    await TeamStore(aredis).save_group(Group(name="web"))
    [tid] = await _new_tickets(store, 1)
    deps = Deps(store=store, macros=MacroStore(aredis, {}), queues=JobQueues(sync_redis),
                config=config)
    out = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.created",
                                           "version": 1, "event_id": "e1"})
    assert out["fired"] == ["widget_to_web"]
    assert (await store.get_ticket(tid)).group == "web"


async def test_a_ticket_not_indexed_yet_is_assigned_all_the_same(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> None:
    """The relay may read a new ticket's change before the web process wrote the ticket ->
    contact index (just after the routing script): the change names the contact."""
    from bridge.store import keys
    await _team(TeamStore(aredis))
    [tid] = await _new_tickets(store, 1)
    sync_redis.hdel(keys.TICKET_CONTACT, tid)
    await relay_all(aredis, sync_redis, [_consumer(store, aredis)])
    ticket = await store.get_ticket(tid)  # the update indexed it again
    assert (ticket.group, ticket.assignee) == ("support", "a1")


@pytest.mark.parametrize(("then", "expected"), [
    # Moved to a group its holder is not in: back to that group's queue.
    ({"set_group": "en"}, ("en", "")),
    # A holder who is in the new group keeps it.
    ({"set_group": "fr2"}, ("fr2", "afr")),
    # A rule naming a holder outside the group changes nothing (and says why on the ticket).
    ({"set_group": "en", "assign": "afr"}, ("fr", "afr")),
    # Nobody of that name, no such group: refused as the API refuses them.
    ({"assign": "bob"}, ("fr", "afr")),
    ({"set_group": "nogroup"}, ("fr", "afr")),
    # An agent of BRIDGE_AGENT_TOKENS (no record, no group) may hold a pool ticket.
    ({"set_group": "", "assign": "alice"}, ("", "alice")),
])
async def test_a_rule_never_leaves_a_ticket_with_a_holder_outside_its_group(
        store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
        then: dict[str, str], expected: tuple[str, str]) -> None:
    """The API refuses a group whose members do not include the assignee; a rule left the
    assignee in place, who then worked a ticket of a group not theirs."""
    from bridge.core.rule_parsing import parse_config
    from bridge.jobs import JobQueues
    from bridge.store.macros import MacroStore
    from workers.automations import Deps, handle_ticket_event
    teams = TeamStore(aredis)
    for group in ("fr", "fr2", "en"):
        await teams.save_group(Group(name=group))
    await teams.save_person(Person(name="afr", role=Role.AGENT,
                                   groups=frozenset({"fr", "fr2"})))
    [tid] = await _new_tickets(store, 1)
    await store.update_ticket(tid, author="admin", now_ms=1, group="fr", assignee="afr")
    config = parse_config({"triggers": [{"name": "move", "on": ["ticket.reopened"],
                                         "then": then}]})
    deps = Deps(store=store, macros=MacroStore(aredis, {}), queues=JobQueues(sync_redis),
                config=config, token_agents=frozenset({"alice"}))
    out = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.reopened",
                                           "version": 2, "event_id": "e1"})
    assert out["fired"] == ["move"]
    ticket = await store.get_ticket(tid)
    assert (ticket.group, ticket.assignee) == expected
    notes = [e.body for e in (await store.events(tid))[0] if e.type.value == "note"]
    refused = expected == ("fr", "afr")
    assert bool(notes) is refused
    if refused:
        assert then.get("assign", then.get("set_group", "")) in notes[-1]
