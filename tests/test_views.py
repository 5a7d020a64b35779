"""Saved views: the store's sets, counts and pages against a reference filter over random
ticket sets (hypothesis), and the views API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.tickets import UNSOLVED, Status, Ticket, aging
from bridge.core.views import Sort, View, aging_range, parse_view
from bridge.store import keys
from bridge.store.tickets import TicketStore
from bridge.store.views import ViewStore
from bridge.web.keys import store_key
from tests.conftest import ADMIN_TOKEN, CONTACT_KEY
from tests.factories import inbound

NOW_MS = 1_700_000_000_000
YELLOW_S, RED_S = 18 * 3600, 24 * 3600
GROUPS = ("", "fr", "sn")
PEOPLE = ("", "a1", "a2")

ticket_specs = st.lists(st.fixed_dictionaries({
    "status": st.sampled_from(list(Status)),
    "channel": st.sampled_from(["whatsapp", "widget"]),
    "group": st.sampled_from(GROUPS),
    "assignee": st.sampled_from(PEOPLE),
    "tags": st.sets(st.sampled_from(["vip", "billing"])),
    "country": st.sampled_from([None, "fr", "sn"]),
    # Few distinct moments, so that tickets share a millisecond (ties in the sets).
    "age_h": st.sampled_from([0, 1, 17, 18, 20, 24, 30]),
}), max_size=40)

conditions = st.fixed_dictionaries({}, optional={
    "status": st.lists(st.sampled_from([s.value for s in Status]), max_size=3),
    "status_below": st.sampled_from(["open", "solved", "closed"]),
    "channel": st.lists(st.sampled_from(["whatsapp", "widget"]), max_size=1),
    "group": st.lists(st.sampled_from(GROUPS), max_size=2),
    "assignee": st.lists(st.sampled_from(["a1", "a2"]), max_size=2),
    "unassigned": st.booleans(),
    "tags_all": st.lists(st.sampled_from(["vip", "billing"]), max_size=1),
    "tags_none": st.lists(st.sampled_from(["vip"]), max_size=1),
    "fields": st.dictionaries(st.just("country"), st.sampled_from(["fr", "sn"]), max_size=1),
    "aging": st.sampled_from([["red"], ["yellow"], ["yellow", "red"], ["ok"], ["ok", "yellow"]]),
})
view_bodies = st.fixed_dictionaries({
    "name": st.just("v"), "conditions": conditions,
    "sort": st.sampled_from(["created_desc", "created_asc"]),
    "group_by": st.sampled_from([None, "status", "assignee"]),
})


def _tickets(specs: list[dict[str, Any]]) -> list[Ticket]:
    return [Ticket(id=str(i + 1), contact_id=f"contact{i}", channel=s["channel"],
                   status=s["status"], created_at_ms=NOW_MS - s["age_h"] * 3600 * 1000,
                   updated_at_ms=NOW_MS, group=s["group"], assignee=s["assignee"],
                   tags=tuple(sorted(s["tags"])),
                   field_values={"country": s["country"]} if s["country"] else {})
            for i, s in enumerate(specs)]


async def _write(client: redis.asyncio.Redis, tickets: list[Ticket]) -> None:
    """The keys the routing script and update_ticket leave for these tickets."""
    async with client.pipeline(transaction=False) as pipe:
        for t in tickets:
            pipe.hset(keys.ticket(t.contact_id, t.id), mapping={
                "id": t.id, "contact_id": t.contact_id, "channel": t.channel,
                "status": t.status.value, "created_at_ms": t.created_at_ms,
                "updated_at_ms": t.updated_at_ms, "group": t.group, "assignee": t.assignee,
                "tags": json.dumps(list(t.tags)), "fields": json.dumps(dict(t.field_values))})
            pipe.hset(keys.TICKET_CONTACT, t.id, t.contact_id)
            pipe.zadd(keys.index("all"), {t.id: int(t.id)})
        await pipe.execute()


def reference(view: View, tickets: list[Ticket], scope: frozenset[str] | None,
              group: str | None) -> list[str]:
    """What the view shows, computed from the tickets alone."""
    def shown(t: Ticket) -> bool:
        colour = aging(t.status, t.age_s(NOW_MS), yellow_after_s=YELLOW_S, red_after_s=RED_S)
        return (view.conditions.matches(t)
                and (not view.conditions.aging or (t.status in UNSOLVED
                                                   and colour in view.conditions.aging))
                and (scope is None or t.group in scope)
                and (group is None or view.group_of(t) == group))
    ordered = sorted((t for t in tickets if shown(t)), key=lambda t: (t.created_at_ms, t.id),
                     reverse=view.sort is Sort.CREATED_DESC)
    return [t.id for t in ordered]


async def _read_all(store: ViewStore, view: View, scope: frozenset[str] | None,
                    group: str | None, limit: int) -> tuple[list[str], int]:
    low, high = aging_range(view.conditions.aging, now_ms=NOW_MS, yellow_after_s=YELLOW_S,
                            red_after_s=RED_S)
    out: list[str] = []
    cursor = None
    for _ in range(200):  # a cursor that does not move on fails below, not forever
        ids, cursor = await store.page(view, low_ms=low, high_ms=high, scope=scope,
                                       group=group, cursor=cursor, limit=limit)
        assert len(ids) <= limit
        out += ids
        if cursor is None:
            break
    else:
        raise AssertionError(f"paging did not end: {out[:20]}")
    counts = await store.counts(view, low, high, scope)
    count = counts.get(group, 0) if group is not None else sum(counts.values())
    return out, count


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=ticket_specs, body=view_bodies, changes=ticket_specs,
       limit=st.integers(1, 7), scope=st.sampled_from([None, frozenset({"", "fr"})]))
def test_views_show_what_the_reference_filter_shows(
        redis_url: str, specs: list[dict[str, Any]], body: dict[str, Any],
        changes: list[dict[str, Any]], limit: int, scope: frozenset[str] | None) -> None:
    try:
        view = parse_view("1", "", body)
    except ValueError:
        return  # e.g. status and status_below matching nothing: refused at save

    async def check() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.flushdb()
            tickets = _tickets(specs)
            await _write(client, tickets)
            views = ViewStore(client)
            await views.rebuild(view, TicketStore(client, contact_key=CONTACT_KEY.encode()))
            groups = {None} | {view.group_of(t) for t in tickets}
            for group in groups if view.group_by else {None}:
                expected = reference(view, tickets, scope, group)
                assert await _read_all(views, view, scope, group, limit) == (
                    expected, len(expected))
            # Changes refreshed one by one move tickets between the view's parts.
            changed = _tickets(changes)[:len(tickets)]
            changed = [Ticket(**{**c.__dict__, "id": t.id, "contact_id": t.contact_id,
                                 "created_at_ms": t.created_at_ms})
                       for c, t in zip(changed, tickets, strict=False)]
            await views.refresh(changed, [view])
            after = {t.id: t for t in [*tickets, *changed]}
            expected = reference(view, list(after.values()), scope, None)
            assert await _read_all(views, view, scope, None, limit) == (expected, len(expected))
        finally:
            await client.aclose()

    asyncio.run(check())


# ------------------------------------------------------------------ the API

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_a_shared_view_counts_groups_and_pages(client: TestClient[Any, Any]) -> None:
    store: TicketStore = client.app[store_key]
    ids = [str((await inbound(store, address=f"whatsapp:+3360000000{i}")).ticket_id)
           for i in range(5)]
    await client.patch(f"/api/v1/tickets/{ids[0]}", json={"status": "pending"}, headers=ADMIN)
    response = await client.post("/api/v1/views", headers=ADMIN, json={
        "name": "Unsolved by status", "shared": True, "group_by": "status",
        "conditions": {"status_below": "solved"}})
    assert response.status == 201
    view = await response.json()
    assert view["count"] == 5
    assert view["groups"] == [{"value": "new", "count": 4}, {"value": "pending", "count": 1}]
    page = await (await client.get(f"/api/v1/views/{view['id']}/tickets?group=new&limit=3",
                                   headers=ADMIN)).json()
    assert len(page["tickets"]) == 3 and {t["id"] for t in page["tickets"]} <= set(ids[1:])
    assert page["count"] == 4 and page["next_cursor"]
    rest = await (await client.get(
        f"/api/v1/views/{view['id']}/tickets?group=new&cursor={page['next_cursor']}",
        headers=ADMIN)).json()
    seen = [t["id"] for t in page["tickets"] + rest["tickets"]]
    assert sorted(seen) == sorted(ids[1:]) and rest["next_cursor"] is None
    counts = await (await client.get("/api/v1/views/counts", headers=ADMIN)).json()
    assert counts == {"counts": {view["id"]: 5}}


@pytest.mark.parametrize("body", [
    {"name": ""}, {"name": "v", "conditions": {"status": ["later"]}},
    {"name": "v", "conditions": {"colour": "red"}}, {"name": "v", "sort": "random"},
    {"name": "v", "group_by": "channel"}, {"name": "v", "conditions": {"aging": ["ok", "red"]}},
    {"name": "v", "conditions": {"fields": {"nope": 1}}},
    {"name": "v", "conditions": {"channel": ["sms"]}},
    {"name": "v", "conditions": {"status": ["new"], "status_below": "new"}},
])
async def test_bad_views_are_422_and_not_saved(client: TestClient[Any, Any],
                                               body: dict[str, Any]) -> None:
    response = await client.post("/api/v1/views", json=body, headers=ADMIN)
    assert response.status == 422
    assert (await (await client.get("/api/v1/views", headers=ADMIN)).json())["views"] == []


async def test_views_follow_the_change_log(client: TestClient[Any, Any],
                                           aredis: redis.asyncio.Redis,
                                           sync_redis: Any) -> None:
    """The relay's teams consumer keeps a saved view in line with routing and updates."""
    from bridge.core.teams import TeamConfig
    from bridge.store.teams import TeamStore
    from tests.relay_support import relay_all
    from workers.teams import TeamsConsumer
    store: TicketStore = client.app[store_key]
    consumer = TeamsConsumer(store, TeamStore(aredis), ViewStore(aredis), TeamConfig())
    created = await client.post("/api/v1/views", headers=ADMIN, json={
        "name": "Unassigned unsolved", "shared": True,
        "conditions": {"status_below": "solved", "unassigned": True}})
    view_id = (await created.json())["id"]
    first = str((await inbound(store, address="whatsapp:+33600000001")).ticket_id)
    second = str((await inbound(store, address="whatsapp:+33600000002")).ticket_id)
    await relay_all(aredis, sync_redis, [consumer])

    async def shown() -> tuple[list[str], int]:
        page = await (await client.get(f"/api/v1/views/{view_id}/tickets",
                                       headers=ADMIN)).json()
        return sorted(t["id"] for t in page["tickets"]), page["count"]

    assert await shown() == (sorted([first, second]), 2)
    await client.patch(f"/api/v1/tickets/{first}", json={"status": "solved"}, headers=ADMIN)
    await relay_all(aredis, sync_redis, [consumer])
    assert await shown() == ([second], 1)
    await inbound(store, address="whatsapp:+33600000001", body="encore")  # reopens
    await relay_all(aredis, sync_redis, [consumer])
    assert await shown() == (sorted([first, second]), 2)


