"""POST /webhooks/twilio and /webhooks/twilio/status through the real app and Redis."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from bridge.app import create_app
from bridge.core.tickets import Delivery, EventType
from bridge.jobs import CRASH_RETRY, SEND_OUTBOUND, job_id
from bridge.store import keys
from bridge.store.tickets import TicketStore
from config.settings import Settings
from tests.factories import inbound_form, new_sid, post_signed, sign
from tests.relay_support import relay_all

Client = TestClient[Any, Any]
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


def store_of(client: Client) -> TicketStore:
    from bridge.web.keys import store_key

    return client.app[store_key]


async def test_signed_message_opens_ticket_and_answers_empty_twiml(client: Client) -> None:
    form = inbound_form("Bonjour, ma commande ?", sender="whatsapp:US.13491208655302741918",
                        ExternalUserId="whatsapp:ID.4566546130240823")
    response = await post_signed(client, "/webhooks/twilio", form)
    assert response.status == 200
    assert response.content_type == "text/xml"
    assert "<Response/>" in await response.text()
    page, _ = await store_of(client).list_tickets()
    assert len(page) == 1
    contact = await store_of(client).get_contact(page[0].contact_id)
    # From is kept whole, never parsed as +digits.
    assert contact.address == "whatsapp:US.13491208655302741918"
    assert contact.external_user_id == "whatsapp:ID.4566546130240823"
    assert contact.name == "Camille"
    events, _ = await store_of(client).events(page[0].id)
    assert events[0].body == "Bonjour, ma commande ?"


async def test_media_location_and_button_fields_are_kept(client: Client) -> None:
    form = inbound_form("", NumMedia="2",
                        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC1/Media/ME1",
                        MediaContentType0="image/jpeg",
                        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC1/Media/ME2",
                        MediaContentType1="application/pdf",
                        Latitude="48.8584", Longitude="2.2945", Address="Champ de Mars",
                        ButtonPayload="order-42", ButtonText="Track order",
                        OriginalRepliedMessageSid=new_sid("MM"), MessageType="interactive")
    assert (await post_signed(client, "/webhooks/twilio", form)).status == 200
    page, _ = await store_of(client).list_tickets()
    events, _ = await store_of(client).events(page[0].id)
    data = events[0].data
    assert [m["content_type"] for m in data["media"]] == ["image/jpeg", "application/pdf"]
    assert data["location"]["latitude"] == "48.8584"
    assert data["button_payload"] == "order-42"
    assert data["replied_to_id"] == form["OriginalRepliedMessageSid"]


async def test_signature_behind_tls_proxy_uses_public_url_and_query(client: Client) -> None:
    form = inbound_form("hi")
    path = "/webhooks/twilio?source=proxy"
    response = await client.post(path, data=urlencode(form), headers={
        **FORM_TYPE, "X-Twilio-Signature": sign(path, form)})
    assert response.status == 200


async def test_provider_retry_is_stored_once(client: Client) -> None:
    form = inbound_form("once")
    answers = await asyncio.gather(*(post_signed(client, "/webhooks/twilio", form)
                                     for _ in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    page, _ = await store_of(client).list_tickets()
    assert page[0].message_count == 1


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("missing header", lambda f, h: h.pop("X-Twilio-Signature")),
        ("wrong token", lambda f, h: h.update({"X-Twilio-Signature": sign(
            "/webhooks/twilio", f, token="not-the-token")})),
        ("wrong url", lambda f, h: h.update({"X-Twilio-Signature": sign(
            "/webhooks/twilio", f, base="https://evil.example.com")})),
        ("body changed after signing", lambda f, h: f.update({"Body": "tampered"})),
        ("extra parameter", lambda f, h: f.update({"Injected": "1"})),
        ("dropped parameter", lambda f, h: f.pop("ProfileName")),
    ],
)
async def test_bad_signature_is_403_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, case: str, mutate: Any
) -> None:
    form = inbound_form("hello")
    headers = {**FORM_TYPE, "X-Twilio-Signature": sign("/webhooks/twilio", form)}
    mutate(form, headers)
    response = await client.post("/webhooks/twilio", data=urlencode(form), headers=headers)
    assert response.status == 403, case
    assert (await response.json())["error"]["code"] == "bad_signature"
    assert sync_redis.dbsize() == 0


def _signed_raw(body: bytes) -> dict[str, str]:
    return {**FORM_TYPE, "X-Twilio-Signature": "irrelevant"}


@pytest.mark.parametrize(
    ("case", "body", "content_type"),
    [
        ("invalid utf-8", b"MessageSid=SM1&Body=\xff\xfe", "application/x-www-form-urlencoded"),
        ("bad percent escape", b"Body=%ff%fe&From=x", "application/x-www-form-urlencoded"),
        ("truncated form", b"MessageSid=SM1&From=whatsapp%3A%2B336&Bo",
         "application/x-www-form-urlencoded"),
        ("json to the form route", b'{"Body": "hi"}', "application/json"),
        ("multipart", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x",
         "multipart/form-data; boundary=x"),
    ],
)
async def test_malformed_body_is_400_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, case: str, body: bytes, content_type: str
) -> None:
    response = await client.post("/webhooks/twilio", data=body, headers={
        "Content-Type": content_type, "X-Twilio-Signature": "x"})
    assert response.status == 400, case
    assert (await response.json())["error"]["code"] == "malformed"
    assert sync_redis.dbsize() == 0


@pytest.mark.parametrize(
    ("case", "drop", "extra"),
    [
        ("missing MessageSid", "MessageSid", {}),
        ("missing From", "From", {}),
        ("From not whatsapp", None, {"From": "+33612345678"}),
        ("MessageSid not a sid", None, {"MessageSid": "hello"}),
        ("NumMedia not a number", None, {"NumMedia": "many"}),
        ("NumMedia without urls", None, {"NumMedia": "2"}),
        ("empty message", None, {"Body": ""}),
        ("bad coordinates", None, {"Latitude": "north", "Longitude": "2"}),
    ],
)
async def test_missing_or_invalid_fields_are_400_and_write_nothing(
    client: Client, sync_redis: redis.Redis, case: str, drop: str | None,
    extra: dict[str, str]
) -> None:
    form = inbound_form("hello")
    if drop:
        form.pop(drop)
    form.update(extra)
    response = await post_signed(client, "/webhooks/twilio", form)
    assert response.status == 400, case
    assert (await response.json())["error"]["code"] == "invalid"
    assert sync_redis.dbsize() == 0


async def test_oversized_body_is_413_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, settings: Settings
) -> None:
    form = inbound_form("x" * (settings.max_body_bytes + 10))
    response = await post_signed(client, "/webhooks/twilio", form)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    assert sync_redis.dbsize() == 0


async def test_redis_unreachable_is_503_not_200(aiohttp_client: Any, settings: Settings) -> None:
    from bridge.store.embedded import free_port

    dead = Settings(**{**settings.__dict__, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = await aiohttp_client(create_app(dead))
    response = await post_signed(client, "/webhooks/twilio", inbound_form("lost?"))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503


async def test_status_callbacks_only_move_forward(client: Client) -> None:
    store = store_of(client)
    await post_signed(client, "/webhooks/twilio", inbound_form("hi"))
    page, _ = await store.list_tickets()
    ticket_id = page[0].id
    _, event_id = await store.update_ticket(
        ticket_id, author="alice", now_ms=1, event=(EventType.AGENT_REPLY, "Hello", {}))
    assert event_id
    sid = new_sid()
    await store.set_delivery(ticket_id, event_id, {"state": "queued", "provider_id": sid})

    async def callback(status: str, **extra: str) -> int:
        form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC1", **extra}
        return int((await post_signed(client, "/webhooks/twilio/status", form)).status)

    assert await callback("delivered") == 204
    assert await callback("sent") == 204  # late "sent" after "delivered": ignored
    assert (await store.get_event(ticket_id, event_id)).delivery is Delivery.DELIVERED
    assert await callback("read") == 204
    assert await callback("read") == 204  # repeated
    assert await callback("failed", ErrorCode="30008") == 204  # read is not terminal
    event = await store.get_event(ticket_id, event_id)
    assert event.delivery is Delivery.FAILED and event.error_code == "30008"
    assert await callback("delivered") == 204  # failed is terminal
    assert (await store.get_event(ticket_id, event_id)).delivery is Delivery.FAILED


async def test_status_callback_bad_signature_and_missing_fields(
    client: Client, sync_redis: redis.Redis
) -> None:
    form = {"MessageSid": new_sid(), "MessageStatus": "delivered"}
    response = await client.post("/webhooks/twilio/status", data=urlencode(form), headers={
        **FORM_TYPE, "X-Twilio-Signature": "forged"})
    assert response.status == 403
    response = await post_signed(client, "/webhooks/twilio/status", {"MessageSid": new_sid()})
    assert response.status == 400
    assert sync_redis.dbsize() == 0


async def _reply_with_template(client: Client) -> tuple[str, str]:
    store = store_of(client)
    await post_signed(client, "/webhooks/twilio", inbound_form("hi"))
    page, _ = await store.list_tickets()
    _, event_id = await store.update_ticket(
        page[0].id, author="alice", now_ms=1,
        event=(EventType.AGENT_REPLY, "Hello", {"fallback_content_sid": "HX" + "b" * 32}))
    assert event_id
    return page[0].id, event_id


def _fallback_job(sync_redis: redis.Redis, ticket_id: str, event_id: str) -> Job | None:
    try:
        return Job.fetch(job_id("send", ticket_id, event_id, "fallback"),
                         connection=sync_redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


async def test_a_63016_callback_enqueues_the_template_with_the_crash_retry(
    client: Client, sync_redis: redis.Redis
) -> None:
    ticket_id, event_id = await _reply_with_template(client)
    sid = new_sid()
    await store_of(client).set_delivery(ticket_id, event_id,
                                        {"state": "queued", "provider_id": sid})
    form = {"MessageSid": sid, "MessageStatus": "failed", "AccountSid": "AC1",
            "ErrorCode": "63016"}
    assert (await post_signed(client, "/webhooks/twilio/status", form)).status == 204
    assert _fallback_job(sync_redis, ticket_id, event_id) is None  # the relay enqueues it
    await relay_all(store_of(client).redis, sync_redis)
    job = _fallback_job(sync_redis, ticket_id, event_id)
    assert job is not None and job.func_name == SEND_OUTBOUND
    assert list(job.args) == [{"ticket_id": ticket_id, "event_id": event_id}]
    # Like every send job: a worker dying mid-send does not lose the template.
    assert (job.retries_left, job.retry_intervals) == (CRASH_RETRY.max, CRASH_RETRY.intervals)


async def test_a_63016_callback_that_applies_itself_after_parking_enqueues_the_template(
    client: Client, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stores the sid between the callback's lookup and its parking: the
    callback's own pass over the parked list applies it, so the webhook must act on it."""
    store = store_of(client)
    ticket_id, event_id = await _reply_with_template(client)
    sid = new_sid()
    real_get = store.redis.get

    async def sid_stored_right_after_the_lookup(name: str) -> Any:
        found = await real_get(name)
        if name == keys.provider_message(sid) and found is None:
            monkeypatch.setattr(store.redis, "get", real_get)
            await store.redis.set(name, f"{await store.contact_of(ticket_id)} {ticket_id} "
                                        f"{event_id}")
            await store._set_delivery(await store.contact_of(ticket_id), ticket_id, event_id,
                                      {"state": "queued", "provider_id": sid})
        return found

    monkeypatch.setattr(store.redis, "get", sid_stored_right_after_the_lookup)
    form = {"MessageSid": sid, "MessageStatus": "failed", "AccountSid": "AC1",
            "ErrorCode": "63016"}
    assert (await post_signed(client, "/webhooks/twilio/status", form)).status == 204
    event = await store.get_event(ticket_id, event_id)
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "63016")
    await relay_all(store.redis, sync_redis)
    job = _fallback_job(sync_redis, ticket_id, event_id)
    assert job is not None and job.retries_left == CRASH_RETRY.max
