"""What consumers of the change log get: an update's entry names what it did (events by
type, found again through the update's op token; assignee; tags), and each consumer is fed
from its own positions, so one that fails holds back only itself and gets its batch again."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import redis

from bridge.core.changes import Change, ChangeKind, Origin
from bridge.core.tickets import EventType, Status
from bridge.store.changelog import Batch, ChangeLog
from bridge.store.tickets import TicketStore
from tests.factories import ids, inbound, now_ms
from tests.relay_support import BatchRecorder, relay_all
from workers.relay import Relay


async def _last_change(store: TicketStore) -> Change:
    return (await ChangeLog(store.redis).all_entries())[-1]


async def test_an_update_names_its_events_assignee_and_tags(store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), assignee="alice",
                              tags=["vip"], event=(EventType.AGENT_REPLY, "Hello", {}),
                              origin=Origin.AGENT)
    change = await _last_change(store)
    assert change.kind is ChangeKind.UPDATED
    assert change.op
    # The caller's event first (the reply), then the change it makes.
    assert change.event_types == (EventType.AGENT_REPLY.value, EventType.TICKET_UPDATED.value)
    assert (change.assignee, change.tags_changed) == ("alice", True)
    events = await store.events_of_change(change)
    assert [(e.type, e.body) for e in events] == [(EventType.AGENT_REPLY, "Hello"),
                                                  (EventType.TICKET_UPDATED, "")]
    assert events[0].data == {} and events[1].data["assignee"] == "alice"


async def test_a_closing_message_comes_before_the_end_of_the_session(
        store: TicketStore) -> None:
    """A macro that says goodbye and ends the session: the text, then the end (the thread,
    the widget and the export read them in this order)."""
    tid = ids(await inbound(store, "Bonjour"))
    _, returned = await store.update_ticket(
        tid, author="alice", now_ms=now_ms(), end_session_reason="agent",
        event=(EventType.MACRO_APPLIED, "Au revoir !", {}), origin=Origin.AGENT)
    events = await store.events_of_change(await _last_change(store))
    assert [e.type for e in events] == [EventType.MACRO_APPLIED, EventType.SESSION_ENDED]
    assert returned == events[0].id  # the caller's event is the one handed back


async def test_unassigning_is_told_apart_from_leaving_the_assignee(store: TicketStore) -> None:
    tid = ids(await inbound(store))
    await store.update_ticket(tid, author="a", now_ms=now_ms(), assignee="alice")
    await store.update_ticket(tid, author="a", now_ms=now_ms(), assignee="")
    assert (await _last_change(store)).assignee == ""
    await store.update_ticket(tid, author="a", now_ms=now_ms(), status=Status.OPEN)
    change = await _last_change(store)
    assert (change.assignee, change.tags_changed) == (None, False)
    assert change.event_types == (EventType.STATUS_CHANGED.value,)


async def test_events_of_a_routed_message_and_of_a_delivery(store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    routed = await _last_change(store)
    assert [(e.type, e.body) for e in await store.events_of_change(routed)] == [
        (EventType.CUSTOMER_MESSAGE, "Bonjour")]
    _, eid = await store.update_ticket(tid, author="alice", now_ms=now_ms(),
                                       event=(EventType.AGENT_REPLY, "Hi", {}))
    assert eid
    await store.set_delivery(tid, eid, {"state": "sent", "provider_id": "SM" + "f" * 32})
    delivery = await _last_change(store)
    [event] = await store.events_of_change(delivery)
    assert (event.id, event.body, event.delivery and event.delivery.value) == (eid, "Hi", "sent")


async def test_events_after_pages_the_thread_oldest_first(store: TicketStore) -> None:
    tid = ids(await inbound(store, "one"))
    await inbound(store, "two")
    await inbound(store, "three")
    first = await store.events_after(tid, limit=2)
    assert [e.body for e in first] == ["one", "two"]
    rest = await store.events_after(tid, first[-1].id)
    assert [e.body for e in rest] == ["three"]
    assert await store.events_after(tid, rest[-1].id) == []


@dataclass
class Recorder:
    name: str
    fail_next: int = 0
    seen: list[str] = field(default_factory=list)

    async def handle(self, changes: list[Change]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("receiver down")
        self.seen += [c.log_id for c in changes]


async def test_each_consumer_has_its_own_positions_and_a_failure_repeats_only_its_batch(
        store: TicketStore, sync_redis: redis.Redis) -> None:
    for n in range(3):
        await inbound(store, address=f"whatsapp:+3361234500{n}")
    healthy, failing = Recorder("healthy-test"), Recorder("failing-test", fail_next=1)
    log = ChangeLog(store.redis)
    relay = Relay(log, failing)
    try:
        await relay.step(wait=False)
    except RuntimeError:
        pass
    else:  # pragma: no cover - the recorder raises once
        raise AssertionError("the failure was swallowed")
    await relay.release()
    assert await relay_all(store.redis, sync_redis, [healthy]) == 3
    assert await relay_all(store.redis, sync_redis, [failing]) == 3  # handed again
    assert failing.seen == healthy.seen and len(healthy.seen) == 3
    assert await relay_all(store.redis, sync_redis, [healthy, failing]) == 0


async def test_changes_written_back_to_back_are_handed_on_in_few_batches(
        store: TicketStore) -> None:
    """A busy relay reads at most every min_read_interval_s, so changes gather into batches
    instead of one read (naming every partition) per change; none is lost or reordered."""
    import asyncio

    written = 40
    recorder = BatchRecorder("batching-test")
    relay = Relay(ChangeLog(store.redis), recorder, min_read_interval_s=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        for n in range(written):
            await inbound(store, address=f"whatsapp:+336123460{n:02d}")
        async with asyncio.timeout(30):
            while sum(map(len, recorder.batches)) < written:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    handed = [log_id for batch in recorder.batches for log_id in batch]
    assert len(handed) == written and len(set(handed)) == written
    # One partition per contact here: the order within the log is what each batch keeps.
    assert len(recorder.batches) <= written // 4, [len(b) for b in recorder.batches]


def _batch_of(entries: list[tuple[int, str]], read_to: dict[int, str]) -> Batch:
    changes = [Change(log_id=log_id, kind=ChangeKind.ROUTED, ticket_id="t", contact_id="c",
                      at_ms=0) for _, log_id in entries]
    return Batch(changes, read_to, 0, [p for p, _ in entries])


@pytest.mark.parametrize(("positions", "expected"), [
    ({0: "5-0", 1: "0-0"}, [(0, "6-0"), (0, "7-0"), (1, "3-0")]),  # where it was read from
    ({0: "6-0", 1: "0-0"}, [(0, "7-0"), (1, "3-0")]),  # ahead in partition 0
    ({0: "7-0", 1: "3-0"}, []),  # has handed everything on
    ({0: "9-0", 1: "0-0"}, [(1, "3-0")]),  # ahead of the batch's end
    ({0: "4-0", 1: "0-0"}, None),  # behind where it was read from: needs 5-0
])
def test_the_part_of_a_batch_beyond_a_consumers_positions(
        positions: dict[int, str], expected: list[tuple[int, str]] | None) -> None:
    batch = _batch_of([(0, "6-0"), (0, "7-0"), (1, "3-0")], {0: "7-0", 1: "3-0"})
    part = batch.beyond({0: "5-0", 1: "0-0"}, positions)
    if expected is None:
        assert part is None
        return
    assert part is not None
    assert list(zip(part.partitions, [c.log_id for c in part.changes],
                    strict=True)) == expected
    assert part.positions == {p: log_id for p, log_id in expected}


async def test_a_stopping_relay_does_not_wait_on_a_release_redis_cannot_answer(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the export process: the release at exit gets LEASE_RELEASE_AT_EXIT_S, then the
    lease is left to its TTL."""
    import asyncio

    import workers.relay
    monkeypatch.setattr(workers.relay, "LEASE_RELEASE_AT_EXIT_S", 0.05)
    await inbound(store)
    log = ChangeLog(store.redis)
    releases: list[str] = []

    async def unanswered(token: str, *, consumer: str) -> None:
        releases.append(consumer)
        await asyncio.sleep(3600)

    monkeypatch.setattr(log, "release_lease", unanswered)
    recorder = Recorder("stopping-test")
    relay = Relay(log, recorder)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    for _ in range(400):
        if recorder.seen:  # holds the lease and handed the change on
            break
        await asyncio.sleep(0.025)
    stop.set()
    await asyncio.wait_for(running, timeout=60)  # a hang guard, far above the 0.05 s
    assert recorder.seen and releases == ["stopping-test"]
