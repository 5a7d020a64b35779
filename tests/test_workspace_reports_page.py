"""/app/reports: the CSV link carries the period as the page was asked for it."""

from __future__ import annotations

import html as html_lib
import re

from tests.conftest import AGENT_TOKEN, Client
from tests.workspace_support import sign_in


async def test_the_csv_link_works_for_a_zone_with_a_plus(client: Client) -> None:
    await sign_in(client, AGENT_TOKEN)
    page = await client.get("/app/reports", params={"tz": "Etc/GMT+5",
                                                    "since": "2026-01-01"})
    assert page.status == 200
    link = re.search(r'id="download-csv" href="([^"]+)"', await page.text())
    assert link
    csv = await client.get(html_lib.unescape(link[1]))
    assert csv.status == 200, await csv.text()
    assert csv.content_type == "text/csv"
