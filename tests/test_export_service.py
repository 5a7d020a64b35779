"""The export process's endpoint tasks: a stuck endpoint never delays another, and the
senders follow the endpoint list (disabled: stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from aiohttp import web

from bridge.store.export_endpoints import Endpoint, EndpointStore
from bridge.store.export_outbox import NewDelivery, append
from config.settings import Settings, SettingsError
from tests.export_support import Receiver, receiving
from workers.export import ExportService
from workers.export_http import export_client


async def test_a_stuck_endpoint_does_not_delay_another(aredis: redis.asyncio.Redis) -> None:
    unblock = asyncio.Event()

    class Stuck(Receiver):
        async def handle(self, request: web.Request) -> web.Response:
            await unblock.wait()
            return await super().handle(request)

    store = EndpointStore(aredis)
    async with receiving(Stuck()) as stuck, receiving(Receiver()) as fine:
        stuck_ep, stuck_secret = await store.create(url=stuck.url, events=("*",),
                                                    now_ms=int(time.time() * 1000))
        fine_ep, fine_secret = await store.create(url=fine.url, events=("*",),
                                                  now_ms=int(time.time() * 1000))
        stuck.secrets, fine.secrets = [stuck_secret], [fine_secret]
        await append(aredis, [NewDelivery(ep.id, f"evt_{n}", str(n), "note.added", "{}", 1)
                              for n in range(20) for ep in (stuck_ep, fine_ep)])
        client = export_client(allow_http=True, allow_private=True, timeout_s=15)
        service = ExportService(store, client, max_block_ms=50)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        try:
            for _ in range(400):
                if len(fine.received) == 20:
                    break
                await asyncio.sleep(0.025)
            assert len(fine.received) == 20
            assert stuck.received == []  # still waiting for its first answer
            assert set(service.senders) == {stuck_ep.id, fine_ep.id}
            await store.update(stuck_ep.id, enabled=False)
            for _ in range(200):
                if set(service.senders) == {fine_ep.id}:
                    break
                await asyncio.sleep(0.025)
            assert set(service.senders) == {fine_ep.id}
        finally:
            unblock.set()
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await client.aclose()


def test_export_settings() -> None:
    base = {"BRIDGE_ENV": "development"}
    settings = Settings.from_env({**base, "BRIDGE_EXPORT_ALLOW_PRIVATE": "1",
                                  "BRIDGE_EXPORT_TIMEOUT_S": "15"})
    assert settings.export_allow_private and settings.export_timeout_s == 15
    default = Settings.from_env(base)
    assert not default.export_allow_private and default.export_timeout_s == 10
    for bad in ({"BRIDGE_EXPORT_ALLOW_PRIVATE": "yes"}, {"BRIDGE_EXPORT_TIMEOUT_S": "30"},
                {"BRIDGE_EXPORT_TIMEOUT_S": "0"}):
        try:
            Settings.from_env({**base, **bad})
        except SettingsError as exc:
            assert next(iter(bad)) in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


async def test_a_stop_does_not_wait_on_a_lease_release_redis_cannot_answer(
        aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Redis gone at exit, the ride-out retries would hold the release ~25 s: the
    process gives it LEASE_RELEASE_AT_EXIT_S and leaves the lease to its TTL."""
    import workers.export
    monkeypatch.setattr(workers.export, "LEASE_RELEASE_AT_EXIT_S", 0.05)
    store = EndpointStore(aredis)
    releases: list[str] = []

    async def unanswered(token: str) -> None:
        releases.append(token)
        await asyncio.sleep(3600)

    monkeypatch.setattr(store, "release_lease", unanswered)
    client = export_client(allow_http=True, allow_private=True, timeout_s=15)
    service = ExportService(store, client, max_block_ms=50)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    for _ in range(400):
        if service._version != -1:  # took the lease and synced
            break
        await asyncio.sleep(0.025)
    stop.set()
    await asyncio.wait_for(running, timeout=60)  # a hang guard, far above the 0.05 s
    assert releases == [service.token]
    await client.aclose()


async def test_a_replay_does_not_copy_an_earlier_replays_copies(
        aredis: redis.asyncio.Redis) -> None:
    """The same period replayed three times sends its events three times, not 1 + 2 + 4."""
    from bridge.store.export_outbox import Outbox
    await append(aredis, [NewDelivery("ep1", f"msg_{n}", "7", "message.received", "{}", n)
                          for n in range(2)])
    outbox = Outbox(aredis, "ep1")
    assert [await outbox.replay_since(0) for _ in range(3)] == [2, 2, 2]
    entries = await aredis.xrange(outbox.out)
    assert [e[1][b"id"] for e in entries] == [b"msg_0", b"msg_1"] * 4


