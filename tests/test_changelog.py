"""The change log against a real Redis: every change writes its entry in the same atomic
step, the relay hands each entry on as jobs once per position, keeps its place across
restarts, and only one relay works at a time."""

from __future__ import annotations

import json

import pytest
import redis
import redis.asyncio
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.core.changes import ChangeKind, Origin
from bridge.core.policy import ChannelPolicy
from bridge.core.tickets import EventType, Status
from bridge.jobs import QUEUE_EVENTS, QUEUE_OUTBOUND, JobQueues
from bridge.store import keys
from bridge.store.changelog import RELAY_CONSUMER, ChangeLog
from bridge.store.tickets import TicketStore
from tests.factories import ids, inbound, inbound_message, now_ms
from tests.relay_support import relay_all
from workers.relay import JobsConsumer, Relay


def queued(sync_redis: redis.Redis, queue: str) -> list[tuple[str, dict[str, object]]]:
    q = Queue(queue, connection=sync_redis, serializer=JSONSerializer)
    return [(job.id, job.args[0]) for job in q.get_jobs()]


async def test_routing_writes_one_entry_per_change_and_none_for_a_duplicate(
        store: TicketStore) -> None:
    log = ChangeLog(store.redis)
    first = await inbound(store, "Bonjour")
    second = await inbound(store, "Encore")
    tid = ids(first)
    entries = await log.all_entries()
    assert [(c.kind, c.action, c.ticket_id) for c in entries] == [
        (ChangeKind.ROUTED, "new_ticket", tid), (ChangeKind.ROUTED, "append", tid)]
    assert [c.event_id for c in entries] == [first.event_id, second.event_id]
    assert entries[0].contact_id == first.contact_id
    # The entry sits in the contact's partition, so in the slot of its other keys.
    partition = keys.partition_of(first.contact_id)
    assert [c.log_id for c in await log.entries(partition)] == [c.log_id for c in entries]
    assert keys.change_log(partition).split(":log")[0] == keys.contact_prefix(
        first.contact_id).split(":c:")[0]


async def test_a_message_to_the_current_ticket_records_its_status_before_and_after(
        store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await inbound(store, "Encore")
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.PENDING)
    await inbound(store, "Voici")
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED)
    await inbound(store, "Ça recommence")
    routed = [c for c in await ChangeLog(store.redis).all_entries()
              if c.kind is ChangeKind.ROUTED]
    assert [(c.action, c.status_from, c.status_to) for c in routed] == [
        ("new_ticket", "", ""), ("append", "new", "new"), ("append", "pending", "open"),
        ("reopen", "solved", "open")]


async def test_a_provider_retry_writes_no_entry(store: TicketStore) -> None:
    from bridge.core.csat import rating_signal

    msg = inbound_message("Hi", address="whatsapp:+33600000001")
    signal = rating_signal(body="Hi", button_payload="", replied_to_id="")
    for _ in range(3):
        await store.route_inbound(msg, signal, ChannelPolicy(), now_ms=now_ms())
    assert len(await ChangeLog(store.redis).all_entries()) == 1


async def test_thread_limit_close_is_logged_with_both_tickets(store: TicketStore) -> None:
    policy = ChannelPolicy(max_thread_messages=2)
    first = await inbound(store, "one", policy=policy)
    await inbound(store, "two", policy=policy)
    third = await inbound(store, "three", policy=policy)
    last = (await ChangeLog(store.redis).all_entries())[-1]
    assert (last.action, last.ticket_id, last.previous_ticket_id, last.close_reason,
            last.previous_status) == (
        "follow_up", third.ticket_id, first.ticket_id, "thread_limit", "new")


async def test_updates_log_who_changed_what_in_the_same_transaction(store: TicketStore) -> None:
    tid = ids(await inbound(store))
    before = len(await ChangeLog(store.redis).all_entries())
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED,
                              origin=Origin.AGENT)
    await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                              event=(EventType.NOTE, "internal", {}), origin=Origin.AGENT)
    entries = (await ChangeLog(store.redis).all_entries())[before:]
    assert [(c.kind, c.origin, c.status_from, c.status_to) for c in entries] == [
        (ChangeKind.UPDATED, Origin.AGENT, "new", "solved"),
        (ChangeKind.UPDATED, Origin.AGENT, "", "")]
    ticket = await store.get_ticket(tid)
    assert entries[-1].version == ticket.version


