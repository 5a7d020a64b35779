"""Triggers and timed automations: timers through RQ's scheduler, staleness, notices."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from bridge.core.policy import ChannelPolicy
from bridge.core.rules import AutomationConfig, parse_config
from bridge.core.tickets import EventType, SessionState, Status
from bridge.jobs import QUEUE_HOUSEKEEPING, QUEUE_OUTBOUND, JobQueues
from bridge.store.macros import MacroStore, load_shipped
from bridge.store.tickets import TicketStore
from tests.conftest import CONTACT_KEY, make_settings
from tests.factories import ids, inbound, now_ms
from tests.faults.workers_support import work_in_process
from workers import automations, runtime, tasks
from workers.automations import Deps, handle_due_timer, handle_ticket_event

ROOT = Path(__file__).resolve().parent.parent

RULES = """
[general]
company_name = "Acme"

[[triggers]]
name = "thread_limit_notice"
on = ["ticket.closed_thread_limit"]
when = { status = ["closed"], closed_reason = ["thread_limit"] }
then = { apply_macro = "thread_limit" }

[[triggers]]
name = "tag_reopened"
on = ["ticket.reopened"]
then = { add_tags = ["reopened"] }

[[triggers]]
name = "broken"
on = ["ticket.created"]
when = { tags_all = ["broken"] }
then = { apply_macro = "does_not_exist" }

[[automations]]
name = "close_solved_whatsapp"
since = "solved"
after_s = 2
when = { status = ["solved"], channel = ["whatsapp"] }
then = { set_status = "closed" }
"""


def rules(text: str = RULES) -> AutomationConfig:
    return parse_config(tomllib.loads(text), "test-automations.toml")


@pytest.fixture
def deps(store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis) -> Deps:
    return Deps(store=store, macros=MacroStore(aredis, load_shipped()),
                queues=JobQueues(sync_redis), config=rules(), clock=now_ms)


def scheduled(sync_redis: redis.Redis) -> list[dict[str, Any]]:
    registry = ScheduledJobRegistry(  # type: ignore[no-untyped-call]
        QUEUE_HOUSEKEEPING, connection=sync_redis, serializer=JSONSerializer)
    jobs = [Job.fetch(jid, connection=sync_redis, serializer=JSONSerializer)
            for jid in registry.get_job_ids()]
    return [job.args[0] for job in jobs]


async def solve(store: TicketStore, tid: str, at_ms: int) -> tuple[int, str]:
    ticket, event_id = await store.update_ticket(tid, author="alice", now_ms=at_ms,
                                                 status=Status.SOLVED)
    assert event_id is not None
    return ticket.version, event_id


# ------------------------------------------------------------------ through RQ


def test_solved_whatsapp_ticket_closes_through_the_scheduler(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
) -> None:
    """The whole path: trigger job -> enqueue_at timer -> scheduler -> run_timer -> closed.
    The ticket is solved 3 s in the past with a 2 s policy, so the timer is already due when
    the burst worker's scheduler looks: no sleeping."""
    (tmp_path / "automations.toml").write_text(RULES, encoding="utf-8")
    settings = make_settings(redis_url, config_dir=tmp_path)

    async def setup() -> tuple[str, int, str]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            store = TicketStore(client, contact_key=CONTACT_KEY.encode())
            tid = ids(await inbound(store, at_ms=now_ms() - 10_000))
            version, event_id = await solve(store, tid, now_ms() - 3_000)
            return tid, version, event_id
        finally:
            await client.aclose()

    tid, version, event_id = asyncio.run(setup())
    JobQueues(sync_redis).ticket_event(tid, "ticket.status_changed", version, event_id)
    previous = runtime.install(runtime.Runtime(settings))
    try:
        # First burst: the trigger job runs and sets the (already due) timer.
        assert work_in_process(sync_redis, with_scheduler=True)
        timers = scheduled(sync_redis)
        assert [(t["ticket_id"], t["automation"]) for t in timers] == [
            (tid, "close_solved_whatsapp")]
        # Second burst: the scheduler moves the due timer to its queue, the worker runs it.
        assert work_in_process(sync_redis, with_scheduler=True)
        rt = runtime.current()
        ticket = rt.run(rt.store.get_ticket(tid))
        assert ticket.status is Status.CLOSED
        assert scheduled(sync_redis) == []
    finally:
        mine = runtime.install(previous)
        if mine is not None:
            mine.close()
        tasks._automations = None


# ------------------------------------------------------------------ timer staleness


