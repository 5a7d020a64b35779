"""Outbound end to end: a real Redis, RQ's SimpleWorker running the real job entry point
(`workers.tasks.send_outbound`, enqueued through bridge.jobs like the web process does), and
the Twilio stub checking every request against Twilio's OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web
from click.testing import CliRunner
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from twilio.request_validator import RequestValidator

from bridge import jobs
from bridge.commands.outbound import failed, retry
from bridge.core.tickets import TWILIO_DELIVERY, Delivery
from bridge.jobs import CRASH_RETRY, QUEUE_OUTBOUND, JobQueues
from bridge.store.tickets import TicketStore
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, make_settings
from tests.factories import routed_reply
from tests.faults.workers_support import work_in_process
from tests.relay_support import relay_all
from tests.stubs.twilio_rules import (
    INVALID_TO,
    MESSAGES_PATH,
    SERVER_ERROR,
    SERVICE_UNAVAILABLE,
    TOO_MANY_REQUESTS,
    Failure,
)
from tests.stubs.twilio_stub import TwilioStub, run_in_thread
from workers import runtime
from workers.outbound import OutboundService, RetryPolicy
from workers.runtime import Runtime
from workers.senders import OutboundMessage, Sender, SendResult, TwilioSender

CUSTOMER = "whatsapp:+33612345678"
BODY = "Bonjour & <bienvenue> 👋"
STATUS_URL = "https://bridge.example.com/webhooks/twilio/status"
TEMPLATE = "HX" + "b" * 32
MESSAGES = MESSAGES_PATH.replace("{AccountSid}", ACCOUNT_SID)


def now_ms() -> int:
    return int(time.time() * 1000)


def fields(request: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.form:
        out.setdefault(name, []).append(value)
    return out


@pytest.fixture
def stub() -> Iterator[TwilioStub]:
    with run_in_thread(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def rt(redis_url: str, stub: TwilioStub, sync_redis: redis.Redis,
       monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    # The bridge commands read settings from the environment: no real credentials here.
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    # No backoff delay, so RQ requeues a retried job at once and one burst runs it.
    built = Runtime(make_settings(redis_url, twilio_api_url=stub.url),
                    policy=RetryPolicy(backoff_s=(0,), jitter=0.0))
    previous = runtime.install(built)
    try:
        yield built
    finally:
        runtime.install(previous)
        built.close()


def test_agent_reply_reaches_twilio_with_the_exact_form(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis
) -> None:
    tid, eid = rt.run(routed_reply(rt.store, BODY))
    job_id = JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)

    [request] = stub.requests
    assert stub.invalid == []
    assert fields(request) == {
        "To": [CUSTOMER],
        "From": ["whatsapp:+14155238886"],
        "Body": [BODY],
        "StatusCallback": [STATUS_URL],
    }
    assert request.auth == (ACCOUNT_SID, AUTH_TOKEN)
    job = Job.fetch(job_id, connection=sync_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"ticket_id": tid, "event_id": eid, "action": "sent",
                                  "state": "queued", "provider_id": request.sid,
                                  "attempts": 1, "via": "body"}
    state = rt.run(rt.store.delivery_state(tid, eid))
    assert (state["state"], state["provider_id"]) == ("queued", request.sid)

    # The status callback route (web process) applies Twilio's callbacks like this.
    assert rt.run(rt.store.record_status_callback(request.sid, Delivery.DELIVERED))
    assert rt.run(rt.store.get_event(tid, eid)).delivery is Delivery.DELIVERED

    # The same send enqueued again (a duplicate job) does not reach Twilio again.
    Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer).enqueue(
        "workers.tasks.send_outbound", {"ticket_id": tid, "event_id": eid})
    work_in_process(sync_redis)
    assert len(stub.requests) == 1


def test_429s_are_retried_through_rq_then_sent(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis
) -> None:
    stub.fail_times(2, TOO_MANY_REQUESTS)
    tid, eid = rt.run(routed_reply(rt.store, BODY))
    job_id = JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)

    assert [r.status for r in stub.requests] == [429, 429, 201]
    assert stub.invalid == []
    assert Job.fetch(job_id, connection=sync_redis,
                     serializer=JSONSerializer).get_status() == JobStatus.FINISHED
    state = rt.run(rt.store.delivery_state(tid, eid))
    assert (state["state"], state["provider_id"], state["attempts"]) == (
        "queued", stub.messages[0].sid, "3")
    assert Queue(QUEUE_OUTBOUND, connection=sync_redis).failed_job_registry.count == 0


def test_transient_failures_stop_after_max_attempts(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis
) -> None:
    stub.fail_times(10, TOO_MANY_REQUESTS)
    tid, eid = rt.run(routed_reply(rt.store, BODY))
    job_id = JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)

    # RetryPolicy.max_attempts API calls, whatever RQ's crash-retry budget was.
    assert [r.status for r in stub.requests] == [429] * 5
    job = Job.fetch(job_id, connection=sync_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    event = rt.run(rt.store.get_event(tid, eid))
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "20429")
    assert "gave up after 5 attempts" in event.error_message


@pytest.mark.parametrize("failure", [SERVER_ERROR, SERVICE_UNAVAILABLE], ids=["500", "503"])
def test_a_5xx_is_not_sent_twice_but_listed_as_send_unconfirmed(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis, redis_url: str, failure: Failure
) -> None:
    stub.fail_times(10, failure)
    tid, eid = rt.run(routed_reply(rt.store, BODY))
    job_id = JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)

    # One POST: Twilio may have created the message, so neither the job's own retry nor
    # RQ's crash retry sends it again.
    assert [r.status for r in stub.requests] == [failure.status]
    job = Job.fetch(job_id, connection=sync_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    event = rt.run(rt.store.get_event(tid, eid))
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "send_unconfirmed")
    assert str(failure.code) in event.error_message
    listed = CliRunner().invoke(failed, ["--redis-url", redis_url])
    row = next(line for line in listed.output.splitlines() if line.startswith(job_id))
    assert "send_unconfirmed" in row and f"ticket {tid} {eid}" in row


def test_permanent_failure_is_listed_and_can_be_retried(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis, redis_url: str
) -> None:
    stub.fail_next(INVALID_TO)
    tid, eid = rt.run(routed_reply(rt.store, BODY))
    job_id = JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)

    # Failed at once: RQ's enqueue-time retry (bridge.jobs.CRASH_RETRY) is not spent on it.
    assert [r.status for r in stub.requests] == [400]
    job = Job.fetch(job_id, connection=sync_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    event = rt.run(rt.store.get_event(tid, eid))
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "21211")

    cli = CliRunner()
    listed = cli.invoke(failed, ["--redis-url", redis_url])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith(job_id))
    assert "send_outbound" in row and f"ticket {tid} {eid}" in row
    assert "SendFailed" in row and "21211" in row and "Invalid 'To' Phone Number" in row

    assert cli.invoke(retry, ["--redis-url", redis_url]).exit_code == 2  # JOB_ID or --all
    unknown = cli.invoke(retry, ["--redis-url", redis_url, "nope"])
    assert unknown.exit_code == 1 and "not in the failed jobs: nope" in unknown.output
    redo = cli.invoke(retry, ["--redis-url", redis_url, job_id])
    assert redo.exit_code == 0 and f"requeued {job_id}" in redo.output
    reopened = rt.run(rt.store.delivery_state(tid, eid))
    assert (reopened["state"], reopened["attempts"], reopened["previous_error_code"]) == (
        "queued", "0", "21211")

    work_in_process(sync_redis)  # the stub answers normally now

    assert [r.status for r in stub.requests] == [400, 201]
    state = rt.run(rt.store.delivery_state(tid, eid))
    assert (state["state"], state["provider_id"]) == ("queued", stub.messages[0].sid)
    assert cli.invoke(failed, ["--redis-url", redis_url]).output.startswith("no failed jobs")
    assert cli.invoke(retry, ["--redis-url", redis_url, "--all"]).output.strip() == \
        "no failed jobs"


class CallbackBeforeTheSid:
    """Twilio answers the create, and its `failed` 63016 callback for the free-form message
    reaches the status webhook before the worker has stored the sid: the store parks it."""

    name = "twilio"

    def __init__(self, inner: Sender, store: TicketStore) -> None:
        self.inner = inner
        self.store = store
        self.parked: list[bool] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        result = await self.inner.send(message)
        if not message.content_sid:
            applied = await self.store.record_status_callback(
                result.provider_id, Delivery.FAILED, error_code="63016",
                error_message="outside the allowed window")
            self.parked.append(not applied)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_63016_callback_parked_before_the_sid_still_sends_the_template(
    rt: Runtime, stub: TwilioStub, sync_redis: redis.Redis
) -> None:
    early = CallbackBeforeTheSid(rt.sender, rt.store)
    rt.outbound.sender = early
    tid, eid = rt.run(routed_reply(rt.store, "Hello", {"fallback_content_sid": TEMPLATE}))
    JobQueues(sync_redis).send_outbound(tid, eid)

    work_in_process(sync_redis)  # the send: it stores the sid, which applies the parked 63016
    rt.run(relay_all(rt.store.redis, sync_redis))  # the change -> the fallback job
    work_in_process(sync_redis)  # the template

    assert early.parked == [True]
    assert [(m.get("Body"), m.get("ContentSid")) for m in stub.messages] == [
        ("Hello", ""), ("", TEMPLATE)]
    state = rt.run(rt.store.delivery_state(tid, eid))
    assert (state["state"], state["via"], state["provider_id"]) == (
        "queued", "fallback", stub.messages[1].sid)
    fallback = Job.fetch(jobs.job_id("send", tid, eid, "fallback"), connection=sync_redis,
                         serializer=JSONSerializer)
    assert fallback.get_status() == JobStatus.FINISHED
    # The crash retry every send job carries (bridge.jobs.CRASH_RETRY), unspent.
    assert (fallback.retries_left, fallback.retry_intervals) == (
        CRASH_RETRY.max, CRASH_RETRY.intervals)


# ------------------------------------------------------------------------------ the stub


async def test_stub_posts_signed_status_callbacks_that_move_delivery_forward(
    store: TicketStore, redis_url: str
) -> None:
    """The whole loop in one event loop: send through the stub, which then posts signed
    sent/delivered/read callbacks to a receiver doing what the status webhook does."""
    seen: list[str] = []
    public = ""  # the receiver's URL, known once it listens

    async def status_webhook(request: web.Request) -> web.Response:
        form = dict(await request.post())
        params = {k: str(v) for k, v in form.items()}
        if not RequestValidator(AUTH_TOKEN).validate(
                public, params, request.headers.get("X-Twilio-Signature", "")):
            return web.Response(status=403)
        seen.append(params["MessageStatus"])
        await store.record_status_callback(params["MessageSid"],
                                           TWILIO_DELIVERY[params["MessageStatus"]])
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/webhooks/twilio/status", status_webhook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # The stub signs for the public URL and posts to where the receiver listens.
    settings = make_settings(redis_url, public_base_url=f"http://127.0.0.1:{port}")
    public = f"http://127.0.0.1:{port}/webhooks/twilio/status"
    stub = TwilioStub(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                      callbacks=("sent", "delivered", "read"))
    # Callbacks wait until the send is recorded: a callback for a sid the bridge has not
    # mapped yet is dropped by the store (see the report on this race).
    stub.hold_callbacks()
    await stub.start()
    sender = TwilioSender(make_settings(redis_url, twilio_api_url=stub.url,
                                       public_base_url=settings.public_base_url))
    try:
        tid, eid = await routed_reply(store, BODY)
        outcome = await OutboundService(store, sender).send(tid, eid)
        stub.release_callbacks()
        deadline = time.monotonic() + 10
        while len(stub.posted_callbacks) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await sender.aclose()
        await stub.stop()
        await runner.cleanup()
    posted = stub.posted_callbacks
    assert [c.params["MessageStatus"] for c in posted] == ["sent", "delivered", "read"]
    assert {c.url for c in posted} == {public} and {c.status for c in posted} == {204}
    assert all(c.params["MessageSid"] == outcome.provider_id for c in posted)
    assert seen == ["sent", "delivered", "read"]
    assert (await store.get_event(tid, eid)).delivery is Delivery.READ


@pytest.fixture
async def http_stub() -> AsyncIterator[tuple[TwilioStub, httpx.AsyncClient]]:
    async with (
        TwilioStub(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as server,
        httpx.AsyncClient(base_url=server.url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as client,
    ):
        yield server, client


VALID = {"To": CUSTOMER, "From": "whatsapp:+14155238886", "Body": "hi"}


@pytest.mark.parametrize("form, status, code", [
    ({"From": "whatsapp:+14155238886", "Body": "hi"}, 400, 21604),
    ({"To": CUSTOMER, "Body": "hi"}, 400, 21603),
    ({"To": CUSTOMER, "From": "whatsapp:+14155238886"}, 400, 21602),
    ({**VALID, "Statuscallback": STATUS_URL}, 400, 20001),  # not a Twilio field name
    ({**VALID, "ContentSid": "HX123"}, 400, 20001),  # the schema's ^HX[0-9a-f]{32}$
    ({**VALID, "ValidityPeriod": "soon"}, 400, 20001),  # an integer in the schema
    ({"To": CUSTOMER, "From": "whatsapp:+14155238886", "ContentSid": "HX" + "a" * 32,
      "ContentVariables": "1=Ana"}, 400, 21656),
    ({**VALID, "StatusCallback": "https://my_host.example.com/s"}, 400, 21609),
    ({"To": "+33612345678", "From": "whatsapp:+14155238886", "Body": "hi"}, 400, 21211),
])
async def test_stub_refuses_what_twilio_refuses(
    http_stub: tuple[TwilioStub, httpx.AsyncClient], form: dict[str, str], status: int,
    code: int
) -> None:
    stub, client = http_stub
    answer = await client.post(MESSAGES, data=form)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert len(stub.invalid) == 1 and not stub.messages


async def test_stub_checks_basic_auth_and_answers_a_message_resource(
    http_stub: tuple[TwilioStub, httpx.AsyncClient]
) -> None:
    stub, client = http_stub
    anonymous = await client.post(MESSAGES, data=VALID, auth=None)
    wrong = await client.post(MESSAGES, data=VALID, auth=(ACCOUNT_SID, "wrong"))
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    answer = await client.post(MESSAGES, data={**VALID, "MediaUrl": ["https://x/a.png"] * 2})
    assert answer.status_code == 201
    message = answer.json()
    assert message["sid"].startswith("SM") and len(message["sid"]) == 34
    assert (message["status"], message["to"], message["num_media"]) == ("queued", CUSTOMER, "2")
    assert stub.messages[0].getall("MediaUrl") == ["https://x/a.png"] * 2
    with_service = await client.post(MESSAGES, data={
        "To": CUSTOMER, "MessagingServiceSid": "MG" + "d" * 32, "Body": "hi"})
    assert with_service.json()["status"] == "accepted"


async def test_stub_scripted_failures_and_latency(
    http_stub: tuple[TwilioStub, httpx.AsyncClient]
) -> None:
    stub, client = http_stub
    stub.latency_s = 0.01
    stub.fail_next(TOO_MANY_REQUESTS, SERVER_ERROR)
    codes = [(await client.post(MESSAGES, data=VALID)).status_code for _ in range(3)]
    assert codes == [429, 500, 201]
    assert (stub.accepted, stub.refused, stub.invalid) == (1, 2, [])