async def test_a_refused_update_logs_nothing(store: TicketStore) -> None:
    from bridge.store.tickets import Conflict

    tid = ids(await inbound(store))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.CLOSED)
    before = await ChangeLog(store.redis).all_entries()
    try:
        await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.OPEN)
    except Conflict:
        pass
    else:  # pragma: no cover - the rules refuse it
        raise AssertionError("a closed ticket changed")
    assert await ChangeLog(store.redis).all_entries() == before


async def test_delivery_states_are_logged(store: TicketStore) -> None:
    tid = ids(await inbound(store))
    _, eid = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                       event=(EventType.AGENT_REPLY, "Hello", {}))
    assert eid
    await store.set_delivery(tid, eid, {"state": "queued", "provider_id": "SM" + "e" * 32})
    last = (await ChangeLog(store.redis).all_entries())[-1]
    assert (last.kind, last.event_id, last.delivery) == (ChangeKind.DELIVERY, eid, "queued")


async def test_relay_hands_triggers_on_once_per_position_and_resumes_after_a_restart(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    tid = ids(await inbound(store))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED,
                              origin=Origin.AGENT)
    assert queued(sync_redis, QUEUE_EVENTS) == []  # nothing until the relay runs
    assert await relay_all(store.redis, sync_redis) == 2
    jobs = queued(sync_redis, QUEUE_EVENTS)
    assert [(p["ticket_id"], p["trigger"]) for _, p in jobs] == [
        (tid, "ticket.created"), (tid, "ticket.status_changed")]
    # A new relay (a restart) starts from the saved positions: nothing is handed on again.
    assert await relay_all(store.redis, sync_redis) == 0
    assert len(queued(sync_redis, QUEUE_EVENTS)) == 2
    # ... and hands on what happened since.
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), end_session_reason="agent",
                              origin=Origin.AGENT)
    assert await relay_all(store.redis, sync_redis) == 1
    assert queued(sync_redis, QUEUE_EVENTS)[-1][1]["trigger"] == "ticket.session_ended"


