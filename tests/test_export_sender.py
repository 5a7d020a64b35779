"""The export sender against respx: signatures, retries with the same webhook-id, order per
ticket, 410/429, redirects and the SSRF guard."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio
import respx
from standardwebhooks.webhooks import Webhook

from bridge.core.export_policy import MAX_ATTEMPTS, Endpoint
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import NewDelivery, Outbox, append
from workers.export_http import export_client
from workers.export_sender import MAX_IN_FLIGHT, EndpointSender

URL = "https://93.184.216.34/hook"
NOW_S = 1_800_000_000.0


class Clock:
    """The sender's clock, moved by the tests (it starts now: deliveries are queued on
    Redis's clock, and one that waited longer than the schedule is given up)."""

    def __init__(self) -> None:
        self.now_s = time.time()

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def endpoint(aredis: redis.asyncio.Redis) -> tuple[Endpoint, str]:
    return await EndpointStore(aredis).create(url=URL, events=("*",), now_ms=int(NOW_S * 1000))


async def fake_resolve(host: str, port: int) -> list[str]:
    return {"hooks.example.com": ["93.184.216.34"], "evil.example.com": ["10.0.0.7"],
            "rebind.example.com": ["93.184.216.34", "127.0.0.1"]}[host]


@pytest.fixture
async def sender(aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str]
                 ) -> AsyncIterator[EndpointSender]:
    # httpx's own transport under the guard: respx intercepts it.
    client = export_client(allow_http=False, allow_private=False, timeout_s=5,
                           resolve=fake_resolve, inner=httpx.AsyncHTTPTransport())
    made = EndpointSender(endpoint[0], Outbox(aredis, endpoint[0].id), EndpointStore(aredis),
                          client, jitter=lambda: 0.5, clock=Clock())
    yield made
    await client.aclose()


async def queue(aredis: redis.asyncio.Redis, endpoint_id: str,
                *tickets_and_ids: tuple[str, str]) -> None:
    await append(aredis, [NewDelivery(endpoint_id, wid, tid, "note.added",
                                      json.dumps({"type": "note.added", "n": wid}), 1)
                          for tid, wid in tickets_and_ids])


def ids_of(route: respx.Route) -> list[str]:
    return [call.request.headers["webhook-id"] for call in route.calls]


