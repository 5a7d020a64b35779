"""CSAT: sent on solve and on session end, once per ticket; answers recorded; the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.core.csat import survey_payload
from bridge.core.routing import Action
from bridge.core.rules import load_config
from bridge.core.tickets import EventType, Status, Ticket
from bridge.jobs import QUEUE_OUTBOUND, JobQueues
from bridge.sending import send_csat
from bridge.store import keys
from bridge.store.macros import MacroStore, load_shipped
from bridge.store.tickets import TicketStore
from bridge.web.reports import aggregate
from config.settings import Settings
from tests.factories import ids, inbound, now_ms
from tests.macro_app import AGENT, build_app
from workers.automations import Deps, handle_ticket_event

ROOT = Path(__file__).resolve().parent.parent
HX_QUICK = "HX" + "1" * 32
HX_TEMPLATE = "HX" + "2" * 32


@pytest.fixture
def deps(store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> Deps:
    return Deps(store=store, macros=MacroStore(aredis, load_shipped()),
                queues=JobQueues(sync_redis),
                config=load_config(ROOT / "config" / "automations.toml"))


def outbound_jobs(sync_redis: redis.Redis) -> list[dict[str, Any]]:
    q = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    return [job.args[0] for job in q.jobs]


async def solved_ticket(store: TicketStore, address: str, **kw: Any) -> tuple[str, str]:
    tid = ids(await inbound(store, address=address, **kw))
    _, event_id = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                            status=Status.SOLVED)
    assert event_id is not None
    return tid, event_id


async def surveyed_ticket(deps: Deps, store: TicketStore, address: str) -> str:
    """A solved ticket whose survey the csat_on_solve trigger sent."""
    tid, solved_event = await solved_ticket(store, address)
    assert (await fire(deps, tid, "ticket.status_changed", solved_event))["fired"] == [
        "csat_on_solve"]
    return tid


async def fire(deps: Deps, tid: str, trigger: str, event_id: str) -> dict[str, Any]:
    return await handle_ticket_event(deps, {"ticket_id": tid, "trigger": trigger,
                                            "version": 0, "event_id": event_id})


async def csat_events(store: TicketStore, tid: str) -> list[Any]:
    events, _ = await store.events(tid, limit=200)
    return [e for e in events if e.type is EventType.CSAT_SENT]


async def test_survey_on_solve_is_sent_once_per_ticket_even_when_triggered_twice(
    deps: Deps, store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    address = "whatsapp:+15552220001"
    tid, solved_event = await solved_ticket(store, address)
    result = await fire(deps, tid, "ticket.status_changed", solved_event)
    assert result["fired"] == ["csat_on_solve"]
    # Reopened by the customer and solved again: a new status_changed event.
    await inbound(store, "wait, one more", address=address)
    _, second = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                          status=Status.SOLVED)
    assert second is not None
    assert (await fire(deps, tid, "ticket.status_changed", second))["fired"] == [
        "csat_on_solve"]
    # The session end trigger and a direct call find it sent already.
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), end_session_reason="agent")
    await fire(deps, tid, "ticket.session_ended", "end")
    direct = await send_csat(store=store, macros=deps.macros, queues=deps.queues,
                             config=deps.config, ticket_id=tid, now_ms=now_ms(),
                             reason="manual")
    assert direct.skipped == "already_sent"

    (survey,) = await csat_events(store, tid)
    assert survey.author == "system" and survey.data["kind"] == "csat"
    assert "1 (bad) to 5 (excellent)" in survey.body  # plain text without a Content SID
    assert survey.data["buttons"] == [
        {"id": survey_payload(tid, 5), "title": "😀 Good"},
        {"id": survey_payload(tid, 3), "title": "😐 OK"},
        {"id": survey_payload(tid, 1), "title": "🙁 Bad"},
    ]
    assert "content_sid" not in survey.data
    assert [j for j in outbound_jobs(sync_redis) if j["event_id"] == survey.id] == [
        {"ticket_id": tid, "event_id": survey.id}]
    ticket = await store.get_ticket(tid)
    assert ticket.csat_sent_at_ms > 0
    contact = await aredis.hgetall(keys.contact(ticket.contact_id))
    # Still outstanding for its buttons; the customer's reopen ended the bare-rating window.
    assert contact[b"survey_ticket"] == tid.encode() and b"survey_at_ms" not in contact


async def test_after_a_reopen_an_ok_in_the_conversation_is_no_rating(
    deps: Deps, store: TicketStore,
) -> None:
    address = "whatsapp:+15552220009"
    tid = await surveyed_ticket(deps, store, address)
    reopened = await inbound(store, "J'ai encore un problème", address=address)
    assert reopened.action.value == "reopen"
    ok = await inbound(store, "ok", address=address)  # "ok" reads as a 3 otherwise
    assert ok.action.value == "append" and ok.ticket_id == tid
    ticket = await store.get_ticket(tid)
    assert ticket.csat_rating == 0 and ticket.status is Status.OPEN  # 0: no rating
    tapped = await inbound(store, "😀 Good", address=address,
                           button_payload=survey_payload(tid, 5))
    assert tapped.action.value == "csat_answer"  # its button still answers it
    assert (await store.get_ticket(tid)).csat_rating == 5


async def test_survey_on_session_end_goes_out_in_the_contacts_language(
    deps: Deps, store: TicketStore,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+33655550000"))
    _, event_id = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                            end_session_reason="agent")
    result = await fire(deps, tid, "ticket.session_ended", event_id or "")
    assert result["fired"] == ["csat_on_session_end"]
    (survey,) = await csat_events(store, tid)
    assert survey.data["locale"] == "fr" and survey.body.startswith("Merci")
    assert [b["title"] for b in survey.data["buttons"]] == ["😀 Bien", "😐 Moyen", "🙁 Mauvais"]
    assert (await store.get_ticket(tid)).status is Status.NEW


async def test_an_answer_records_the_rating_and_leaves_the_status_alone(
    deps: Deps, store: TicketStore,
) -> None:
    address = "whatsapp:+15552220002"
    tid, event_id = await solved_ticket(store, address)
    await fire(deps, tid, "ticket.status_changed", event_id)
    before = await store.get_ticket(tid)
    answered_at_ms = before.updated_at_ms + 60_000
    answer = await inbound(store, "😀 Good", address=address, at_ms=answered_at_ms,
                           button_payload=survey_payload(tid, 5))
    assert answer.action is Action.CSAT_ANSWER and answer.ticket_id == tid
    after = await store.get_ticket(tid)
    assert after.csat_rating == 5
    # A change of the ticket: incremental exports, which select on it, carry the rating.
    assert after.updated_at_ms == answered_at_ms
    assert after.status is Status.SOLVED and after.solved_at_ms == before.solved_at_ms
    events, _ = await store.events(tid)
    assert events[0].type is EventType.CSAT_ANSWERED and events[0].data["rating"] == 5
    # A bare rating on another surveyed ticket works too.
    tid2, event2 = await solved_ticket(store, "whatsapp:+15552220003")
    await fire(deps, tid2, "ticket.status_changed", event2)
    bare = await inbound(store, "4", address="whatsapp:+15552220003")
    assert bare.action is Action.CSAT_ANSWER
    assert (await store.get_ticket(tid2)).csat_rating == 4


async def test_content_sids_make_quick_replies_and_a_template_fallback(
    deps: Deps, store: TicketStore,
) -> None:
    csat = dataclasses.replace(deps.config.csat, content_sid=HX_QUICK,
                               fallback_content_sid=HX_TEMPLATE)
    config = dataclasses.replace(deps.config, csat=csat)
    tid, _ = await solved_ticket(store, "whatsapp:+15552220004")
    sent = await send_csat(store=store, macros=deps.macros, queues=deps.queues, config=config,
                           ticket_id=tid, now_ms=now_ms(), reason="test")
    assert sent.event_id
    (survey,) = await csat_events(store, tid)
    assert survey.data["content_sid"] == HX_QUICK
    assert survey.data["content_variables"] == {"1": tid}
    assert survey.data["fallback_content_sid"] == HX_TEMPLATE
    assert survey.data["fallback_content_variables"] == {"1": tid}


async def test_outside_the_window_only_a_template_can_carry_the_survey(
    deps: Deps, store: TicketStore, aredis: redis.asyncio.Redis,
) -> None:
    tid, _ = await solved_ticket(store, "whatsapp:+15552220005")
    contact = (await store.get_ticket(tid)).contact_id
    await aredis.hset(keys.contact(contact), "window_until_ms", 1)
    skipped = await send_csat(store=store, macros=deps.macros, queues=deps.queues,
                              config=deps.config, ticket_id=tid, now_ms=now_ms(), reason="t")
    assert skipped.skipped == "no_template_outside_window"
    assert (await store.get_ticket(tid)).csat_sent_at_ms == 0  # may still be sent later
    config = dataclasses.replace(deps.config, csat=dataclasses.replace(
        deps.config.csat, fallback_content_sid=HX_TEMPLATE))
    sent = await send_csat(store=store, macros=deps.macros, queues=deps.queues, config=config,
                           ticket_id=tid, now_ms=now_ms(), reason="t")
    assert sent.event_id and not sent.skipped


# ------------------------------------------------------------------ report


@pytest.fixture
def app(settings: Settings, aredis: redis.asyncio.Redis, sync_redis: redis.Redis
        ) -> web.Application:
    """The macro and report handlers (the shared `client` fixture talks to it)."""
    return build_app(settings, aredis, sync_redis)


async def test_csat_report_by_channel_and_agent(
    client: TestClient[Any, Any], deps: Deps, store: TicketStore,
) -> None:
    ratings = {"whatsapp:+15553330001": ("alice", 5), "whatsapp:+15553330002": ("alice", 3),
               "whatsapp:+15553330003": ("bob", None)}
    for address, (agent, rating) in ratings.items():
        tid = ids(await inbound(store, address=address))
        await store.update_ticket(tid, author=agent, now_ms=now_ms(), assignee=agent,
                                  status=Status.SOLVED)
        await send_csat(store=store, macros=deps.macros, queues=deps.queues,
                        config=deps.config, ticket_id=tid, now_ms=now_ms(), reason="t")
        if rating:
            await inbound(store, "x", address=address, button_payload=survey_payload(tid, rating))
    by_channel = await (await client.get("/api/v1/reports/csat", headers=AGENT)).json()
    assert by_channel["by"] == "channel" and by_channel["period_of"] == "survey_sent"
    (whatsapp,) = by_channel["groups"]
    assert whatsapp == {"key": "whatsapp", "surveys_sent": 3, "count": 2, "average": 4.0,
                        "response_rate": 0.667,
                        "distribution": {"1": 0, "2": 0, "3": 1, "4": 0, "5": 1}}
    by_agent = await (await client.get("/api/v1/reports/csat?by=agent", headers=AGENT)).json()
    assert [(g["key"], g["surveys_sent"], g["count"], g["average"])
            for g in by_agent["groups"]] == [("alice", 2, 2, 4.0), ("bob", 1, 0, None)]
    future = await (await client.get("/api/v1/reports/csat?since=2999-01-01&until=2999-02-01",
                                     headers=AGENT)).json()
    assert future["total"]["surveys_sent"] == 0 and future["groups"] == []
    for query in ("by=colour", "since=yesterday", "since=2024-02-01&until=2024-01-01"):
        response = await client.get(f"/api/v1/reports/csat?{query}", headers=AGENT)
        assert response.status == 422, query
    assert (await client.get("/api/v1/reports/csat")).status == 401


def test_report_aggregation_is_pure() -> None:
    def t(tid: str, channel: str, rating: int, assignee: str = "") -> Ticket:
        return Ticket(id=tid, contact_id="c", channel=channel, status=Status.SOLVED,
                      created_at_ms=0, updated_at_ms=0, csat_rating=rating, assignee=assignee)

    total, groups = aggregate([t("1", "widget", 1), t("2", "whatsapp", 5, "zoe"),
                               t("3", "whatsapp", 0)], "channel")
    assert total.to_dict()["average"] == 3.0 and total.sent == 3 and total.count == 2
    assert [(g.key, g.count) for g in groups] == [("whatsapp", 1), ("widget", 1)]
    _, agents = aggregate([t("1", "widget", 1)], "agent")
    assert agents[0].key == "unassigned"


async def test_a_survey_button_tapped_again_replaces_the_rating_and_reopens_nothing(
    deps: Deps, store: TicketStore,
) -> None:
    address = "whatsapp:+15552220010"
    tid = await surveyed_ticket(deps, store, address)
    first = await inbound(store, "4", address=address)
    assert first.action.value == "csat_answer"
    again = await inbound(store, "🙁 Mauvais", address=address,
                          button_payload=survey_payload(tid, 1))
    assert again.action.value == "csat_answer" and again.ticket_id == tid
    ticket = await store.get_ticket(tid)
    assert ticket.csat_rating == 1 and ticket.status is Status.SOLVED  # replaced, not reopened
    events, _ = await store.events(tid)
    assert [e.data.get("rating") for e in events if e.type is EventType.CSAT_ANSWERED] == [1, 4]
    assert not [e for e in events if e.type is EventType.CUSTOMER_MESSAGE and e.body != "Bonjour"]
    # A payload naming a ticket that was never surveyed stays a message (here: reopens).
    other = ids(await inbound(store, address="whatsapp:+15552220011"))
    await store.update_ticket(other, author="alice", now_ms=now_ms(), status=Status.SOLVED)
    unsurveyed = await inbound(store, "5", address="whatsapp:+15552220011",
                               button_payload=survey_payload(other, 5))
    assert unsurveyed.action.value == "reopen"
