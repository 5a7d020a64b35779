"""The send job's decisions against a real Redis, with Twilio's API mocked by respx.

twilio-python talks through workers.twilio_client (httpx), so respx sees the exact form it
sends. Time is injected: the contact's 24-hour window opens at NOW.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import redis
import respx
from click.testing import CliRunner
from rq.job import Job

from bridge.commands.outbound import outbox as outbox_command
from bridge.core.messages import Channel
from bridge.core.tickets import Delivery, EventType
from bridge.store import keys
from bridge.store.outbox import Outbox
from bridge.store.tickets import TicketStore
from config.settings import Secret, Settings
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.factories import inbound_message, routed_reply
from workers.outbound import (
    FAILED,
    RETRY,
    SENT,
    SKIPPED,
    OutboundService,
    RetryPolicy,
    SendOutcome,
    mask_address,
)
from workers.senders import OutboxSender, TwilioSender, build_sender
from workers.tasks import SendFailed, SendRetry, finish_job, send_outbound

NOW = 1_700_000_000_000
HOUR = 3600 * 1000
API = "https://api.twilio.com"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
CUSTOMER = "whatsapp:+33612345678"
TEMPLATE = "HX" + "b" * 32
BUTTONS = "HX" + "c" * 32
FAST = RetryPolicy(max_attempts=3, backoff_s=(2, 10), jitter=0.0)


def created(sid: str = "SM" + "1" * 32, status: str = "queued") -> httpx.Response:
    return httpx.Response(201, json={"sid": sid, "status": status, "account_sid": ACCOUNT_SID,
                                     "to": CUSTOMER, "body": ""})


def twilio_error(status: int, code: int, message: str = "error",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={
        "code": code, "message": message, "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}"})


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)


@pytest.fixture
def twilio_settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def sender(twilio_settings: Settings) -> AsyncIterator[TwilioSender]:
    s = TwilioSender(twilio_settings)
    yield s
    await s.aclose()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router




def service(store: TicketStore, sender: Any, *, at: int = NOW + 60_000,
            policy: RetryPolicy = FAST) -> OutboundService:
    return OutboundService(store, sender, policy=policy, clock=lambda: at)


async def reply(store: TicketStore, body: str = "Bonjour & <bienvenue> 👋",
                data: dict[str, Any] | None = None, *, address: str = CUSTOMER,
                channel: Channel = Channel.WHATSAPP, etype: EventType = EventType.AGENT_REPLY,
                sid: str = "SM" + "a" * 32) -> tuple[str, str]:
    """A routed customer message (opens the window at NOW), then an agent reply."""
    message = inbound_message(sid=sid, address=address, at_ms=NOW, channel=channel)
    return await routed_reply(store, body, data, message=message, etype=etype,
                              reply_at_ms=NOW + 1000)


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


# ------------------------------------------------------------------------------ permanent


async def test_400_fails_at_once_with_its_code(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(
        return_value=twilio_error(400, 21211, "Invalid 'To' Phone Number"))
    tid, eid = await reply(store)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code, outcome.attempts) == (FAILED, "21211", 1)
    assert "Invalid 'To' Phone Number" in outcome.error_message
    assert route.call_count == 1
    event = await store.get_event(tid, eid)
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "21211")
    assert "Invalid 'To'" in event.error_message


async def test_63016_falls_back_to_the_approved_template(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[
        twilio_error(400, 63016, "outside the allowed window"), created("SM" + "3" * 32)])
    tid, eid = await reply(store, "Your order shipped", {
        "fallback_content_sid": TEMPLATE, "fallback_content_variables": {"1": "#1234"}})
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.via, outcome.attempts) == (SENT, "fallback", 2)
    first, second = (form(c.request) for c in route.calls)
    assert first["Body"] == ["Your order shipped"]
    assert second["ContentSid"] == [TEMPLATE] and "Body" not in second
    assert json.loads(second["ContentVariables"][0]) == {"1": "#1234"}
    assert (await store.delivery_state(tid, eid))["provider_id"] == "SM" + "3" * 32


async def test_63016_without_a_template_fails(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=twilio_error(400, 63016, "outside window"))
    tid, eid = await reply(store)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "63016")
    assert "no approved template" in outcome.error_message
    assert route.call_count == 1


async def test_63016_from_a_status_callback_then_rerun_sends_the_template(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[created("SM" + "4" * 32),
                                                 created("SM" + "5" * 32)])
    tid, eid = await reply(store, "Hello", {"fallback_content_sid": TEMPLATE})
    svc = service(store, sender)
    assert (await svc.send(tid, eid)).action == SENT
    # Twilio accepted the free-form message, then reported 63016 asynchronously.
    assert await store.record_status_callback("SM" + "4" * 32, Delivery.FAILED,
                                              error_code="63016", error_message="window")
    outcome = await svc.send(tid, eid)
    assert (outcome.action, outcome.via, outcome.provider_id) == (SENT, "fallback",
                                                                  "SM" + "5" * 32)
    assert form(route.calls.last.request)["ContentSid"] == [TEMPLATE]
    # The template is sent once: a third run has nothing to do.
    assert (await svc.send(tid, eid)).action == SKIPPED
    assert route.call_count == 2


async def test_outside_the_window_sends_the_template_or_refuses_before_calling(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    late = service(store, sender, at=NOW + 25 * HOUR)
    tid, with_template = await reply(store, "Are you there?",
                                     {"fallback_content_sid": TEMPLATE})
    _, without = await store.update_ticket(tid, author="alice", now_ms=NOW + 2000,
                                           event=(EventType.AGENT_REPLY, "Still there?", {}))
    assert without

    sent = await late.send(tid, with_template)
    refused = await late.send(tid, without)

    assert (sent.action, sent.via) == (SENT, "fallback")
    assert form(route.calls.last.request)["ContentSid"] == [TEMPLATE]
    assert (refused.action, refused.error_code) == (FAILED, "outside_window")
    assert "24 hours" in refused.error_message
    assert route.call_count == 1  # the refused one never reached Twilio


async def test_21610_marks_the_contact_opted_out(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(
        return_value=twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    tid, eid = await reply(store)
    svc = service(store, sender)
    outcome = await svc.send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "21610")
    ticket = await store.get_ticket(tid)
    assert (await store.get_contact(ticket.contact_id)).opted_out
    assert await store.redis.hget(keys.contact(ticket.contact_id), "opted_out") == b"1"
    # The next message to that contact fails without calling Twilio.
    _, next_eid = await store.update_ticket(tid, author="alice", now_ms=NOW + 5000,
                                            event=(EventType.AGENT_REPLY, "Hello?", {}))
    assert next_eid
    again = await svc.send(tid, next_eid)
    assert (again.action, again.error_code) == (FAILED, "opted_out")
    assert route.call_count == 1


async def test_bad_event_data_fails_without_calling(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "x", {"content_sid": BUTTONS,
                                        "content_variables": {"1": {"nested": True}}})
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "invalid_event")
    _, empty = await store.update_ticket(tid, author="alice", now_ms=NOW + 3000,
                                         event=(EventType.AGENT_REPLY, "", {}))
    assert empty
    assert (await service(store, sender).send(tid, empty)).error_code == "invalid_event"
    assert route.call_count == 0


async def test_events_that_are_not_outbound_are_refused(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "internal", etype=EventType.NOTE)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "not_outbound")
    missing = await service(store, sender).send(tid, "1-0")
    assert (missing.action, missing.error_code) == (FAILED, "not_found")
    assert route.call_count == 0


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


# ------------------------------------------------------------------------------ other channels


async def test_outbox_when_twilio_is_not_configured(
    store: TicketStore, redis_url: str, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    settings = make_settings(redis_url, twilio_account_sid="", twilio_auth_token=Secret(""))
    outbox = Outbox(store.redis)
    sender = build_sender(settings, outbox)
    assert isinstance(sender, OutboxSender)
    tid, eid = await reply(store, "Bonjour & <bienvenue> 👋")
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.state, outcome.provider_id) == (
        SENT, Delivery.DELIVERED, "OUTBOX-1")
    event = await store.get_event(tid, eid)
    assert event.delivery is Delivery.DELIVERED
    [entry] = await outbox.latest()
    assert (entry.to, entry.body, entry.ticket_id, entry.event_id) == (
        CUSTOMER, "Bonjour & <bienvenue> 👋", tid, eid)
    assert entry.at_ms > 0 and route.call_count == 0
    # Rerun: nothing new in the outbox.
    assert (await service(store, sender).send(tid, eid)).action == SKIPPED
    assert await outbox.count() == 1


async def test_outbox_keeps_templates_and_reads_newest_first(store: TicketStore) -> None:
    outbox = Outbox(store.redis)
    sender = OutboxSender(outbox)
    tid, first = await reply(store, "one")
    _, second = await store.update_ticket(tid, author="alice", now_ms=NOW + 2000, event=(
        EventType.CSAT_SENT, "Rate us", {"content_sid": BUTTONS,
                                         "content_variables": {"1": "Camille"}}))
    assert second
    svc = service(store, sender)
    await svc.send(tid, first)
    await svc.send(tid, second)
    newest, oldest = await outbox.latest()
    assert (newest.provider_id, oldest.provider_id) == ("OUTBOX-2", "OUTBOX-1")
    assert newest.content_sid == BUTTONS and newest.body == ""
    assert newest.summary() == f'[template {BUTTONS} {{"1": "Camille"}}]'
    assert [e.n for e in await outbox.latest(1, before=newest.stream_id)] == [1]


async def test_widget_replies_need_no_provider(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "Hi!", address="visitor-42", channel=Channel.WIDGET)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.state) == (SENT, Delivery.SENT)
    assert route.call_count == 0


# ------------------------------------------------------------------------------ RQ glue


def test_finish_job_steers_rqs_retry(sync_redis: redis.Redis) -> None:
    job = Job.create("workers.tasks.send_outbound", args=({"ticket_id": "1"},),
                     connection=sync_redis)
    job.retries_left, job.retry_intervals = 3, [5, 30, 120]
    with pytest.raises(SendRetry, match="20429"):
        finish_job(SendOutcome("1", "2-0", RETRY, error_code="20429", retry_in_s=9), job)
    assert (job.retries_left, job.retry_intervals) == (4, [9])
    with pytest.raises(SendFailed, match="21211: bad number"):
        finish_job(SendOutcome("1", "2-0", FAILED, error_code="21211",
                               error_message="bad number"), job)
    assert job.retries_left == 0
    assert finish_job(SendOutcome("1", "2-0", SENT, state="queued", provider_id="SMx"),
                      None) == {"ticket_id": "1", "event_id": "2-0", "action": "sent",
                                "state": "queued", "provider_id": "SMx", "attempts": 0}


def test_a_malformed_payload_fails_for_good() -> None:
    with pytest.raises(SendFailed, match="bad_payload"):
        send_outbound({"ticket": "1"})


def test_retry_policy_backs_off_exponentially_with_jitter() -> None:
    policy = RetryPolicy()
    assert [policy.delay_s(n, rand=lambda: 0.0) for n in range(1, 6)] == [2, 10, 30, 90, 90]
    assert policy.delay_s(1, rand=lambda: 1.0) == 2  # 2 + 20 % rounds down
    assert policy.delay_s(2, rand=lambda: 1.0) == 12
    assert policy.delay_s(1, retry_after_s=4000, rand=lambda: 0.0) == 300  # capped


def test_addresses_are_masked_in_logs() -> None:
    assert mask_address("whatsapp:+33612345678") == "whatsapp:+33…78"
    assert mask_address("whatsapp:US.13491208655302741918") == "whatsapp:US.…18"
    assert mask_address("abc") == "abc"


def test_bridge_outbox_prints_a_table(sync_redis: redis.Redis, redis_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    empty = runner.invoke(outbox_command, ["--redis-url", redis_url])
    assert empty.exit_code == 0 and "the outbox is empty" in empty.output

    import asyncio

    import redis.asyncio

    async def fill() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            box = Outbox(client)
            await box.append(to=CUSTOMER, at_ms=NOW, body="Bonjour\nça va ?", ticket_id="7",
                             event_id="1-0")
            await box.append(to=CUSTOMER, at_ms=NOW + 1000, content_sid=TEMPLATE,
                             content_variables={"1": "x"}, ticket_id="7", event_id="2-0")
        finally:
            await client.aclose()

    asyncio.run(fill())
    result = runner.invoke(outbox_command, ["--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "SENT", "AT", "TO", "TICKET", "MESSAGE"]
    assert lines[1].startswith("OUTBOX-2") and TEMPLATE in lines[1]
    assert lines[2].startswith("OUTBOX-1") and "Bonjour ça va ?" in lines[2]
    assert "2023-11-14 22:13:20Z" in lines[2] and CUSTOMER in lines[2]