async def test_a_ticket_moved_out_of_ones_groups_leaves_ones_views_at_once(
        client: TestClient[Any, Any], aredis: redis.asyncio.Redis, sync_redis: Any) -> None:
    """The view's sets trail the move by the relay's delay; the page does not show the
    ticket meanwhile."""
    from bridge.core.teams import TeamConfig
    from bridge.store.teams import TeamStore
    from tests.relay_support import relay_all
    from workers.teams import TeamsConsumer
    store: TicketStore = client.app[store_key]
    consumer = TeamsConsumer(store, TeamStore(aredis), ViewStore(aredis), TeamConfig())
    for group in ("fr", "vip"):
        assert (await client.post("/api/v1/groups", headers=ADMIN,
                                  json={"name": group})).status == 201
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "mallory", "role": "agent", "groups": ["fr"]})
    agent = {"Authorization": f"Bearer {(await made.json())['token']}"}
    ticket = str((await inbound(store, address="whatsapp:+33600000009")).ticket_id)
    await client.patch(f"/api/v1/tickets/{ticket}", json={"group": "fr"}, headers=ADMIN)
    created = await client.post("/api/v1/views", headers=agent, json={
        "name": "mine", "conditions": {"status_below": "solved"}})
    view_id = (await created.json())["id"]
    await relay_all(aredis, sync_redis, [consumer])

    async def shown() -> list[str]:
        page = await client.get(f"/api/v1/views/{view_id}/tickets", headers=agent)
        assert page.status == 200
        return [t["id"] for t in (await page.json())["tickets"]]

    assert await shown() == [ticket]
    await client.patch(f"/api/v1/tickets/{ticket}", json={"group": "vip"}, headers=ADMIN)
    assert await shown() == []  # before the relay has moved it out of the view's sets


