"""A macro draft that does not parse (actions that are not JSON, a refused field) comes back
to the editor as typed with the reason (422), as a template error does."""

from __future__ import annotations

import html as html_lib

from tests.conftest import ADMIN_TOKEN, Client
from tests.test_workspace_macros import GOOD, _versions
from tests.workspace_support import sign_in


async def test_actions_that_are_not_json_keep_the_draft(client: Client) -> None:
    csrf = await sign_in(client, ADMIN_TOKEN)
    draft = {**GOOD, "title": "My draft title", "locale_en": "Hello draft {{ contact.name }}",
             "actions": "{bad json", "new_locale": "de", "new_locale_text": "Hallo draft",
             "csrf_token": csrf}
    answer = await client.post("/app/macros/greeting", data=draft, allow_redirects=False)
    assert answer.status == 422
    page = html_lib.unescape(await answer.text())
    assert 'id="macro-problems"' in page and "actions, line 1: not valid JSON" in page
    assert "My draft title" in page and "Hello draft {{ contact.name }}" in page
    assert "Hallo draft" in page and ">{bad json</textarea>" in page
    assert await _versions(client) == [0]  # nothing saved