async def test_a_batch_handed_on_twice_names_the_same_jobs(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    """A relay that dies after enqueueing but before saving its position hands the batch on
    again: the jobs keep their ids (and the trigger rules claim a marker per change)."""
    tid = ids(await inbound(store))
    await relay_all(store.redis, sync_redis)
    first_ids = [job_id for job_id, _ in queued(sync_redis, QUEUE_EVENTS)]
    sync_redis.hdel(keys.RELAY_POSITIONS, *sync_redis.hkeys(keys.RELAY_POSITIONS))
    assert await relay_all(store.redis, sync_redis) == 1
    again = queued(sync_redis, QUEUE_EVENTS)
    assert {job_id for job_id, _ in again} == set(first_ids)
    assert again[0][1]["ticket_id"] == tid


async def test_a_parked_63016_applied_later_still_sends_the_template(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    """The 'failed 63016' callback arrived before the worker stored the sid: applied later
    (when the sid is stored), its change still reaches the relay, which enqueues the send
    again with the crash retry other sends have."""
    from bridge.core.tickets import Delivery

    tid = ids(await inbound(store))
    _, eid = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                       event=(EventType.AGENT_REPLY, "Hello", {}))
    assert eid
    sid = "SM" + "f" * 32
    assert not await store.record_status_callback(sid, Delivery.FAILED, error_code="63016")
    await store.set_delivery(tid, eid, {"state": "sending", "provider_id": sid})
    assert (await store.delivery_state(tid, eid))["state"] == "failed"
    await relay_all(store.redis, sync_redis)
    q = Queue(QUEUE_OUTBOUND, connection=sync_redis, serializer=JSONSerializer)
    [job] = [j for j in q.get_jobs() if j.id.endswith("fallback")]
    assert job.args[0] == {"ticket_id": tid, "event_id": eid}
    assert job.retries_left and job.retries_left > 0


async def test_only_one_relay_works_at_a_time_and_another_takes_over(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    await inbound(store)
    log = ChangeLog(store.redis)
    first = Relay(log, JobsConsumer(JobQueues(sync_redis)), lease_ttl_ms=60_000)
    second = Relay(log, JobsConsumer(JobQueues(sync_redis)), lease_ttl_ms=60_000)
    assert await first.step(wait=False) == 1
    await inbound(store, address="whatsapp:+33600000002")
    assert await second.step(wait=False) == 0  # the lease is the first one's
    await first.release()  # the first stops
    assert await second.step(wait=False) == 1  # and the second continues after it
    assert len(queued(sync_redis, QUEUE_EVENTS)) == 2


async def test_a_paused_relay_that_comes_back_never_moves_positions_back(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    """A relay stopped past its lease finishes its batch after the new holder went on: its
    save put the positions back, and the lag it then showed never cleared."""
    log = ChangeLog(store.redis)
    await log.save_positions("jobs", {0: "1700000000500-3", 1: "1700000000500-3"})
    await log.save_positions("jobs", {0: "1700000000400-9", 1: "1700000000500-4",
                                      2: "1700000000100-0"})
    assert (await log.positions("jobs"))[0] == "1700000000500-3"  # behind: kept
    assert (await log.positions("jobs"))[1] == "1700000000500-4"  # same ms, later seq
    assert (await log.positions("jobs"))[2] == "1700000000100-0"  # first save
    await log.save_positions("jobs", {0: "1700000000501-0"})
    assert (await log.positions("jobs"))[0] == "1700000000501-0"


async def test_a_relay_renews_its_lease_once_a_third_of_its_lifetime_passed(
        store: TicketStore, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    log = ChangeLog(store.redis)
    clock = [1000.0]
    relay = Relay(log, JobsConsumer(JobQueues(sync_redis)), lease_ttl_ms=3_000,
                  clock=lambda: clock[0])
    renewals: list[str] = []
    renew = log.renew_lease

    async def counting(token: str, *, ttl_ms: int, consumer: str = RELAY_CONSUMER) -> bool:
        renewals.append(consumer)
        return await renew(token, ttl_ms=ttl_ms, consumer=consumer)

    monkeypatch.setattr(log, "renew_lease", counting)
    await inbound(store)
    assert await relay.step(wait=False) == 1  # takes the lease
    await inbound(store, "Encore")
    clock[0] += 0.9
    assert await relay.step(wait=False) == 1
    assert renewals == []
    await inbound(store, "Et encore")
    clock[0] += 0.2  # 1.1 s since it was taken: more than a third of 3 s
    assert await relay.step(wait=False) == 1
    assert renewals == [RELAY_CONSUMER]
    # Its lease lapsed while it was paused and another relay took it: it learns so at its
    # next renewal, and hands nothing on.
    await store.redis.set(keys.relay_lease(RELAY_CONSUMER), "another-relay")
    await inbound(store, "Toujours moi")
    clock[0] += 5.0
    assert await relay.step(wait=False) == 0
    assert renewals == [RELAY_CONSUMER] * 2
    assert (await log.lag(RELAY_CONSUMER)).events == 1  # the last message waits


async def test_lag_counts_what_was_not_handed_on_and_the_log_is_trimmed(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    log = ChangeLog(store.redis)
    for n in range(5):
        await inbound(store, address=f"whatsapp:+336000001{n:02d}")
    lag = await log.lag(RELAY_CONSUMER, now_ms=now_ms() + 10_000)
    assert lag.events == 5
    assert lag.oldest_s >= 10
    await relay_all(store.redis, sync_redis)
    lag = await log.lag(RELAY_CONSUMER)
    assert (lag.events, lag.oldest_s) == (0, 0.0)
    # Trimmed to the positions: each partition keeps at most its last handed-on entry.
    assert len(await log.all_entries()) <= 5
    await inbound(store, address="whatsapp:+33600000100")
    assert (await log.lag(RELAY_CONSUMER)).events == 1


@pytest.mark.parametrize("protocol", [2, 3])
async def test_entries_that_cannot_be_parsed_are_counted_and_passed_over(
        redis_url: str, sync_redis: redis.Redis, protocol: int) -> None:
    """A reader skips an entry it cannot parse (a field missing, an unknown kind, bytes that
    are not UTF-8) and counts it; the entries around it come through, in order, and the
    positions move past all of them, so nothing is read twice. The entries are read as
    Redis sends them, which differs between RESP2 and RESP3 (a list, a map)."""
    client = redis.asyncio.Redis.from_url(redis_url, protocol=protocol)
    log = ChangeLog(client)
    stream = keys.change_log(3)
    good = [sync_redis.xadd(stream, {"k": "routed", "t": str(n), "c": "c1", "a": "append"})
            for n in range(2)]
    sync_redis.xadd(stream, {"k": "routed", "c": "c1"})  # no ticket
    sync_redis.xadd(stream, {"k": "exploded", "t": "9", "c": "c1"})
    sync_redis.xadd(stream, {"k": "routed", "t": "9", "c": b"\xff\xfe"})
    last = sync_redis.xadd(stream, {"k": "routed", "t": "2", "c": "c1", "a": "new_ticket"})
    start = {p: "0-0" for p in log.partitions}
    for batch in (await log.read(start, count=10, block_ms=None),
                  await log.read_until(start, until_ms=now_ms() + 1000, count=10)):
        assert [c.log_id for c in batch.changes] == [*(g.decode() for g in good),
                                                      last.decode()]
        assert [c.ticket_id for c in batch.changes] == ["0", "1", "2"]
        assert batch.unreadable == 3
        assert batch.positions == {3: last.decode()}
        assert batch.partitions == [3, 3, 3]
    await client.aclose()


async def test_the_job_payloads_are_json(store: TicketStore, sync_redis: redis.Redis) -> None:
    await inbound(store)
    await relay_all(store.redis, sync_redis)
    [(_, payload)] = queued(sync_redis, QUEUE_EVENTS)
    assert json.loads(json.dumps(payload)) == payload


async def test_reindex_all_rebuilds_the_lists_from_the_tickets(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    """`bridge reindex`: the lists are derived data; wiped, they come back whole."""
    opened = [ids(await inbound(store, address=f"whatsapp:+3361111200{n}")) for n in range(3)]
    await store.update_ticket(opened[0], author="alice", now_ms=now_ms(), status=Status.SOLVED)
    before, _ = await store.list_tickets()
    for key in sync_redis.scan_iter(match="bridge:idx:*"):
        sync_redis.delete(key)
    sync_redis.delete(keys.TICKET_CONTACT)
    assert (await store.list_tickets())[0] == []
    assert await store.reindex_all() == 3
    after, _ = await store.list_tickets()
    assert [t.id for t in after] == [t.id for t in before]
    solved, _ = await store.list_tickets(status=Status.SOLVED)
    assert [t.id for t in solved] == [opened[0]]


async def test_ticket_ids_are_reserved_in_blocks_and_never_given_twice(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    import asyncio

    from bridge.store.routing import TicketIds

    ticket_ids = TicketIds(aredis, block=4)
    # Ten callers at once: one refill, sized for all of them (not three in a row).
    taken = await asyncio.gather(*(ticket_ids.take() for _ in range(10)))
    assert sorted(taken) == list(range(1, 11))
    assert int(await aredis.get(keys.TICKET_SEQ)) == 10
    # One at a time: a block of four per refill.
    taken += [await ticket_ids.take() for _ in range(5)]
    assert sorted(taken) == list(range(1, 16))
    assert int(await aredis.get(keys.TICKET_SEQ)) == 18
    ticket_ids.give_back(3)
    assert await ticket_ids.take() == 3  # the smallest free id first
    assert await ticket_ids.take() == 16


async def test_a_failed_refill_fails_every_waiting_caller_once_and_the_next_succeeds(
        store: TicketStore, aredis: redis.asyncio.Redis) -> None:
    import asyncio

    from bridge.store.routing import TicketIds

    ticket_ids = TicketIds(aredis, block=4)
    await aredis.set(keys.TICKET_SEQ, "not a number")  # INCRBY answers an error
    results = await asyncio.gather(*(ticket_ids.take() for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.ResponseError) for r in results)
    await aredis.set(keys.TICKET_SEQ, 100)
    assert await ticket_ids.take() == 101


async def test_an_id_goes_back_only_when_the_call_provably_did_not_use_it(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider retry answers `duplicate`: the id that call brought may have been used by
    an earlier try whose reply was lost, so it is not given back; an append's is."""
    from bridge.core.csat import rating_signal
    from tests.factories import inbound_message

    given_back: list[int] = []
    real = store._ticket_ids.give_back
    monkeypatch.setattr(store._ticket_ids, "give_back",
                        lambda tid: (given_back.append(tid), real(tid)))
    msg = inbound_message("hi", sid="SM" + "9" * 32, address="whatsapp:+33611113001")
    signal = rating_signal(body="hi", button_payload="", replied_to_id="")
    opened = await store.route_inbound(msg, signal, ChannelPolicy(), now_ms=now_ms())
    assert opened.opened_ticket and given_back == []  # used
    await store.route_inbound(msg, signal, ChannelPolicy(), now_ms=now_ms())
    assert given_back == []  # duplicate: kept out of the reserve
    await inbound(store, "more", address="whatsapp:+33611113001")
    assert len(given_back) == 1  # append: back in the reserve

