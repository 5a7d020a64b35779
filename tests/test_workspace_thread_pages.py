"""The ticket page's thread pages: `before` is checked as the API's cursor, an older page
stays older when the live refresh re-reads it, and it links back to newer messages."""

from __future__ import annotations

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
