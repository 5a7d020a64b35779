"""Workspace ticket pages: views by status with filters and aging, the ticket page and its
actions (through the same rules as the API)."""

from __future__ import annotations

import re

from bridge.core.tickets import EventType, Status
from bridge.store.tickets import TicketStore
from tests.conftest import AGENT_TOKEN, Client
from tests.factories import ids, inbound, now_ms
from tests.workspace_support import sign_in


async def test_views_group_tickets_by_status_with_counts_and_aging(
        client: Client, store: TicketStore) -> None:
    old = ids(await inbound(store, "Hello", address="whatsapp:+33600000001", name="Old Customer",
                            at_ms=now_ms() - 20 * 3600 * 1000))
    fresh = ids(await inbound(store, "Hi", address="whatsapp:+33600000002", name="Fresh"))
    await store.update_ticket(fresh, author="alice", now_ms=now_ms(), status=Status.PENDING)
    await sign_in(client, AGENT_TOKEN)
    html = await (await client.get("/app/")).text()
    new_view = html[html.index('id="view-new"'):html.index('id="view-open"')]
    pending_view = html[html.index('id="view-pending"'):html.index('id="view-hold"')]
    assert f'data-ticket="{old}"' in new_view and 'class="aging-yellow"' in new_view
    assert f'data-ticket="{fresh}"' in pending_view
    assert 'data-count="new">1<' in html and 'data-count="pending">1<' in html
    assert 'id="view-solved"' not in html
    assert 'id="view-solved"' in await (await client.get("/app/?closed=1")).text()


async def test_views_filter_by_customer_phone_name_and_tag(
        client: Client, store: TicketStore) -> None:
    first = ids(await inbound(store, "a", address="whatsapp:+33600000001", name="Zoé Durand"))
    second = ids(await inbound(store, "b", address="whatsapp:+33600000002", name="Marc"))
    await store.update_ticket(second, author="alice", now_ms=now_ms(), tags=["vip"])
    await sign_in(client, AGENT_TOKEN)

    async def shown(query: str) -> set[str]:
        html = await (await client.get(f"/app/views?{query}")).text()
        return set(re.findall(r'data-ticket="(\d+)"', html))

    assert await shown("customer=%2B33600000001") == {first}
    assert await shown("customer=zo%C3%A9") == {first}
    assert await shown("tag=vip") == {second}
    assert await shown("") == {first, second}


async def test_tag_and_name_filters_find_tickets_older_than_a_page(
        client: Client, store: TicketStore) -> None:
    """Filters that no index answers still search past a view's newest page."""
    old = ids(await inbound(store, "old", address="whatsapp:+33600000100", name="Awa Diop"))
    await store.update_ticket(old, author="alice", now_ms=now_ms(), tags=["late"])
    for n in range(60):  # newer than `old`: more than a page of the "new" view
        await inbound(store, "x", address=f"whatsapp:+336000002{n:02d}", name="Someone")
    await sign_in(client, AGENT_TOKEN)

    async def shown(query: str) -> set[str]:
        html = await (await client.get(f"/app/views?{query}")).text()
        return set(re.findall(r'data-ticket="(\d+)"', html))

    assert await shown("tag=late") == {old}
    assert await shown("customer=awa") == {old}
    assert len(await shown("")) == 50  # one page per view without filters


