"""Idempotency-Key on replies, notes and macros: a request sent again after a timeout or
a 5xx records nothing new and answers what the first one did."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from rq import Queue
from rq.serializers import JSONSerializer

from bridge.jobs import QUEUE_OUTBOUND
from bridge.store import keys
from config.settings import Secret, Settings
from tests.conftest import AGENT_TOKEN, make_settings
from tests.test_api import AGENT, inbound

Client = TestClient[Any, Any]
BOB_TOKEN = "bob-token-for-tests"


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Two agents (the shared `client` fixture serves the app built on these settings)."""
    return make_settings(redis_url, agent_tokens={
        "alice": Secret(AGENT_TOKEN), "bob": Secret(BOB_TOKEN)})


def keyed(key: str, token: str = AGENT_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


async def thread(client: Client, ticket_id: str) -> list[dict[str, Any]]:
    page = await (await client.get(f"/api/v1/tickets/{ticket_id}/events?limit=100",
                                   headers=AGENT)).json()
    return list(page["events"])


def send_jobs(sync_redis: redis.Redis) -> list[str]:
    return list(Queue(QUEUE_OUTBOUND, connection=sync_redis,
                      serializer=JSONSerializer).job_ids)


async def test_a_reply_sent_again_with_its_key_is_recorded_and_sent_once(
        client: Client, sync_redis: redis.Redis) -> None:
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/replies"
    first = await client.post(url, json={"body": "On regarde"}, headers=keyed("k-1"))
    again = await client.post(url, json={"body": "On regarde"}, headers=keyed("k-1"))
    assert (first.status, again.status) == (202, 202)
    assert (await first.json()) == (await again.json())
    replies = [e for e in await thread(client, tid) if e["type"] == "agent_reply"]
    assert [e["id"] for e in replies] == [(await first.json())["id"]]
    assert len(send_jobs(sync_redis)) == 1
    # Without a key (or with another one) it is a new reply, as before.
    other = await client.post(url, json={"body": "On regarde"}, headers=keyed("k-2"))
    plain = await client.post(url, json={"body": "On regarde"}, headers=AGENT)
    assert (other.status, plain.status) == (202, 202)
    assert len([e for e in await thread(client, tid) if e["type"] == "agent_reply"]) == 3


async def test_the_same_key_with_another_request_is_refused_and_writes_nothing(
        client: Client, sync_redis: redis.Redis) -> None:
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/replies"
    assert (await client.post(url, json={"body": "A"}, headers=keyed("k"))).status == 202
    before = await thread(client, tid)
    for path, body in ((url, {"body": "B"}), (f"/api/v1/tickets/{tid}/notes", {"body": "A"})):
        refused = await client.post(path, json=body, headers=keyed("k"))
        assert refused.status == 422
        assert (await refused.json())["error"]["code"] == "idempotency_key_reused"
    assert await thread(client, tid) == before
    assert len(send_jobs(sync_redis)) == 1


async def test_keys_belong_to_their_agent(client: Client) -> None:
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/notes"
    alice = await client.post(url, json={"body": "vu"}, headers=keyed("same"))
    bob = await client.post(url, json={"body": "vu"}, headers=keyed("same", BOB_TOKEN))
    assert (alice.status, bob.status) == (201, 201)
    assert (await alice.json())["id"] != (await bob.json())["id"]
    assert (await bob.json())["author"] == "bob"


async def test_a_note_sent_again_is_recorded_once(client: Client) -> None:
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/notes"
    answers = [await client.post(url, json={"body": "à rappeler"}, headers=keyed("n"))
               for _ in range(3)]
    assert [a.status for a in answers] == [201, 201, 201]
    assert len({(await a.json())["id"] for a in answers}) == 1
    assert len([e for e in await thread(client, tid) if e["type"] == "note"]) == 1


async def test_a_macro_that_ended_the_session_replays_instead_of_refusing(
        client: Client, sync_redis: redis.Redis) -> None:
    """The replay answers before the checks that the first request changed the answer to:
    session_closing ended the session, so a second application would be a 409."""
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/macros/session_closing"
    first = await client.post(url, headers=keyed("m"))
    assert first.status == 202
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert ticket["session"]["state"] == "ended"
    again = await client.post(url, headers=keyed("m"))
    assert again.status == 202 and (await again.json()) == (await first.json())
    plain = await client.post(url, headers=AGENT)
    assert plain.status == 409 and (await plain.json())["error"]["code"] == "session_ended"
    # The same key through /replies {"macro": ...} is another request.
    via_reply = await client.post(f"/api/v1/tickets/{tid}/replies",
                                  json={"macro": "session_closing"}, headers=keyed("m"))
    assert via_reply.status == 422
    assert len(send_jobs(sync_redis)) == 1


async def test_concurrent_requests_with_one_key_record_one_reply(
        client: Client, sync_redis: redis.Redis) -> None:
    tid = (await inbound(client))["id"]
    url = f"/api/v1/tickets/{tid}/replies"
    answers = await asyncio.gather(*(
        client.post(url, json={"body": "Bonjour !"}, headers=keyed("burst"))
        for _ in range(10)))
    statuses = sorted(a.status for a in answers)
    ids = {(await a.json())["id"] for a in answers if a.status == 202}
    assert set(statuses) <= {202, 409}  # 409: asked while the first was still running
    assert len(ids) == 1
    assert len([e for e in await thread(client, tid) if e["type"] == "agent_reply"]) == 1
    assert len(send_jobs(sync_redis)) == 1


async def test_a_key_whose_first_request_is_still_running_is_409(
        client: Client, sync_redis: redis.Redis) -> None:
    ticket = await inbound(client)
    tid, cid = ticket["id"], ticket["contact"]["id"]
    url = f"/api/v1/tickets/{tid}/notes"
    first = await client.post(url, json={"body": "x"}, headers=keyed("p"))
    assert first.status == 201
    # As if the first request were between its EXEC and its "done" record, with no event.
    [ikey] = [k for k in sync_redis.scan_iter(match=keys.idempotency(cid, tid, "*"))]
    _, _, fingerprint = sync_redis.get(ikey).decode().split(" ", 2)
    sync_redis.set(ikey, f"pending someop {fingerprint}")
    pending = await client.post(url, json={"body": "x"}, headers=keyed("p"))
    assert pending.status == 409
    assert (await pending.json())["error"]["code"] == "idempotency_key_in_progress"


@pytest.mark.parametrize("key", ["", "a" * 256, "clé", "two words", "tab\tkey"])
async def test_a_malformed_key_is_400_and_writes_nothing(
        client: Client, sync_redis: redis.Redis, key: str) -> None:
    tid = (await inbound(client))["id"]
    before = await thread(client, tid)
    for path, body in ((f"/api/v1/tickets/{tid}/replies", {"body": "x"}),
                       (f"/api/v1/tickets/{tid}/notes", {"body": "x"})):
        answer = await client.post(path, json=body, headers=keyed(key))
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "invalid_idempotency_key"
    assert await thread(client, tid) == before
    assert send_jobs(sync_redis) == []
