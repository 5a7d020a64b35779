"""The send job against a real Redis, Twilio's API mocked by respx: what it posts, and how
it retries (transient answers) without ever sending a message twice (idempotency)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from bridge.core.tickets import Delivery
from bridge.store import keys
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.outbound.support import (
    BUTTONS,
    CUSTOMER,
    MESSAGES,
    TEMPLATE,
    created,
    form,
    reply,
    service,
    twilio_error,
)
from workers.outbound import FAILED, RETRY, SENT, SKIPPED
from workers.senders import TwilioSender

# ------------------------------------------------------------------------------ success


async def test_reply_is_sent_with_exactly_twilios_form(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created("SM" + "1" * 32))
    tid, eid = await reply(store)

    outcome = await service(store, sender).send(tid, eid)

    assert (outcome.action, outcome.provider_id, outcome.attempts) == (SENT, "SM" + "1" * 32, 1)
    assert route.call_count == 1
    request = route.calls.last.request
    assert form(request) == {
        "To": [CUSTOMER],
        "From": ["whatsapp:+14155238886"],
        "Body": ["Bonjour & <bienvenue> 👋"],
        "StatusCallback": ["https://bridge.example.com/webhooks/twilio/status"],
    }
    assert request.headers["Authorization"] == httpx.BasicAuth(ACCOUNT_SID, AUTH_TOKEN)._auth_header
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    state = await store.delivery_state(tid, eid)
    assert state["state"] == Delivery.QUEUED and state["provider_id"] == "SM" + "1" * 32
    # The provider id is mapped back, so status callbacks move the message forward.
    assert await store.record_status_callback("SM" + "1" * 32, Delivery.DELIVERED)
    assert (await store.get_event(tid, eid)).delivery is Delivery.DELIVERED


async def test_messaging_service_and_media(
    store: TicketStore, redis_url: str, api: respx.MockRouter
) -> None:
    settings = make_settings(redis_url, twilio_whatsapp_from="",
                             twilio_messaging_service_sid="MG" + "d" * 32)
    sender = TwilioSender(settings)
    route = api.post(MESSAGES).mock(return_value=created(status="accepted"))
    tid, eid = await reply(store, "Voici", {"media_urls": ["https://x.example/a.png",
                                                           "https://x.example/b.png"]})
    try:
        outcome = await service(store, sender).send(tid, eid)
    finally:
        await sender.aclose()
    assert outcome.state == Delivery.QUEUED  # Twilio's "accepted" is our queued
    sent = form(route.calls.last.request)
    assert sent["MessagingServiceSid"] == ["MG" + "d" * 32] and "From" not in sent
    assert sent["MediaUrl"] == ["https://x.example/a.png", "https://x.example/b.png"]


async def test_content_sid_replaces_the_body_inside_the_window(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "How did we do?", {
        "content_sid": BUTTONS, "content_variables": {"1": "Camille", "2": 1234},
        "fallback_content_sid": TEMPLATE})
    outcome = await service(store, sender).send(tid, eid)
    assert outcome.via == "content"
    sent = form(route.calls.last.request)
    assert sent["ContentSid"] == [BUTTONS]
    assert json.loads(sent["ContentVariables"][0]) == {"1": "Camille", "2": "1234"}
    assert "Body" not in sent and "MediaUrl" not in sent


async def test_twilio_api_url_replaces_the_host(
    store: TicketStore, redis_url: str
) -> None:
    settings = make_settings(redis_url, twilio_api_url="http://127.0.0.1:9/stub")
    sender = TwilioSender(settings)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"http://127.0.0.1:9/stub{MESSAGES}").mock(return_value=created())
        tid, eid = await reply(store)
        try:
            assert (await service(store, sender).send(tid, eid)).action == SENT
        finally:
            await sender.aclose()
    assert route.call_count == 1


# ------------------------------------------------------------------------------ transient


async def test_429_is_retried_later_then_sent(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[
        twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "7"}),
        created("SM" + "2" * 32),
    ])
    tid, eid = await reply(store)
    svc = service(store, sender)

    first = await svc.send(tid, eid)
    assert (first.action, first.error_code, first.attempts) == (RETRY, "20429", 1)
    assert first.retry_in_s == 7  # Twilio's Retry-After beats our first 2 s step
    state = await store.delivery_state(tid, eid)
    assert state["state"] == Delivery.QUEUED and state["error_code"] == "20429"
    assert "provider_id" not in state

    second = await svc.send(tid, eid)
    assert (second.action, second.provider_id, second.attempts) == (SENT, "SM" + "2" * 32, 2)
    assert route.call_count == 2
    assert "error_code" not in await store.delivery_state(tid, eid)


async def test_429s_stop_after_max_attempts(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=twilio_error(429, 20429, "Too Many Requests"))
    tid, eid = await reply(store)
    svc = service(store, sender)

    delays = [(await svc.send(tid, eid)).retry_in_s for _ in range(2)]
    last = await svc.send(tid, eid)

    assert delays == [2, 10]
    assert (last.action, last.error_code, last.attempts) == (FAILED, "20429", 3)
    assert "gave up after 3 attempts" in last.error_message
    assert route.call_count == 3
    event = await store.get_event(tid, eid)
    assert event.delivery is Delivery.FAILED and event.error_code == "20429"
    # A failed send stays failed: running the job again calls nobody.
    assert (await svc.send(tid, eid)).action == SKIPPED
    assert route.call_count == 3


# A 5xx, or a connection lost after the request was written: Twilio may have created the
# message. Never POSTed again blindly: the send ends as send_unconfirmed for a person.
AMBIGUOUS = [
    pytest.param(twilio_error(500, 20500, "Internal error"), "20500", id="500"),
    pytest.param(twilio_error(503, 20503, "Service Unavailable"), "20503", id="503"),
    pytest.param(httpx.ReadTimeout("slow answer"), "timeout", id="read-timeout"),
    pytest.param(httpx.WriteTimeout("slow write"), "timeout", id="write-timeout"),
    pytest.param(httpx.RemoteProtocolError("dropped"), "network_error", id="dropped"),
    pytest.param(httpx.ReadError("reset"), "network_error", id="reset"),
]


@pytest.mark.parametrize("answer, code", AMBIGUOUS)
async def test_an_ambiguous_failure_is_not_sent_again_but_left_to_a_person(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter,
    answer: Any, code: str,
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[answer, created("SM" + "2" * 32)])
    tid, eid = await reply(store)
    svc = service(store, sender)

    outcome = await svc.send(tid, eid)

    assert (outcome.action, outcome.error_code, outcome.attempts) == (
        FAILED, "send_unconfirmed", 1)
    assert code in outcome.error_message and "bridge retry" in outcome.error_message
    event = await store.get_event(tid, eid)
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "send_unconfirmed")
    # The job's crash retry or a duplicate job runs it again: still no second POST.
    assert (await svc.send(tid, eid)).action == SKIPPED
    assert route.call_count == 1


@pytest.mark.parametrize("error", [
    httpx.ConnectError("refused"),
    httpx.ConnectTimeout("slow connect"),
    httpx.PoolTimeout("no free connection"),
])
async def test_errors_before_the_request_left_are_retried(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter, error: Exception
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[error, created("SM" + "2" * 32)])
    tid, eid = await reply(store)
    svc = service(store, sender)

    first = await svc.send(tid, eid)
    assert (first.action, first.attempts) == (RETRY, 1)
    assert (await store.delivery_state(tid, eid))["state"] == Delivery.QUEUED

    second = await svc.send(tid, eid)
    assert (second.action, second.provider_id, second.attempts) == (SENT, "SM" + "2" * 32, 2)
    assert route.call_count == 2


async def test_channel_rate_limit_63018_is_transient(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    api.post(MESSAGES).mock(return_value=twilio_error(400, 63018, "Rate limit exceeded"))
    tid, eid = await reply(store)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (RETRY, "63018")


# ------------------------------------------------------------------------------ idempotency


async def test_a_rerun_after_success_sends_nothing(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created("SM" + "6" * 32))
    tid, eid = await reply(store)
    svc = service(store, sender)
    await svc.send(tid, eid)
    rerun = await svc.send(tid, eid)
    assert (rerun.action, rerun.provider_id) == (SKIPPED, "SM" + "6" * 32)
    assert await store.record_status_callback("SM" + "6" * 32, Delivery.READ)
    assert (await svc.send(tid, eid)).action == SKIPPED
    assert route.call_count == 1


async def test_an_attempt_that_died_mid_call_is_not_sent_blindly(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store)
    # What a worker killed during the API call leaves behind (its lock has expired).
    await store.set_delivery(tid, eid, {"state": "sending", "attempts": "1"})
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "send_unconfirmed")
    assert "bridge retry" in outcome.error_message
    assert route.call_count == 0


async def test_a_second_run_during_a_send_backs_off(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store)
    ticket = await store.get_ticket(tid)
    await store.redis.set(f"{keys.ticket(ticket.contact_id, tid)}:sending:{eid}", "other",
                          px=5000)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (RETRY, "in_flight")
    assert outcome.retry_in_s is not None and 1 <= outcome.retry_in_s <= 5
    assert route.call_count == 0


async def test_a_lock_taken_by_a_retried_set_is_ours(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SET NX reached Redis but its reply was lost; the client sent it again, and the
    second one answered nil: the lock holds our own token, so the send goes ahead."""
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store)
    real_set = store.redis.set

    async def set_then_lose_the_reply(*args: Any, **kwargs: Any) -> Any:
        await real_set(*args, **kwargs)
        return await real_set(*args, **kwargs)  # the retry: NX refuses, answers None

    monkeypatch.setattr(store.redis, "set", set_then_lose_the_reply)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.state) == (SENT, "queued")
    assert route.call_count == 1
    ticket = await store.get_ticket(tid)
    assert await store.redis.exists(f"{keys.ticket(ticket.contact_id, tid)}:sending:{eid}") == 0