def test_views_are_bounded_in_all_and_per_person() -> None:
    from bridge.core.views import MAX_PERSONAL_VIEWS, MAX_VIEWS, views_refusal

    def views(owners: list[str]) -> list[View]:
        return [parse_view(str(n), owner, {"name": f"v{n}", "conditions": {}})
                for n, owner in enumerate(owners)]

    assert views_refusal(views(["ada"] * (MAX_PERSONAL_VIEWS - 1)), "ada") is None
    full = views(["ada"] * MAX_PERSONAL_VIEWS)
    assert "50 personal views" in (views_refusal(full, "ada") or "")
    assert views_refusal(full, "bob") is None and views_refusal(full, "") is None
    crowded = views([""] * MAX_VIEWS)
    assert views_refusal(crowded, "") is not None and views_refusal(crowded, "bob") is not None


async def test_an_agent_cannot_make_views_without_end(client: TestClient[Any, Any],
                                                      aredis: redis.asyncio.Redis) -> None:
    from bridge.core.views import MAX_PERSONAL_VIEWS
    made = await client.post("/api/v1/agents", headers=ADMIN,
                             json={"name": "mallory", "role": "agent"})
    agent = {"Authorization": f"Bearer {(await made.json())['token']}"}
    for n in range(MAX_PERSONAL_VIEWS):
        created = await client.post("/api/v1/views", headers=agent,
                                    json={"name": f"v{n}", "conditions": {}})
        assert created.status == 201
    before = len(await ViewStore(aredis).views())
    refused = await client.post("/api/v1/views", headers=agent,
                                json={"name": "one more", "conditions": {}})
    assert refused.status == 422
    assert (await refused.json())["error"]["code"] == "too_many_views"
    assert len(await ViewStore(aredis).views()) == before  # nothing saved
