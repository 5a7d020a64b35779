"""Sending without Twilio (the outbox, widget replies) and the RQ glue of the send job:
retries steered from its outcome, bad payloads, the retry policy, masked addresses, the
`bridge outbox` command."""

from __future__ import annotations

import pytest
import redis
import respx
from click.testing import CliRunner
from rq.job import Job

from bridge.commands.outbound import outbox as outbox_command
from bridge.core.messages import Channel
from bridge.core.tickets import Delivery, EventType
from bridge.store.outbox import Outbox
from bridge.store.tickets import TicketStore
from config.settings import Secret
from tests.conftest import make_settings
from tests.outbound.support import (
    BUTTONS,
    CUSTOMER,
    MESSAGES,
    NOW,
    TEMPLATE,
    created,
    reply,
    service,
)
from workers.outbound import (
    FAILED,
    RETRY,
    SENT,
    SKIPPED,
    RetryPolicy,
    SendOutcome,
    mask_address,
)
from workers.senders import OutboxSender, TwilioSender, build_sender
from workers.tasks import SendFailed, SendRetry, finish_job, send_outbound

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
