"""The French UI has no English left in what every page shows: the skip link, the error
pages' messages, the reports' table heads and errors."""

from __future__ import annotations

from tests.conftest import AGENT_TOKEN, Client
from tests.workspace_support import sign_in

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9"}


async def test_the_french_pages_say_everything_in_french(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    tickets = await (await client.get("/app/", headers=FRENCH)).text()
    assert ">Aller au contenu<" in tickets and "Skip to content" not in tickets
    missing = await (await client.get("/app/nowhere", headers=FRENCH)).text()
    assert "Page introuvable" in missing
    period = await client.get("/app/reports?since=2026-02-01&until=2026-01-01", headers=FRENCH)
    assert period.status == 422
    assert "« Du » doit précéder « Au »" in await period.text()


async def test_every_table_head_of_the_reports_says_something(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    page = await (await client.get("/app/reports")).text()
    assert '<th scope="col"></th>' not in page and '<th scope="col">Figure</th>' in page
