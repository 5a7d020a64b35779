"""The tickets page's lists go on past their first page: each list longer than a page
links to the next (its status alone, with the API's cursor and the filters), down to the
oldest ticket, with none twice and none missing, the count kept, and a live refresh that
reads the page shown."""

from __future__ import annotations

import html as html_lib
import re

from bridge.store.tickets import TicketStore
from bridge.web.workspace.tickets import VIEW_LIMIT
from tests.conftest import AGENT_TOKEN, Client
from tests.factories import ids, inbound
from tests.workspace_support import sign_in

_NEXT = re.compile(r'<a href="([^"]+)" rel="next" class="more" data-more="new">')
_FRAGMENT = re.compile(r'data-fragment="([^"]+)"')


def rows(page: str) -> list[str]:
    return re.findall(r'data-ticket="(\d+)"', page)


def count(page: str) -> str:
    found = re.search(r'data-count="new">([^<]*)<', page)
    assert found, "no count for new"
    return found.group(1)


async def walk(client: Client, start: str) -> tuple[list[str], list[str], list[str]]:
    """Every page of the new list from `start`, following its next link: the tickets in
    order, each page's count and each page's live fragment URL."""
    shown: list[str] = []
    counts: list[str] = []
    fragments: list[str] = []
    href: str | None = start
    while href is not None:
        answer = await client.get(href)
        assert answer.status == 200, href
        page = await answer.text()
        shown += rows(page)
        counts.append(count(page))
        fragments.append(html_lib.unescape(_FRAGMENT.findall(page)[-1]))
        link = _NEXT.search(page)
        href = html_lib.unescape(link.group(1)) if link else None
        assert len(counts) < 10, "the pages never end"
    return shown, counts, fragments


async def test_the_next_links_reach_the_oldest_ticket(client: Client,
                                                      store: TicketStore) -> None:
    made = [ids(await inbound(store, address=f"whatsapp:+3360000{n:04d}"))
            for n in range(2 * VIEW_LIMIT + 7)]
    await sign_in(client, AGENT_TOKEN)
    shown, counts, fragments = await walk(client, "/app/")
    assert shown == made[::-1]  # newest first, the oldest last, none twice, none missing
    assert counts == [str(len(made))] * 3
    # The live refresh of a later page reads that page, not the first.
    second = await (await client.get(fragments[1])).text()
    assert rows(second) == made[::-1][VIEW_LIMIT:2 * VIEW_LIMIT]


async def test_filtered_pages_keep_the_filters_and_count_on(client: Client,
                                                           store: TicketStore) -> None:
    made = [ids(await inbound(store, address=f"whatsapp:+3360000{n:04d}"))
            for n in range(VIEW_LIMIT + 10)]
    await sign_in(client, AGENT_TOKEN)
    shown, counts, fragments = await walk(client, "/app/?channel=whatsapp")
    assert shown == made[::-1]
    assert counts == [f"{VIEW_LIMIT}+", str(len(made))]
    assert all("channel=whatsapp" in f for f in fragments)
    # Another channel's filter, kept in the link, finds none of them on any page.
    assert await walk(client, "/app/?channel=widget") == ([], ["0"], ["/app/views?channel=widget"])


async def test_a_name_filter_pages_from_its_last_match(client: Client,
                                                      store: TicketStore) -> None:
    """A name is looked for among batches of tickets: a page filled mid-batch goes on
    after its last row, not after the batch (whose other matches were never shown)."""
    matching = []
    for n in range(VIEW_LIMIT + 20):
        found = ids(await inbound(store, address=f"whatsapp:+3360000{n:04d}",
                                  name="Zoe Match" if n % 2 else "Other Person"))
        if n % 2:
            matching.append(found)
    for n in range(VIEW_LIMIT):  # a second page of names is needed
        matching.append(ids(await inbound(store, address=f"whatsapp:+3361000{n:04d}",
                                          name="Zoe Match")))
    await sign_in(client, AGENT_TOKEN)
    shown, _, _ = await walk(client, "/app/?customer=zoe")
    assert shown == matching[::-1]


async def test_a_cursor_the_api_would_refuse_is_said_in_the_page(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    answer = await client.get("/app/?status=new&cursor=x1&channel=widget")
    assert answer.status == 422
    page = await answer.text()
    assert "cursor must be the next_cursor of a previous page" in page
    assert 'value="widget" selected' in page
