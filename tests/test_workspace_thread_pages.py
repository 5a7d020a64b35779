"""The ticket page's thread pages: `before` is checked as the API's cursor, an older page
stays older when the live refresh re-reads it, and it links back to newer messages."""

from __future__ import annotations

import re

import pytest

from bridge.store.tickets import TicketStore
from tests.conftest import AGENT_TOKEN, Client
from tests.factories import ids, inbound
from tests.workspace_support import sign_in


@pytest.mark.parametrize("before", ["0-0", "18446744073709551616",
                                    "99999999999999999999999-0", "1-x"])
async def test_a_cursor_redis_refuses_is_a_422_page(client: Client, store: TicketStore,
                                                   before: str) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await sign_in(client, AGENT_TOKEN)
    for path in (f"/app/tickets/{tid}", f"/app/tickets/{tid}/thread"):
        answer = await client.get(path, params={"before": before})
        assert answer.status == 422, (path, before)
        assert answer.content_type == "text/html"
        assert "cursor must be the next_cursor of a previous page" in await answer.text()


async def test_an_older_page_stays_older_and_links_back_to_newer(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "m00"))
    for n in range(1, 65):  # 65 messages: the newest page, an older one and the oldest
        await inbound(store, f"m{n:02d}")
    await sign_in(client, AGENT_TOKEN)
    newest = await (await client.get(f"/app/tickets/{tid}")).text()
    assert f'data-fragment="/app/tickets/{tid}/thread"' in newest
    assert "Newer messages" not in newest
    older = re.search(r'href="/app/tickets/\d+\?before=([^"]+)" class="older"', newest)
    assert older, newest
    middle = await (await client.get(f"/app/tickets/{tid}?before={older[1]}")).text()
    # The live refresh re-reads the same older page, not the newest one.
    assert f'data-fragment="/app/tickets/{tid}/thread?before={older[1]}"' in middle
    fragment = await (await client.get(f"/app/tickets/{tid}/thread?before={older[1]}")).text()
    assert "m34" in fragment and "m05" in fragment and "m35" not in fragment
    assert f'href="/app/tickets/{tid}" class="newer"' in fragment  # back to the newest
    oldest = re.search(r'href="/app/tickets/\d+\?before=([^"]+)" class="older"', middle)
    assert oldest
    first = await (await client.get(f"/app/tickets/{tid}/thread?before={oldest[1]}")).text()
    assert "m00" in first and "m05" not in first
    newer = re.search(r'href="/app/tickets/\d+\?before=([^"]+)" class="newer"', first)
    assert newer  # to the middle page: the 30 messages after the oldest page's
    again = await (await client.get(f"/app/tickets/{tid}/thread?before={newer[1]}")).text()
    assert re.findall(r"m\d\d", again) == re.findall(r"m\d\d", fragment)