async def test_a_timer_whose_ticket_was_reopened_does_nothing(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    t0 = now_ms() - 60_000
    tid = ids(await inbound(store, address="whatsapp:+15551110001", at_ms=t0))
    version, event_id = await solve(store, tid, t0 + 1_000)
    result = await handle_ticket_event(deps, {"ticket_id": tid, "trigger":
                                              "ticket.status_changed", "version": version,
                                              "event_id": event_id})
    assert len(result["scheduled"]) == 1
    (timer,) = scheduled(sync_redis)
    assert timer["due_ms"] == t0 + 3_000 and timer["anchor_ms"] == t0 + 1_000
    # The customer writes again: the ticket reopens before the timer fires.
    reopened = await inbound(store, "one more thing", address="whatsapp:+15551110001",
                             at_ms=t0 + 2_000)
    assert reopened.status is Status.OPEN
    outcome = await handle_due_timer(deps, timer)
    assert outcome["skipped"] == ["status"]
    assert (await store.get_ticket(tid)).status is Status.OPEN


async def test_a_timer_from_an_earlier_solve_does_nothing_the_new_one_closes(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    t0 = now_ms() - 60_000
    tid = ids(await inbound(store, address="whatsapp:+15551110002", at_ms=t0))
    await solve(store, tid, t0 + 1_000)
    await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.status_changed",
                                     "version": 0, "event_id": "a"})
    (first,) = scheduled(sync_redis)
    await inbound(store, "still broken", address="whatsapp:+15551110002", at_ms=t0 + 1_500)
    await solve(store, tid, t0 + 5_000)
    await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.status_changed",
                                     "version": 0, "event_id": "b"})
    timers = scheduled(sync_redis)
    assert len(timers) == 2
    (second,) = [t for t in timers if t["anchor_ms"] == t0 + 5_000]
    assert (await handle_due_timer(deps, first))["skipped"] == ["solved_changed"]
    assert (await store.get_ticket(tid)).status is Status.SOLVED
    # A note (or a CSAT answer) in between changes the version but not the solve time.
    await store.add_event(tid, EventType.NOTE, author="alice", body="fyi", now_ms=t0 + 6_000)
    fired = await handle_due_timer(deps, second)
    assert fired["fired"] is True
    closed = await store.get_ticket(tid)
    assert closed.status is Status.CLOSED and closed.closed_at_ms > 0


async def test_a_timer_whose_moment_moved_without_a_trigger_is_set_again(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    """`since = "updated"`: a tag changes the moment but fires no trigger job, so nothing
    set the timer again and the stale one skipped for good."""
    deps.config = rules("""
[[automations]]
name = "solve_idle_pending"
since = "updated"
after_s = 30
when = { status = ["pending"] }
then = { set_status = "solved" }
""")
    t0 = now_ms() - 120_000
    tid = ids(await inbound(store, address="whatsapp:+15551110011", at_ms=t0))
    await store.update_ticket(tid, author="alice", now_ms=t0 + 1_000, status=Status.PENDING)
    await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.status_changed",
                                     "version": 0, "event_id": "p"})
    (first,) = scheduled(sync_redis)
    await store.update_ticket(tid, author="alice", now_ms=t0 + 10_000, tags=("waiting",))
    stale = await handle_due_timer(deps, first)
    assert stale["skipped"] == ["updated_changed"] and len(stale["scheduled"]) == 1
    (second,) = [t for t in scheduled(sync_redis) if t["anchor_ms"] == t0 + 10_000]
    assert (await handle_due_timer(deps, second))["fired"] is True
    assert (await store.get_ticket(tid)).status is Status.SOLVED


async def test_setting_the_same_timer_twice_schedules_it_once(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15551110003"))
    await solve(store, tid, now_ms())
    for event_id in ("x", "y"):
        await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.status_changed",
                                         "version": 0, "event_id": event_id})
    assert len(scheduled(sync_redis)) == 1


async def test_a_timer_run_again_by_rq_does_not_act_twice(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    """RQ runs a job again after a crash (or a lost pop): a timer whose actions leave its
    conditions true would repeat them; its marker makes it act once."""
    deps.config = rules("""
[[automations]]
name = "remind_new"
since = "created"
after_s = 1
when = { status = ["new"] }
then = { add_tags = ["reminded"] }
""")
    tid = ids(await inbound(store, address="whatsapp:+15551110009", at_ms=now_ms() - 5_000))
    result = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.created",
                                              "version": 1, "event_id": "e1"})
    (job_id,) = result["scheduled"]
    job = Job.fetch(job_id, connection=sync_redis, serializer=JSONSerializer)
    assert job.retries_left == 3  # RQ may run it again after a crash
    (timer,) = scheduled(sync_redis)
    assert (await handle_due_timer(deps, timer))["fired"] is True
    again = await handle_due_timer(deps, timer)
    assert again["skipped"] == ["already_fired"]
    events, _ = await store.events(tid, limit=20)
    assert sum(e.type is EventType.TICKET_UPDATED for e in events) == 1