@respx.mock
async def test_deliveries_are_signed_for_standardwebhooks(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    route = respx.post(URL).respond(204)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    request = route.calls.last.request
    assert Webhook(endpoint[1]).verify(request.content, dict(request.headers)) == {
        "type": "note.added", "n": "evt_a"}
    assert request.headers["webhook-signature"].startswith("v1,")


@respx.mock
async def test_a_secret_rotated_while_the_sender_waits_signs_what_comes_next(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    route = respx.post(URL).respond(204)
    waiting = asyncio.ensure_future(sender.step(max_block_ms=2000))
    await asyncio.sleep(0.2)  # the sender is waiting on the outbox by now
    new_secret = await EndpointStore(aredis).rotate_secret(endpoint[0].id,
                                                           now_ms=int(time.time() * 1000))
    await queue(aredis, endpoint[0].id, ("1", "evt_after"))
    assert await waiting == 1
    request = route.calls.last.request
    # The new secret alone verifies it (the old one signs beside it during its grace).
    assert Webhook(new_secret).verify(request.content, dict(request.headers))
    assert len(request.headers["webhook-signature"].split()) == 2


@respx.mock
async def test_a_failed_delivery_is_retried_with_its_id_and_holds_only_its_ticket(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    failing = {"evt_1a"}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.headers["webhook-id"] in failing else 200)

    route = respx.post(URL).mock(side_effect=answer)
    await queue(aredis, endpoint[0].id, ("1", "evt_1a"), ("2", "evt_2a"), ("1", "evt_1b"),
                ("2", "evt_2b"))
    await sender.step(max_block_ms=0)
    # Ticket 2 went on; ticket 1's second delivery waits behind its first.
    assert sorted(ids_of(route)) == ["evt_1a", "evt_2a", "evt_2b"]
    assert await sender.outbox.held_tickets() == {"1"}
    await sender.step(max_block_ms=0)  # not due yet: nothing is sent
    assert len(route.calls) == 3
    assert isinstance(sender.clock, Clock)
    sender.clock.now_s += 10
    await sender.step(max_block_ms=0)  # due, still failing
    sender.clock.now_s += 60
    failing.clear()
    await sender.step(max_block_ms=0)
    ticket_1 = [i for i in ids_of(route) if i.startswith("evt_1")]
    assert ticket_1 == ["evt_1a", "evt_1a", "evt_1a", "evt_1b"]
    assert await sender.outbox.held_tickets() == set()
    health = await sender.outbox.health()
    assert (health.delivered, health.failed_attempts, health.backlog) == (4, 2, 0)


@respx.mock
async def test_gone_disables_the_endpoint(aredis: redis.asyncio.Redis,
                                          endpoint: tuple[Endpoint, str],
                                          sender: EndpointSender) -> None:
    respx.post(URL).respond(410)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"), ("1", "evt_b"))
    await sender.step(max_block_ms=0)
    assert sender.gone
    stored = await EndpointStore(aredis).get(endpoint[0].id)
    assert not stored.enabled and stored.disabled_reason == "gone"
    # Nothing was settled: re-enabled, the endpoint gets both deliveries.
    assert (await sender.outbox.health()).backlog == 2


@respx.mock
async def test_throttling_slows_the_endpoint_and_honours_retry_after(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    respx.post(URL).respond(429, headers={"Retry-After": "600"})
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    assert sender.in_flight == MAX_IN_FLIGHT // 2
    due = await sender.outbox.next_due_ms()
    assert due == sender.now_ms() + 600_000


@respx.mock
async def test_attempts_run_out_into_the_failed_list_and_a_replay_delivers_it(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    route = respx.post(URL).respond(500)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"), ("1", "evt_b"))
    assert isinstance(sender.clock, Clock)
    for _ in range(MAX_ATTEMPTS + 2):
        await sender.step(max_block_ms=0)
        due = await sender.outbox.next_due_ms()
        if due is None:
            break
        sender.clock.now_s = due / 1000
    failed = await sender.outbox.failed()
    assert [f["item"].webhook_id for f in failed] == ["evt_b", "evt_a"]
    # evt_a used its 15 attempts over about three days; evt_b, queued behind it as long,
    # does not start three more days: its first failure falls at the schedule's very end,
    # the next one (5 s later) is past it.
    assert failed[1]["attempts"] == MAX_ATTEMPTS
    assert failed[0]["attempts"] <= 2
    assert ids_of(route).count("evt_a") == MAX_ATTEMPTS
    route.respond(200)
    assert await sender.outbox.replay_failed("evt_a") == 1
    await sender.step(max_block_ms=0)
    assert ids_of(route)[-1] == "evt_a"
    assert [f["item"].webhook_id for f in await sender.outbox.failed()] == ["evt_b"]


@respx.mock
async def test_redirects_are_not_followed(aredis: redis.asyncio.Redis,
                                          endpoint: tuple[Endpoint, str],
                                          sender: EndpointSender) -> None:
    respx.post(URL).respond(307, headers={"Location": "https://93.184.216.35/elsewhere"})
    elsewhere = respx.post("https://93.184.216.35/elsewhere").respond(200)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    assert not elsewhere.called
    assert "redirect" in (await sender.outbox.health()).last_error


@respx.mock
async def test_a_followed_redirect_is_checked_like_the_first_request(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    sender.endpoint = Endpoint(**{**endpoint[0].__dict__, "follow_redirects": True})
    respx.post(URL).respond(307, headers={"Location": "https://169.254.169.254/latest"})
    metadata = respx.post("https://169.254.169.254/latest").respond(200)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    assert not metadata.called
    assert "metadata" in (await sender.outbox.health()).last_error


@pytest.mark.parametrize(("url", "reason"), [
    ("https://evil.example.com/hook", "private"),
    ("https://rebind.example.com/hook", "loopback"),
    ("https://127.0.0.1/hook", "loopback"),
    ("http://hooks.example.com/hook", "https only"),
])
@respx.mock
async def test_private_targets_are_refused_after_resolution(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str], sender: EndpointSender,
        url: str, reason: str) -> None:
    anything = respx.route().respond(200)
    sender.endpoint = Endpoint(**{**endpoint[0].__dict__, "url": url})
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    assert not anything.called
    assert reason in (await sender.outbox.health()).last_error


@respx.mock
async def test_the_request_goes_to_the_checked_address_under_its_name(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    route = respx.post("https://93.184.216.34/hook").respond(200)
    sender.endpoint = Endpoint(**{**endpoint[0].__dict__,
                                  "url": "https://hooks.example.com/hook"})
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    request = route.calls.last.request
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


@respx.mock
async def test_an_endpoint_that_asks_follows_307_with_the_same_signed_body(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    sender.endpoint = Endpoint(**{**endpoint[0].__dict__, "follow_redirects": True})
    respx.post(URL).respond(307, headers={"Location": "https://93.184.216.35/moved"})
    moved = respx.post("https://93.184.216.35/moved").respond(200)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    request = moved.calls.last.request
    assert request.headers["webhook-id"] == "evt_a"
    Webhook(endpoint[1]).verify(request.content, dict(request.headers))
    assert (await sender.outbox.health()).delivered == 1


@respx.mock
async def test_a_302_is_not_followed_even_when_asked(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender) -> None:
    sender.endpoint = Endpoint(**{**endpoint[0].__dict__, "follow_redirects": True})
    respx.post(URL).respond(302, headers={"Location": "https://93.184.216.35/moved"})
    moved = respx.post("https://93.184.216.35/moved").respond(200)
    await queue(aredis, endpoint[0].id, ("1", "evt_a"))
    await sender.step(max_block_ms=0)
    assert not moved.called  # a 302 would turn the POST into a GET
    assert "redirect" in (await sender.outbox.health()).last_error


@respx.mock
async def test_a_lane_that_fails_stops_the_others_before_the_batch_is_read_again(
        aredis: redis.asyncio.Redis, endpoint: tuple[Endpoint, str],
        sender: EndpointSender, monkeypatch: pytest.MonkeyPatch) -> None:
    """When one ticket's lane raises (Redis gone while it parks a failure), the batch is
    read again from the saved position: a lane of another ticket still sending meanwhile
    would send that ticket's events twice at once, out of order."""
    finished: list[str] = []
    started = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        wid = request.headers["webhook-id"]
        if wid == "evt_1":
            await started.wait()
            return httpx.Response(500)
        started.set()
        await asyncio.sleep(0.3)
        finished.append(wid)
        return httpx.Response(200)

    respx.post(URL).mock(side_effect=answer)
    await queue(aredis, endpoint[0].id, ("1", "evt_1"), ("2", "evt_2"))

    async def redis_gone(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(sender.outbox, "park", redis_gone)
    with pytest.raises(redis.ConnectionError):
        await sender.send_new(block_ms=None)
    await asyncio.sleep(0.5)
    assert finished == []  # ticket 2's lane was stopped, not left sending
