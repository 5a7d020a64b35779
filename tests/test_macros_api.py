"""The macro API: read, edit with validation, history, preview, apply; the JSON shapes."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.core.tickets import EventType, Status
from bridge.jobs import QUEUE_EVENTS, QUEUE_OUTBOUND, SEND_OUTBOUND
from bridge.store import keys
from bridge.store.tickets import TicketStore
from bridge.web import api
from bridge.web.serialize import event_json, iso, ticket_json
from config.settings import Settings
from tests.factories import ids, inbound, now_ms
from tests.macro_app import ADMIN, AGENT, build_app
from tests.relay_support import relay_all

Client = TestClient[Any, Any]


@pytest.fixture
def app(settings: Settings, aredis: redis.asyncio.Redis, sync_redis: redis.Redis
        ) -> web.Application:
    """The macro handlers and the ticket API (the shared `client` fixture talks to it)."""
    return build_app(settings, aredis, sync_redis, extra_routes=api.routes)


def queued(sync_redis: redis.Redis, queue: str) -> list[tuple[str, dict[str, Any]]]:
    q = Queue(queue, connection=sync_redis, serializer=JSONSerializer)
    return [(str(job.func_name), job.args[0]) for job in q.jobs]


async def test_agents_read_macros(client: Client) -> None:
    assert (await client.get("/api/v1/macros")).status == 401
    listing = await (await client.get("/api/v1/macros", headers=AGENT)).json()
    names = {m["name"]: m for m in listing["macros"]}
    assert {"greeting", "ask_for_info", "solved", "session_closing", "thread_limit"} <= set(
        names)
    assert names["solved"]["actions"]["status"] == "solved"
    one = await (await client.get("/api/v1/macros/greeting", headers=AGENT)).json()
    assert one["version"] == 0 and {"en", "fr"} <= set(one["locales"])
    assert (await client.get("/api/v1/macros/nope", headers=AGENT)).status == 404
    assert (await client.get("/api/v1/macros/NO%20PE", headers=AGENT)).status == 404


async def test_only_admins_change_macros(client: Client) -> None:
    body = {"locales": {"en": "Hi {{ contact.first_name }}"}}
    response = await client.put("/api/v1/macros/greeting", json=body, headers=AGENT)
    assert response.status == 403
    response = await client.post("/api/v1/macros/greeting/rollback", json={"version": 0},
                                 headers=AGENT)
    assert response.status == 403
    assert (await client.get("/api/v1/macros/greeting", headers=AGENT)).status == 200


async def test_save_history_and_rollback(client: Client) -> None:
    locales = {"en": "Hi {{ contact.first_name }} v1", "fr": "Salut {{ contact.first_name }} v1"}
    body: dict[str, Any] = {"title": "Hello", "locales": locales,
                            "actions": {"status": "open", "add_tags": ["greeted"]}}
    saved = await (await client.put("/api/v1/macros/greeting", json=body, headers=ADMIN)).json()
    assert saved["version"] == 1 and saved["updated_by"] == "admin"
    locales["en"] = "Hi {{ contact.first_name }} v2"
    saved = await (await client.put("/api/v1/macros/greeting", json=body, headers=ADMIN)).json()
    assert saved["version"] == 2
    current = await (await client.get("/api/v1/macros/greeting", headers=AGENT)).json()
    assert current["locales"]["en"].endswith("v2") and current["actions"]["add_tags"] == [
        "greeted"]
    history = await (await client.get("/api/v1/macros/greeting/versions", headers=AGENT)).json()
    assert history["current"] == 2
    assert [v["version"] for v in history["versions"]] == [2, 1, 0]
    back = await client.post("/api/v1/macros/greeting/rollback", json={"version": 1},
                             headers=ADMIN)
    assert back.status == 200
    rolled = await back.json()
    assert rolled["version"] == 3 and rolled["locales"]["en"].endswith("v1")
    assert rolled["note"] == "rollback to version 1"
    shipped = await client.post("/api/v1/macros/greeting/rollback", json={"version": 0},
                                headers=ADMIN)
    assert (await shipped.json())["actions"] == {"status": "open"}
    missing = await client.post("/api/v1/macros/greeting/rollback", json={"version": 42},
                                headers=ADMIN)
    assert missing.status == 404
    bad = await client.post("/api/v1/macros/greeting/rollback", json={"version": "1"},
                            headers=ADMIN)
    assert bad.status == 422


async def test_a_save_without_a_title_keeps_the_current_one(client: Client) -> None:
    first = await client.put("/api/v1/macros/greeting", headers=ADMIN,
                             json={"title": "Welcome", "locales": {"en": "Hi v1"}})
    assert first.status == 200
    saved = await (await client.put("/api/v1/macros/greeting", headers=ADMIN,
                                    json={"locales": {"en": "Hi v2"}})).json()
    assert (saved["title"], saved["locales"]) == ("Welcome", {"en": "Hi v2"})
    renamed = await (await client.put("/api/v1/macros/greeting", headers=ADMIN,
                                      json={"title": "", "locales": {"en": "Hi v3"}})).json()
    assert renamed["title"] == ""  # sent empty: emptied
    new = await (await client.put("/api/v1/macros/brand_new", headers=ADMIN,
                                  json={"locales": {"en": "Hello"}})).json()
    assert new["title"] == ""


async def test_a_save_of_the_actions_alone_keeps_the_text(client: Client) -> None:
    # It saved a version with no text: applying the macro then sent nothing, silently.
    await client.put("/api/v1/macros/greeting", headers=ADMIN,
                     json={"locales": {"en": "Hi", "fr": "Salut"},
                           "actions": {"status": "pending"}})
    actions_only = await (await client.put("/api/v1/macros/greeting", headers=ADMIN,
                                           json={"actions": {"status": "open"}})).json()
    assert actions_only["locales"] == {"en": "Hi", "fr": "Salut"} and actions_only["sends"]
    assert actions_only["actions"]["status"] == "open"
    text_only = await (await client.put("/api/v1/macros/greeting", headers=ADMIN,
                                        json={"locales": {"en": "Hello"}})).json()
    assert text_only["actions"]["status"] == "open" and text_only["locales"] == {"en": "Hello"}
    # Previewed and validated as it would be saved: over the current version.
    preview = await (await client.post("/api/v1/macros/greeting/preview", headers=ADMIN,
                                       json={"actions": {"status": "solved"}})).json()
    assert preview["body"] == "Hello" and preview["actions"]["status"] == "solved"
    cleared = await (await client.put("/api/v1/macros/greeting", headers=ADMIN,
                                      json={"locales": {}})).json()
    assert cleared["locales"] == {} and not cleared["sends"]
    assert cleared["version"] == 4


@pytest.mark.parametrize(("template", "kind", "line"), [
    ("{{ ''.__class__.__mro__ }}", "security", 1),
    ("Hi\n{{ cycler.__init__.__globals__ }}", "security", 2),
    ("{{ ''|attr('__class__') }}", "security", 1),
    ("{{ '{0.__class__}'.format(1) }}", "security", 1),
    ("{{ 'a' * 100000000 }}", "security", 1),
    ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
     "output_too_long", None),
    ("Hello\n{{ contact.nmae }}", "undefined", 2),
    ("Hello\n\n{% if ticket.id %}never closed", "syntax", 3),
])
async def test_unsafe_or_broken_templates_are_refused_at_save(
    client: Client, template: str, kind: str, line: int | None,
) -> None:
    response = await client.put("/api/v1/macros/greeting",
                                json={"locales": {"en": "Fine", "fr": template}},
                                headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_template"
    assert error["problems"] == [
        {"template": "locale:fr", "kind": kind, "line": line,
         "message": error["problems"][0]["message"]}]
    assert "locale:fr" in error["message"] and kind in error["message"]
    if line:
        assert f"line {line}" in error["message"]
    # Nothing was saved.
    current = await (await client.get("/api/v1/macros/greeting", headers=AGENT)).json()
    assert current["version"] == 0


async def test_bad_macro_shapes_are_422_naming_the_field(client: Client) -> None:
    response = await client.put("/api/v1/macros/greeting",
                                json={"locales": {"en": "x"}, "actions": {"status": "slved"}},
                                headers=ADMIN)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_macro" and error["message"].startswith("actions.status")
    too_big = await client.put("/api/v1/macros/greeting", json={"locales": {"en": "x" * 5000}},
                               headers=ADMIN)
    assert too_big.status == 422
    bad_name = await client.put("/api/v1/macros/Bad%20Name", json={"locales": {"en": "x"}},
                                headers=ADMIN)
    assert bad_name.status == 422
    not_json = await client.put("/api/v1/macros/greeting", data="{", headers={
        **ADMIN, "Content-Type": "application/json"})
    assert not_json.status == 400


async def test_validate_checks_a_draft_without_saving(client: Client) -> None:
    ok = await client.post("/api/v1/macros/greeting/validate", headers=AGENT)
    assert (await ok.json())["valid"] is True
    bad = await client.post("/api/v1/macros/greeting/validate",
                            json={"locales": {"en": "{{ ticket.idd }}"}}, headers=ADMIN)
    assert bad.status == 422
    assert (await bad.json())["error"]["problems"][0]["kind"] == "undefined"
    unknown = await client.post("/api/v1/macros/unknown/validate", headers=AGENT)
    assert unknown.status == 422
    assert (await unknown.json())["error"]["code"] == "invalid_macro"
    new = await client.post("/api/v1/macros/unknown/validate",
                            json={"locales": {"en": "Hi {{ contact.name }}"}}, headers=ADMIN)
    assert (await new.json())["valid"] is True


async def test_preview_renders_ticket_variables_as_plain_text(
    client: Client, store: TicketStore,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550001111", name="Ana & <Bob> 😀"))
    draft = {"locales": {"en": "Hi {{ contact.first_name }} {{ contact.name }}: ticket "
                               "#{{ ticket.id }} is {{ ticket.status }} 🎉 & <ok>"}}
    response = await client.post("/api/v1/macros/greeting/preview",
                                 json={"ticket_id": tid, **draft}, headers=ADMIN)
    assert response.status == 200
    preview = await response.json()
    assert preview["body"] == f"Hi Ana Ana & <Bob> 😀: ticket #{tid} is new 🎉 & <ok>"
    assert preview["locale"] == "en"
    # The stored macro, in the contact's language picked from its number.
    fr_tid = ids(await inbound(store, address="whatsapp:+33699999999", name="Zoé"))
    fr = await (await client.post("/api/v1/macros/greeting/preview",
                                  json={"ticket_id": fr_tid}, headers=AGENT)).json()
    assert fr["locale"] == "fr" and fr["body"].startswith("Bonjour Zoé")
    sample = await (await client.post("/api/v1/macros/greeting/preview", headers=AGENT)).json()
    assert "Ana" in sample["body"]
    missing = await client.post("/api/v1/macros/greeting/preview", json={"ticket_id": "999"},
                                headers=AGENT)
    assert missing.status == 404


async def test_apply_records_one_event_runs_actions_and_queues_the_send(
    client: Client, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550002222", name="Ana Lima"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), tags=["vip"])
    response = await client.post(f"/api/v1/tickets/{tid}/macros/ask_for_info", headers=AGENT)
    assert response.status == 202
    event = await response.json()
    assert event["type"] == "macro_applied" and event["delivery"] == "queued"
    assert event["author"] == "alice"
    assert event["body"].startswith("To help you further")
    assert event["data"]["macro"] == "ask_for_info" and event["data"]["locale"] == "en"
    ticket = await store.get_ticket(tid)
    assert ticket.status is Status.PENDING
    assert ticket.tags == ("vip", "awaiting_customer")
    events, _ = await store.events(tid)
    assert [e.type for e in events].count(EventType.MACRO_APPLIED) == 1
    assert queued(sync_redis, QUEUE_OUTBOUND) == [
        (SEND_OUTBOUND, {"ticket_id": tid, "event_id": event["id"]})]
    # The trigger is not enqueued by the request: the relay hands the change log on.
    assert queued(sync_redis, QUEUE_EVENTS) == []
    await relay_all(store.redis, sync_redis)
    triggers = [(payload["ticket_id"], payload["trigger"])
                for _, payload in queued(sync_redis, QUEUE_EVENTS)]
    assert triggers == [(tid, "ticket.created"), (tid, "ticket.status_changed")]


async def test_reply_with_a_macro_goes_through_the_same_path(
    client: Client, store: TicketStore,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+33611112222", name="Léa"))
    response = await client.post(f"/api/v1/tickets/{tid}/replies", json={"macro": "solved"},
                                 headers=AGENT)
    assert response.status == 202
    event = await response.json()
    assert event["type"] == "macro_applied" and event["data"]["locale"] == "fr"
    assert "Léa" in event["body"]
    assert (await store.get_ticket(tid)).status is Status.SOLVED


async def test_locale_falls_back_to_the_default(
    client: Client, store: TicketStore, aredis: redis.asyncio.Redis,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+4915112345678", name="Jonas"))
    contact = (await store.get_ticket(tid)).contact_id
    await aredis.hset(keys.contact(contact), "locale", "de")
    event = await (await client.post(f"/api/v1/tickets/{tid}/macros/greeting",
                                     headers=AGENT)).json()
    assert event["data"]["locale"] == "en" and event["body"].startswith("Hello Jonas")
    await aredis.hset(keys.contact(contact), "locale", "fr-CA")
    event = await (await client.post(f"/api/v1/tickets/{tid}/macros/greeting",
                                     headers=AGENT)).json()
    assert event["data"]["locale"] == "fr" and event["body"].startswith("Bonjour Jonas")


async def test_apply_refuses_ended_sessions_closed_tickets_and_closed_windows(
    client: Client, store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550003333"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), end_session_reason="agent")
    response = await client.post(f"/api/v1/tickets/{tid}/macros/greeting", headers=AGENT)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "session_ended"

    tid2 = ids(await inbound(store, address="whatsapp:+15550004444"))
    contact = (await store.get_ticket(tid2)).contact_id
    await aredis.hset(keys.contact(contact), "window_until_ms", 1)
    response = await client.post(f"/api/v1/tickets/{tid2}/macros/greeting", headers=AGENT)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "outside_window"

    await store.update_ticket(tid2, author="alice", now_ms=now_ms(), status=Status.CLOSED)
    response = await client.post(f"/api/v1/tickets/{tid2}/macros/greeting", headers=AGENT)
    assert (await response.json())["error"]["code"] == "ticket_closed"
    assert queued(sync_redis, QUEUE_OUTBOUND) == []


async def test_apply_unknown_macro_or_ticket_is_404(client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550005555"))
    for path in (f"/api/v1/tickets/{tid}/macros/nope", "/api/v1/tickets/999/macros/greeting"):
        response = await client.post(path, headers=AGENT)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_a_template_that_fails_on_real_data_is_422_and_records_nothing(
    client: Client, store: TicketStore,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550006666"))
    # Valid on the sample ticket (assigned), empty on an unassigned one.
    body = {"locales": {"en": "{% if ticket.assignee %}Assigned to {{ agent.name }}{% endif %}"}}
    assert (await client.put("/api/v1/macros/assigned_note", json=body,
                             headers=ADMIN)).status == 200
    response = await client.post(f"/api/v1/tickets/{tid}/macros/assigned_note", headers=AGENT)
    assert response.status == 422
    assert (await response.json())["error"]["problems"][0]["kind"] == "empty"
    events, _ = await store.events(tid)
    assert [e.type for e in events] == [EventType.CUSTOMER_MESSAGE]


async def test_serializers_follow_the_design_shapes(
    store: TicketStore, settings: Settings,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15550007777", name="Ana Lima",
                            at_ms=1_700_000_000_000))
    ticket = await store.get_ticket(tid)
    contact = await store.get_contact(ticket.contact_id)
    body = ticket_json(ticket, contact, settings=settings,
                       now_ms=1_700_000_000_000 + 19 * 3600 * 1000)
    assert body["id"] == tid and body["status"] == "new" and body["channel"] == "whatsapp"
    assert body["contact"] == {"id": ticket.contact_id, "address": "whatsapp:+15550007777",
                               "name": "Ana Lima"}
    assert body["created_at"] == "2023-11-14T22:13:20.000Z"
    assert body["solved_at"] is None and body["assignee"] is None
    assert body["session"] == {"state": "active", "ended_reason": None}
    assert (body["age_s"], body["aging"]) == (19 * 3600, "yellow")
    assert body["csat"] == {"rating": None, "sent_at": None}
    events, _ = await store.events(tid)
    shaped = event_json(events[0])
    assert shaped["type"] == "customer_message" and shaped["delivery"] is None
    assert shaped["at"] == iso(1_700_000_000_000)


@pytest.mark.parametrize("raw", [
    b'{"locales": {"en": "\\ud800"}}',
    '{"locales": {"en": "\ud800"}}'.encode("utf-8", "surrogatepass"),
    b'{"locales": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"\xff\xfe",
])
async def test_hostile_json_is_400_not_500(client: Client, raw: bytes) -> None:
    response = await client.put("/api/v1/macros/greeting", data=raw,
                                headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status in (400, 413)
    assert (await response.json())["error"]["code"] in ("malformed", "payload_too_large")