async def test_timers_are_not_set_for_tickets_the_rule_cannot_apply_to(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15551110004"))
    result = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.created",
                                              "version": 1, "event_id": "e"})
    assert result["scheduled"] == [] and scheduled(sync_redis) == []
    gone = await handle_due_timer(deps, {"ticket_id": tid, "automation": "no_such_rule",
                                         "version": 1})
    assert gone["skipped"] == ["automation_removed"]


# ------------------------------------------------------------------ triggers


async def test_thread_limit_notice_goes_to_the_follow_up_ticket(
    deps: Deps, store: TicketStore, sync_redis: redis.Redis,
) -> None:
    policy = ChannelPolicy(max_thread_messages=2)
    address = "whatsapp:+33612340000"
    first = ids(await inbound(store, "un", address=address, policy=policy))
    await inbound(store, "deux", address=address, policy=policy)
    routed = await inbound(store, "trois", address=address, policy=policy)
    follow_up = ids(routed)
    assert routed.previous_ticket_id == first and routed.close_reason == "thread_limit"
    payload = {"ticket_id": first, "trigger": "ticket.closed_thread_limit", "version": 0,
               "event_id": routed.event_id}
    result = await handle_ticket_event(deps, payload)
    assert result["fired"] == ["thread_limit_notice"] and result["errors"] == []
    events, _ = await store.events(follow_up)
    notice = events[0]
    assert notice.type is EventType.AUTOMATION
    assert notice.author == "trigger:thread_limit_notice"
    assert f"request #{follow_up}" in notice.body  # about the new ticket
    assert notice.data["source_ticket_id"] == first and notice.data["macro"] == "thread_limit"
    out = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    assert [j.args[0] for j in out.jobs] == [{"ticket_id": follow_up, "event_id": notice.id}]
    # The closed ticket itself got nothing to send.
    closed_events, _ = await store.events(first)
    assert EventType.AUTOMATION not in {e.type for e in closed_events}
    # A retried job does not send the notice twice.
    again = await handle_ticket_event(deps, payload)
    assert again["fired"] == [] and len(out.jobs) == 1


async def test_trigger_actions_change_the_ticket(deps: Deps, store: TicketStore) -> None:
    address = "whatsapp:+15551110005"
    tid = ids(await inbound(store, address=address))
    await solve(store, tid, now_ms())
    reopened = await inbound(store, "hello?", address=address)
    assert reopened.ticket_id == tid
    result = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.reopened",
                                              "version": 0, "event_id": reopened.event_id})
    assert result["fired"] == ["tag_reopened"]
    ticket = await store.get_ticket(tid)
    assert ticket.tags == ("reopened",) and ticket.status is Status.OPEN


async def test_a_failing_action_leaves_a_note_for_the_agents(
    deps: Deps, store: TicketStore,
) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15551110006"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), tags=["broken"])
    result = await handle_ticket_event(deps, {"ticket_id": tid, "trigger": "ticket.created",
                                              "version": 0, "event_id": "e1"})
    assert result["fired"] == ["broken"]
    assert "does_not_exist" in result["errors"][0]
    events, _ = await store.events(tid)
    assert events[0].type is EventType.NOTE and "does_not_exist" in events[0].body


async def test_no_live_conversation_means_no_notice(deps: Deps, store: TicketStore) -> None:
    tid = ids(await inbound(store, address="whatsapp:+15551110007"))
    ticket, _ = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                          end_session_reason="agent")
    assert ticket.session is SessionState.ENDED
    assert await automations.live_conversation(store, ticket) is None


def test_shipped_rule_file_loads_for_the_worker() -> None:
    config = automations._config(ROOT / "config" / "automations.toml")
    assert config.automation("close_solved_whatsapp") is not None


async def test_a_customers_answer_that_opens_a_pending_ticket_fires_status_changed(
    deps: Deps, store: TicketStore,
) -> None:
    """From the change log entry to the rule's action, as the relay and a worker run it."""
    from bridge.store.changelog import ChangeLog
    from workers.relay import jobs_for
    deps.config = rules("""
[[triggers]]
name = "became_open"
on = ["ticket.status_changed"]
when = { status = ["open"] }
then = { add_tags = ["became_open"] }
""")
    address = "whatsapp:+15551110009"
    tid = ids(await inbound(store, address=address))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.PENDING)
    answered = await inbound(store, "here is the info", address=address)
    assert answered.ticket_id == tid and answered.status is Status.OPEN
    last = (await ChangeLog(store.redis).all_entries())[-1]
    [spec] = jobs_for([last], deps.config)
    assert spec.payload["trigger"] == "ticket.status_changed"
    result = await handle_ticket_event(deps, spec.payload)
    assert result["fired"] == ["became_open"] and result["errors"] == []
    assert (await store.get_ticket(tid)).tags == ("became_open",)