async def test_the_ticket_page_replies_notes_and_solves(client: Client,
                                                       store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour, ma commande ?"))
    csrf = await sign_in(client, AGENT_TOKEN)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert "Bonjour, ma commande ?" in page and "Window open until" in page
    answer = await client.post(f"/app/tickets/{tid}/reply",
                               data={"csrf_token": csrf, "body": "Elle arrive demain."})
    assert answer.status == 200
    await client.post(f"/app/tickets/{tid}/note", data={"csrf_token": csrf,
                                                        "body": "Checked with logistics"})
    await client.post(f"/app/tickets/{tid}/update", data={
        "csrf_token": csrf, "status": "solved", "assignee": "alice", "tags": "order, late"})
    ticket = await store.get_ticket(tid)
    assert ticket.status is Status.SOLVED and ticket.assignee == "alice"
    assert ticket.tags == ("order", "late")
    events, _ = await store.events(tid)
    types = [e.type.value for e in events]
    assert "agent_reply" in types and "note" in types
    thread = await (await client.get(f"/app/tickets/{tid}/thread")).text()
    assert 'class="event note"' in thread and "Elle arrive demain." in thread


async def test_a_refused_action_comes_back_with_its_reason_and_writes_nothing(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    csrf = await sign_in(client, AGENT_TOKEN)
    await client.post(f"/app/tickets/{tid}/end-session", data={"csrf_token": csrf})
    before, _ = await store.events(tid)
    answer = await client.post(f"/app/tickets/{tid}/reply",
                               data={"csrf_token": csrf, "body": "Too late"})
    assert answer.status == 200 and 'class="flash flash-error"' in await answer.text()
    after, _ = await store.events(tid)
    assert len(after) == len(before)
    bad = await client.post(f"/app/tickets/{tid}/update",
                            data={"csrf_token": csrf, "status": "nonsense"})
    assert "unknown status" in await bad.text()
    assert (await store.get_ticket(tid)).status is Status.NEW


async def test_a_macro_is_previewed_then_applied(client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour", name="Camille"))
    csrf = await sign_in(client, AGENT_TOKEN)
    preview = await (await client.get(
        f"/app/tickets/{tid}/macro-preview?macro=greeting")).text()
    assert "preview-body" in preview
    await client.post(f"/app/tickets/{tid}/macro", data={"csrf_token": csrf,
                                                         "macro": "greeting"})
    events, _ = await store.events(tid)  # newest first: the greeting's open, then its text
    assert [e.type.value for e in events[:2]] == ["status_changed", "macro_applied"]


async def test_an_unknown_ticket_is_a_404(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    assert (await client.get("/app/tickets/999")).status == 404


async def test_the_french_workspace(client: Client, store: TicketStore) -> None:
    await sign_in(client, AGENT_TOKEN)
    html = await (await client.get("/app/", headers={"Accept-Language": "fr-FR,fr"})).text()
    assert '<html lang="fr">' in html and "Filtrer" in html


async def test_the_thread_pages_back_and_shows_failures_with_twilios_reason(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "message 0"))
    for n in range(1, 35):
        await store.add_event(tid, EventType.NOTE, author="alice", body=f"note {n}",
                              now_ms=now_ms())
    _, failed_id = await store.update_ticket(
        tid, author="alice", now_ms=now_ms(),
        event=(EventType.AGENT_REPLY, "Are you there?", {"kind": "reply"}))
    assert failed_id
    await store.set_delivery(tid, failed_id, {
        "state": "failed", "error_code": "63016",
        "error_message": "Failed to send freeform message because you are outside the "
                         "allowed window"})
    await sign_in(client, AGENT_TOKEN)
    newest = await (await client.get(f"/app/tickets/{tid}/thread")).text()
    assert "message 0" not in newest and "Are you there?" in newest
    assert "63016 Failed to send freeform message" in newest and "✗" in newest
    assert newest.index("note 34") < newest.index("Are you there?")  # newest last
    older = re.search(r'\?before=([0-9-]+)"', newest)
    assert older
    page = await (await client.get(f"/app/tickets/{tid}?before={older.group(1)}")).text()
    assert "message 0" in page and "Are you there?" not in page
    bad = await client.get(f"/app/tickets/{tid}?before=nonsense")
    assert bad.status == 422


async def test_follow_ups_link_both_ways_and_list_the_customers_tickets(
        client: Client, store: TicketStore) -> None:
    first = ids(await inbound(store, "Bonjour"))
    await store.update_ticket(first, author="alice", now_ms=now_ms(), status=Status.CLOSED)
    second = ids(await inbound(store, "Re-bonjour"))
    await sign_in(client, AGENT_TOKEN)
    old_page = await (await client.get(f"/app/tickets/{first}")).text()
    new_page = await (await client.get(f"/app/tickets/{second}")).text()
    assert f'Follow-ups: <a href="/app/tickets/{second}">' in old_page
    assert f'Follow-up of <a href="/app/tickets/{first}">' in new_page
    others = new_page[new_page.index('id="others-h"'):]
    assert f'href="/app/tickets/{first}"' in others


async def test_outside_the_window_only_template_macros_are_offered(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour", at_ms=now_ms() - 25 * 3600 * 1000))
    await sign_in(client, AGENT_TOKEN)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert "window-closed" in page and 'id="reply-body"' not in page
    macro_select = page[page.index('id="macro-name"'):page.index("</select>",
                                                                 page.index('id="macro-name"'))]
    assert 'value="greeting"' not in macro_select  # a free-form text: not outside the window


async def test_a_views_count_is_every_ticket_in_it_not_just_the_page(
        client: Client, store: TicketStore) -> None:
    for n in range(53):
        await inbound(store, "Bonjour", address=f"whatsapp:+336000001{n:02d}")
    await sign_in(client, AGENT_TOKEN)
    html = await (await client.get("/app/")).text()
    assert 'data-count="new">53<' in html and html.count("data-ticket=") == 50
    filtered = await (await client.get("/app/?channel=whatsapp")).text()
    assert 'data-count="new">50+<' in filtered


async def test_a_live_refresh_during_a_redirect_leaves_the_pages_message(
        client: Client, store: TicketStore) -> None:
    """The ticket's own change wakes the old page's live region, whose fetch can reach the
    server between the redirect and the page it points to: the fragment must not spend the
    page's one-time message."""
    tid = ids(await inbound(store, "Bonjour"))
    csrf = await sign_in(client, AGENT_TOKEN)
    saved = await client.post(f"/app/tickets/{tid}/update",
                              data={"csrf_token": csrf, "status": "pending"},
                              allow_redirects=False)
    assert saved.status == 303
    for fragment in (f"/app/tickets/{tid}/thread", "/app/views",
                     f"/app/tickets/{tid}/macro-preview?macro=greeting"):
        answer = await client.get(fragment)
        assert answer.status == 200 and "flash" not in await answer.text()
    # A script's fetch answered with an error page (a thread it may no longer read).
    refused = await client.get("/app/tickets/999999/thread", headers={"Sec-Fetch-Mode": "cors"})
    assert refused.status == 404 and "Ticket updated" not in await refused.text()
    page = await (await client.get(saved.headers["Location"])).text()
    assert 'class="flash flash-notice"' in page and "Ticket updated" in page
    again = await (await client.get(saved.headers["Location"])).text()
    assert 'class="flash' not in again  # shown once


async def test_a_closed_ticket_or_ended_session_offers_no_reply_form(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await sign_in(client, AGENT_TOKEN)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert f'action="/app/tickets/{tid}/reply"' in page
    assert f'action="/app/tickets/{tid}/end-session"' in page
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), end_session_reason="agent")
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert f'action="/app/tickets/{tid}/reply"' not in page
    assert "messaging session was ended" in page
    assert f'action="/app/tickets/{tid}/end-session"' not in page
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.SOLVED)
    await store.update_ticket(tid, author="alice", now_ms=now_ms(), status=Status.CLOSED)
    page = await (await client.get(f"/app/tickets/{tid}")).text()
    assert "the ticket is closed" in page and f'/app/tickets/{tid}/reply"' not in page