async def test_a_create_that_raced_past_the_limit_takes_its_endpoint_back(
        aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count is checked before the write, so creates at the same moment could all
    pass it (the keys live in different Redis Cluster slots: no transaction holds both).
    Here the check reads the count as another create saw it, before the last write."""
    from bridge.store.export_endpoints import MAX_ENDPOINTS, TooManyEndpoints
    store = EndpointStore(aredis)
    for n in range(MAX_ENDPOINTS):
        await store.create(url=f"https://hooks.example.com/{n}", events=("*",), now_ms=n)

    async def stale_count(key: str) -> int:
        return MAX_ENDPOINTS - 1

    monkeypatch.setattr(aredis, "zcard", stale_count)
    with pytest.raises(TooManyEndpoints):
        await store.create(url="https://late.example.com/", events=("*",), now_ms=99)
    kept = await store.all()
    assert len(kept) == MAX_ENDPOINTS
    assert "https://late.example.com/" not in [e.url for e in kept]
    # No trace of it: as many endpoint records as listed endpoints.
    assert len([k for k in await aredis.keys("*:ep") if b"{wh:" in k]) == MAX_ENDPOINTS


async def test_a_changed_endpoint_whose_sender_lost_its_cancel_is_replaced(
        aredis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change cancels the endpoint's sender while it waits in its outbox read. On Python
    3.11, asyncio.wait_for (redis-py writes each command under it) returns instead of
    raising when a cancel arrives as the inner call finishes (CPython gh-86296): the sender
    went on reading, and sync() waited for it forever, holding the whole lease loop (the
    lease expired, other senders delivered without it, stop requests were ignored). Here
    the read swallows the first cancel the same way."""
    from bridge.store.export_outbox import Outbox
    real_read = Outbox.read
    reading = asyncio.Event()
    swallowed: list[str] = []

    async def read_losing_a_cancel(self: Outbox, after: str, *, count: int,
                                   block_ms: int | None) -> list:  # type: ignore[type-arg]
        reading.set()
        try:
            return await real_read(self, after, count=count, block_ms=block_ms)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(self.endpoint_id)
            return []  # as wait_for does: the result, not the CancelledError

    monkeypatch.setattr(Outbox, "read", read_losing_a_cancel)
    store = EndpointStore(aredis)
    async with receiving(Receiver()) as receiver:
        # Reads block 30 s: the old sender does not come back out of its read by itself.
        async with serving(store, receiver, url=receiver.url + "?old", max_block_ms=30_000,
                           lease_ttl_ms=2000) as (endpoint, service):
            await asyncio.wait_for(reading.wait(), timeout=30)
            _, old_task = service.senders[endpoint.id]
            await store.update(endpoint.id, url=receiver.url)
            for _ in range(1200):
                current = service.senders.get(endpoint.id)
                if current and current[0].url == receiver.url and old_task.done():
                    break
                await asyncio.sleep(0.025)
            assert swallowed == [endpoint.id]
            assert old_task.done()
            current = service.senders.get(endpoint.id)
            assert current is not None and current[0].url == receiver.url
            assert not current[1].done()
            # The lease loop went on: the lease is renewed (its TTL is 2 s).
            assert await aredis.get("bridge:wh:sender:lease") == service.token.encode()
            assert await aredis.pttl("bridge:wh:sender:lease") > 0
            # The new sender delivers with the new URL.
            await deliver_one(aredis, receiver, endpoint.id)
        assert service.senders == {} and service.stopping == {}


async def test_senders_start_again_after_a_renewal_slower_than_the_lease(
        aredis: redis.asyncio.Redis) -> None:
    """A renewal that takes longer than the lease (a Redis restart ridden out) lets every
    sender's lease run out, and they end; once the renewal succeeds they must start again,
    though the endpoint list did not change."""
    store = EndpointStore(aredis)
    real_acquire = store.acquire_lease
    renewals = 0
    renewing_slowly = asyncio.Event()

    async def acquire(token: str, *, ttl_ms: int) -> bool:
        nonlocal renewals
        renewals += 1
        if renewals == 3:
            renewing_slowly.set()
            await asyncio.sleep(ttl_ms / 1000 * 1.5)
        return await real_acquire(token, ttl_ms=ttl_ms)

    store.acquire_lease = acquire  # type: ignore[method-assign]
    receiver = Receiver()
    async with receiving(receiver), serving(store, receiver, url=receiver.url,
                                            max_block_ms=50, lease_ttl_ms=1000
                                            ) as (endpoint, service):
        await asyncio.wait_for(renewing_slowly.wait(), timeout=30)
        _, first = service.senders[endpoint.id]
        await asyncio.wait_for(asyncio.shield(first), timeout=30)  # its lease ran out
        await deliver_one(aredis, receiver, endpoint.id)
        _, current = service.senders[endpoint.id]
        assert current is not first and not current.done()


@contextlib.asynccontextmanager
async def serving(store: EndpointStore, receiver: Receiver, *, url: str, **service_kw: Any
                  ) -> AsyncIterator[tuple[Endpoint, ExportService]]:
    """An endpoint at `url` for `receiver`, and an export service running until the block
    ends (then stopped, with a hang guard: it must stop on request)."""
    endpoint, secret = await store.create(url=url, events=("*",),
                                          now_ms=int(time.time() * 1000))
    receiver.secrets = [secret]
    client = export_client(allow_http=True, allow_private=True, timeout_s=15)
    service = ExportService(store, client, **service_kw)
    stop = asyncio.Event()
    running = asyncio.create_task(service.run(stop))
    try:
        yield endpoint, service
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=60)
        await client.aclose()


async def deliver_one(aredis: redis.asyncio.Redis, receiver: Receiver, endpoint_id: str
                      ) -> None:
    await append(aredis, [NewDelivery(endpoint_id, "evt_1_1_0", "1", "note.added", "{}", 1)])
    for _ in range(1200):
        if receiver.ids():
            break
        await asyncio.sleep(0.025)
    assert receiver.ids() == ["evt_1_1_0"]
