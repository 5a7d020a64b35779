"""A web process that dies between the routing script and the index update leaves the new
ticket out of the ticket lists and unknown by id; the customer's next messages (plain
appends) do not index it. The sweep lists it (workers.sweeper.list_unlisted)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.tickets import Status
from bridge.store import keys
from bridge.store.changelog import REPAIR_CONSUMER, ChangeLog
from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from tests.conftest import AGENT_TOKEN, make_settings
from tests.factories import inbound_form, inbound_message, post_signed
from workers.sweeper import SWEEP_GRACE_S, list_unlisted

AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}
CUSTOMER = "whatsapp:+33612345678"
Client = TestClient[Any, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


async def _listed_ids(client: Client) -> list[str]:
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    return [t["id"] for t in listing["tickets"]]


async def _open_with_interrupted_indexing(client: Client, monkeypatch: pytest.MonkeyPatch,
                                          sender: str = CUSTOMER) -> str:
    """The first message opens a ticket; the process 'dies' before the index update."""
    store = client.app[store_key]

    async def dies(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_reindex", dies)
        answer = await post_signed(client, "/webhooks/twilio",
                                   inbound_form("Bonjour", sender=sender))
        assert answer.status == 503  # unanswered, as far as Twilio can tell
    [opened] = [c for c in await ChangeLog(store.redis).all_entries()
                if c.action in ("new_ticket", "follow_up") and c.contact_id == store.contact_id(
                    inbound_message(address=sender))][-1:]
    return opened.ticket_id


async def test_an_interrupted_opening_is_listed_by_the_sweep(
    client: Client, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket_id = await _open_with_interrupted_indexing(client, monkeypatch)
    # Stored, but nobody can see it: not listed, not found by id...
    assert await _listed_ids(client) == []
    assert (await client.get(f"/api/v1/tickets/{ticket_id}", headers=AGENT)).status == 404
    # ...and the customer's next message (a plain append) does not change that.
    nxt = await post_signed(client, "/webhooks/twilio", inbound_form("Allô ?", sender=CUSTOMER))
    assert nxt.status == 200
    assert await _listed_ids(client) == []

    store: TicketStore = client.app[store_key]
    # Within the grace period the sweep leaves it (the request may still be under way).
    assert await list_unlisted(store, now_ms=now_ms()) == []

    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    assert await list_unlisted(store, now_ms=later) == [ticket_id]
    assert await _listed_ids(client) == [ticket_id]
    ticket = await (await client.get(f"/api/v1/tickets/{ticket_id}", headers=AGENT)).json()
    assert ticket["message_count"] == 2
    assert ticket["status"] == "new"
    assert await list_unlisted(store, now_ms=later) == []  # read once: not again


async def test_openings_that_were_indexed_are_only_read(
    client: Client, sync_redis: redis.Redis
) -> None:
    for n in range(3):
        form = inbound_form(f"hello {n}", sender=f"whatsapp:+3361234560{n}")
        assert (await post_signed(client, "/webhooks/twilio", form)).status == 200
    before = sync_redis.dump(keys.index("all"))
    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    assert await list_unlisted(client.app[store_key], now_ms=later) == []
    assert sync_redis.dump(keys.index("all")) == before
    # The repair's position moved past them: the change log keeps them for other
    # consumers only.
    lag = await ChangeLog(client.app[store_key].redis).lag(REPAIR_CONSUMER)
    assert lag.events == 0


async def test_an_opening_within_the_grace_period_waits_for_the_next_sweep(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: TicketStore = client.app[store_key]
    early = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    first = await _open_with_interrupted_indexing(client, monkeypatch)
    assert await list_unlisted(store, now_ms=early) == [first]
    second = await _open_with_interrupted_indexing(
        client, monkeypatch, sender="whatsapp:+33612345699")
    # The sweep that ran before the second opening's grace ended leaves it...
    assert await list_unlisted(store, now_ms=now_ms()) == []
    # ...and the next one, later, lists it.
    assert await list_unlisted(store, now_ms=now_ms() + (SWEEP_GRACE_S + 1) * 1000) == [second]


async def test_every_opening_is_looked_at_however_many(
    client: Client, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        form = inbound_form(f"hello {n}", sender=f"whatsapp:+3361234560{n}")
        assert (await post_signed(client, "/webhooks/twilio", form)).status == 200
    ticket_id = await _open_with_interrupted_indexing(client, monkeypatch)  # the newest
    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    assert await list_unlisted(client.app[store_key], now_ms=later, batch=2) == [ticket_id]


async def test_a_thread_limit_opening_interrupted_lists_both_tickets_correctly(
    aiohttp_client: Any, redis_url: str, sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message over the thread limit closes the ticket and opens its follow-up in one
    script; the index update for both never runs. The sweep lists the new ticket and files
    the closed one under `closed` (it was listed, under its old status)."""
    settings = make_settings(redis_url, policies={
        Channel.WHATSAPP: ChannelPolicy(max_thread_messages=2)})
    client = await aiohttp_client(create_app(settings))
    store: TicketStore = client.app[store_key]
    for text in ("one", "two"):
        form = inbound_form(text, sender=CUSTOMER)
        assert (await post_signed(client, "/webhooks/twilio", form)).status == 200
    [first] = await _listed_ids(client)

    follow_up = await _open_with_interrupted_indexing(client, monkeypatch)
    assert follow_up != first
    assert (await store.get_ticket(first)).status is Status.CLOSED
    # Stale: the closed ticket is still listed as new, the follow-up not at all.
    assert await _listed_ids(client) == [first]
    assert sync_redis.zscore(keys.index("status", "new"), first) is not None

    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    assert sorted(await list_unlisted(store, now_ms=later)) == sorted([follow_up, first])

    assert await _listed_ids(client) == [follow_up, first]
    closed, _ = await store.list_tickets(status=Status.CLOSED)
    new, _ = await store.list_tickets(status=Status.NEW)
    assert ([t.id for t in closed], [t.id for t in new]) == ([first], [follow_up])
    assert (await store.get_ticket(follow_up)).follow_up_of == first


