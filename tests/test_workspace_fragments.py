"""Fragments (what the pages' script swaps in) are marked as such, and a script's fetch
without a session is told so (401) rather than sent to the sign-in page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from bridge.store.tickets import TicketStore
from tests.conftest import AGENT_TOKEN, Client
from tests.factories import ids, inbound
from tests.workspace_support import sign_in

FETCH = {"Sec-Fetch-Mode": "cors"}


async def test_only_fragments_are_marked_as_fragments(client: Client,
                                                      store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour"))
    await sign_in(client, AGENT_TOKEN)
    for path in ("/app/views", f"/app/tickets/{tid}/thread",
                 f"/app/tickets/{tid}/macro-preview?macro=greeting"):
        answer = await client.get(path, headers=FETCH)
        assert answer.status == 200 and answer.headers["X-Workspace-Fragment"] == "1", path
    for path in ("/app/", f"/app/tickets/{tid}", "/app/tickets/424242/thread"):
        assert "X-Workspace-Fragment" not in (await client.get(path)).headers, path


async def test_a_fetch_without_a_session_is_401_and_a_navigation_goes_to_sign_in(
        client: Client) -> None:
    fetched = await client.get("/app/views?tag=x", headers=FETCH, allow_redirects=False)
    assert fetched.status == 401
    assert "Signed out: reload to sign in" in await fetched.text()
    assert "bridge_signin_csrf" not in fetched.cookies  # another tab's sign-in form works
    navigated = await client.get("/app/tickets/3?before=1-1", allow_redirects=False)
    assert navigated.status == 303
    location = urlsplit(navigated.headers["Location"])
    assert location.path == "/app/sign-in"
    assert parse_qs(location.query)["next"] == ["/app/tickets/3?before=1-1"]
