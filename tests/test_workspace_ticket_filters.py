"""The tickets page's filters: the assignee select lists the same people as the ticket page
and shows the value asked for; a customer number is read as the API reads it, and a wrong
one is said inside the page, with its filters kept."""

from __future__ import annotations

import re

from bridge.store.tickets import TicketStore
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.factories import ids, inbound
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


async def test_an_unencoded_plus_finds_the_customer_as_the_api_does(
        client: Client, store: TicketStore) -> None:
    tid = ids(await inbound(store, "a", address="whatsapp:+33612345679"))
    await inbound(store, "b", address="whatsapp:+33612345670")  # another customer
    api = await client.get("/api/v1/tickets?contact=+33612345679&status=new", headers=ADMIN)
    assert [t["id"] for t in (await api.json())["tickets"]] == [tid]
    await sign_in(client, AGENT_TOKEN)
    # "+" unencoded in the query string: the page reads it as the API does.
    answer = await client.get("/app/?closed=1&customer=+33612345679")
    assert answer.status == 200
    html = await answer.text()
    assert set(re.findall(r'data-ticket="(\d+)"', html)) == {tid}
    assert 'id="f-customer" name="customer" value="+33612345679"' in html


async def test_a_wrong_number_is_said_in_the_page_with_the_filters_kept(
        client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    answer = await client.get("/app/?tag=vip&customer=%2B33abc")
    assert answer.status == 400
    html = await answer.text()
    assert 'id="filter-error"' in html and "is not a phone number" in html
    assert 'id="f-tag" name="tag" value="vip"' in html
    assert 'id="f-customer" name="customer" value="+33abc"' in html