async def test_the_sweep_reads_the_log_in_small_round_trips_and_still_finds_every_opening(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pipeline over every partition, 1000 entries each, stalled Redis for every other
    client while it built the reply (44 ms with 50,000 openings waiting): the sweep reads
    a few partitions and entries a round trip, and goes on until each partition is read."""
    store: TicketStore = client.app[store_key]
    # Many entries in the unlisted contact's partition: appends after its opening.
    unlisted = await _open_with_interrupted_indexing(client, monkeypatch)
    for n in range(7):
        answer = await post_signed(client, "/webhooks/twilio",
                                   inbound_form(f"encore {n}", sender=CUSTOMER))
        assert answer.status == 200
    second = await _open_with_interrupted_indexing(
        client, monkeypatch, sender="whatsapp:+33612345699")
    reads: list[tuple[int, int]] = []
    read_until = ChangeLog.read_until

    async def counted(self: ChangeLog, positions: dict[int, str], **kw: Any) -> Any:
        reads.append((len(positions), kw["count"]))
        return await read_until(self, positions, **kw)

    monkeypatch.setattr(ChangeLog, "read_until", counted)
    later = now_ms() + (SWEEP_GRACE_S + 1) * 1000
    found = await list_unlisted(store, now_ms=later, batch=2, partitions_per_read=4,
                                pause_s=0)
    assert sorted(found) == sorted([unlisted, second])
    assert reads and max(n for n, _ in reads) <= 4 and {c for _, c in reads} == {2}
    # The unlisted contact's partition took several reads of 2 (9 entries in it at least).
    assert len(reads) >= keys.PARTITIONS // 4 + 4
    assert await list_unlisted(store, now_ms=later) == []
