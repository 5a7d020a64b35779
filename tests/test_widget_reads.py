"""The widget's read side through the real app: the read position, and readers (polls,
the read position) getting past a burst of events longer than a page; a survey button
that answers no survey."""

from __future__ import annotations

import json
import time

import pytest
import redis

from config.settings import Settings
from tests.conftest import Client, make_settings
from tests.test_widget_api import AGENT, ORIGIN, call, new_visitor, send, tickets


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, widget_origins=(ORIGIN,))


async def test_the_visitor_read_position_marks_agent_replies_read(client: Client) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    reply = await (await client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                                     json={"body": "Hello"}, headers=AGENT)).json()
    history = await (await call(client, "history", {}, token=token)).json()
    newest = history["events"][0]["key"]
    assert (await call(client, "read", {"key": newest}, token=token)).status == 200
    event = await (await client.get(f"/api/v1/tickets/{ticket['id']}/events",
                                    headers=AGENT)).json()
    (agent,) = [e for e in event["events"] if e["id"] == reply["id"]]
    assert agent["delivery"] == "read"
    session = await (await call(client, "session", token=token)).json()
    assert session["read_up_to"] == newest
    # A position past the newest event stops there, and the answer says where.
    ahead = await (await call(client, "read", {"key": "9999999999999-0_" + ticket["id"]},
                              token=token)).json()
    assert ahead["read_up_to"] == newest


def burst_of_replies(sync_redis: redis.Redis, ticket_id: str, count: int) -> list[str]:
    """`count` agent replies in one millisecond, as a burst of macro or API replies can be
    (written with explicit stream ids, so that they fall within LOOK_BACK_MS for sure),
    each with a delivery `sent`. Returns their event keys, oldest first."""
    (events_key,) = sync_redis.keys(f"*:t:{ticket_id}:events")
    deliveries_key = events_key.decode().removesuffix(":events") + ":delivery"
    ms = int(time.time() * 1000) + 10_000
    out = []
    for seq in range(count):
        eid = f"{ms}-{seq}"
        sync_redis.xadd(events_key, {"type": "agent_reply", "at_ms": ms, "author": "alice",
                                     "body": f"r{seq}", "data": "{}"}, id=eid)
        sync_redis.hset(deliveries_key, eid, json.dumps({"state": "sent"}))
        out.append(f"{eid}_{ticket_id}")
    return out


async def test_a_poll_gets_past_a_burst_longer_than_a_page(client: Client,
                                                           sync_redis: redis.Redis) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    keys = burst_of_replies(sync_redis, ticket["id"], 450)
    cursor, bodies = keys[0], []
    for _ in range(10):  # 200 events a page: three pages at most
        answer = await (await call(client, "poll", {"after": cursor, "wait_s": 0},
                                   token=token)).json()
        bodies += [e["body"] for e in answer["events"]]
        cursor = answer["cursor"]
        if cursor == keys[-1]:
            break
    assert cursor == keys[-1]
    assert bodies == [f"r{i}" for i in range(1, 450)]


async def test_the_read_position_gets_past_a_burst_longer_than_a_page(
        client: Client, sync_redis: redis.Redis) -> None:
    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    keys = burst_of_replies(sync_redis, ticket["id"], 450)
    middle = await (await call(client, "read", {"key": keys[210]}, token=token)).json()
    assert middle["read_up_to"] == keys[210]
    newest = await (await call(client, "read", {"key": keys[-1]}, token=token)).json()
    assert newest["read_up_to"] == keys[-1]
    (deliveries_key,) = sync_redis.keys(f"*:t:{ticket['id']}:delivery")
    states = [json.loads(v)["state"] for v in sync_redis.hvals(deliveries_key)]
    assert len(states) == 450 and set(states) == {"read"}


async def test_a_survey_button_that_answers_no_survey_arrives_as_its_score(
        client: Client) -> None:
    # No survey is open for this visitor: the tap is a message, never an empty one.
    token = await new_visitor(client)
    response = await call(client, "messages", {"client_id": "btnonly0001",
                                               "button": "csat:12345:4"}, token=token)
    assert response.status == 201
    (ticket,) = await tickets(client)
    thread = await (await client.get(f"/api/v1/tickets/{ticket['id']}/events",
                                     headers=AGENT)).json()
    (message,) = [e for e in thread["events"] if e["type"] == "customer_message"]
    assert message["body"] == "4/5"


async def test_the_look_back_keeps_the_events_nearest_the_cursor(
        client: Client, sync_redis: redis.Redis) -> None:
    """Past a page, the look-back behind a cursor keeps the events just below it (where a
    late event lands), not the oldest of its window."""
    from bridge.core.visitor_thread import EventKey
    from bridge.web.widget import widget_store_key
    token = await new_visitor(client)
    await send(client, token, "hi")
    (ticket,) = await tickets(client)
    keys = burst_of_replies(sync_redis, ticket["id"], 20)
    page = await client.app[widget_store_key].events_after(
        ticket["contact"]["id"], EventKey.parse(keys[-1]), limit=5)
    assert [e.body for e in page.events] == [f"r{i}" for i in range(15, 20)]
