"""The tickets page's filters: the assignee select lists the same people as the ticket page
and shows the value asked for; a customer number is read as the API reads it, and a wrong
one is said inside the page, with its filters kept."""

from __future__ import annotations

import re

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.workspace_support import sign_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _assignee_options(html: str) -> dict[str, bool]:
    select = html[html.index('id="f-assignee"'):]
    select = select[:select.index("</select>")]
    return {m[1]: bool(m[2]) for m in re.finditer(r'<option value="([^"]*)"( selected)?',
                                                   select)}


async def test_the_assignee_filter_lists_people_and_keeps_its_value(client: Client) -> None:
    made = await client.post("/api/v1/agents", headers=ADMIN, json={"name": "mona"})
    assert made.status == 201, await made.text()
    await sign_in(client, AGENT_TOKEN)
    options = _assignee_options(await (await client.get("/app/?assignee=mona")).text())
    assert options == {"": False, "alice": False, "mona": True}
