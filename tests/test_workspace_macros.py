"""The macro editor: admins save (errors with their line), agents read and preview only;
history, diff and rollback."""

from __future__ import annotations

import json

from bridge.store.tickets import TicketStore
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, Client
from tests.factories import ids, inbound
from tests.workspace_support import sign_in

GOOD = {"title": "Greeting", "locale_en": "Hello {{ contact.first_name }}!",
        "locale_fr": "Bonjour {{ contact.first_name }} !", "actions": '{"status": "open"}'}


async def _versions(client: Client) -> list[int]:
    answer = await client.get("/api/v1/macros/greeting/versions",
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return [v["version"] for v in (await answer.json())["versions"]]


async def test_an_admin_saves_a_new_version_and_sees_its_diff(client: Client) -> None:
    csrf = await sign_in(client, ADMIN_TOKEN)
    saved = await client.post("/app/macros/greeting", data={**GOOD, "csrf_token": csrf})
    assert saved.status == 200 and "Saved as version 1" in await saved.text()
    assert await _versions(client) == [1, 0]
    diff = await (await client.get("/app/macros/greeting/versions/1")).text()
    assert 'class="diff-add">+Hello {{ contact.first_name }}!<' in diff.replace("&#34;", '"')


async def test_a_template_error_is_shown_with_its_line_and_nothing_is_saved(
        client: Client) -> None:
    csrf = await sign_in(client, ADMIN_TOKEN)
    broken = {**GOOD, "locale_en": "Hello\n{{ contact.first_name }\n", "csrf_token": csrf}
    answer = await client.post("/app/macros/greeting", data=broken)
    html = await answer.text()
    assert answer.status == 422
    assert 'id="macro-problems"' in html and "en, line 2" in html
    assert "{{ contact.first_name }" in html  # the draft is kept for fixing
    assert await _versions(client) == [0]


async def test_bad_actions_json_names_its_line(client: Client) -> None:
    csrf = await sign_in(client, ADMIN_TOKEN)
    answer = await client.post("/app/macros/greeting", data={
        **GOOD, "actions": '{\n"status": }', "csrf_token": csrf})
    assert "actions, line 2" in await answer.text()
    assert await _versions(client) == [0]


async def test_an_agent_cannot_save_or_roll_back(client: Client) -> None:
    csrf = await sign_in(client, AGENT_TOKEN)
    page = await (await client.get("/app/macros/greeting")).text()
    assert "<fieldset disabled>" in page and "Save macro" not in page
    refused = await client.post("/app/macros/greeting", data={**GOOD, "csrf_token": csrf})
    assert refused.status == 403
    rollback = await client.post("/app/macros/greeting/rollback",
                                 data={"version": "0", "csrf_token": csrf})
    assert rollback.status == 403
    assert await _versions(client) == [0]


async def test_a_draft_is_previewed_against_a_ticket(client: Client,
                                                     store: TicketStore) -> None:
    tid = ids(await inbound(store, "Bonjour", name="Camille Martin"))
    csrf = await sign_in(client, ADMIN_TOKEN)
    preview = await client.post("/app/macros/greeting/preview", data={
        **GOOD, "ticket_id": tid, "preview_locale": "en", "csrf_token": csrf})
    assert "Hello Camille!" in await preview.text()
    broken = await client.post("/app/macros/greeting/preview", data={
        **GOOD, "locale_en": "{{ nope.x }}", "preview_locale": "en", "csrf_token": csrf})
    assert 'class="problems"' in await broken.text()
    # An agent previews the stored macro (the editor's fields are disabled for agents).
    agent_csrf = await sign_in(client, AGENT_TOKEN)
    as_agent = await client.post("/app/macros/greeting/preview", data={
        "ticket_id": tid, "csrf_token": agent_csrf})
    assert "Camille" in await as_agent.text()


async def test_rollback_restores_an_earlier_version_as_a_new_one(client: Client) -> None:
    csrf = await sign_in(client, ADMIN_TOKEN)
    await client.post("/app/macros/greeting", data={**GOOD, "csrf_token": csrf})
    rolled = await client.post("/app/macros/greeting/rollback",
                               data={"version": "0", "csrf_token": csrf})
    assert "Version 0 restored as version 2" in await rolled.text()
    current = await client.get("/api/v1/macros/greeting",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert "Hello Camille" not in json.dumps(await current.json())
    assert (await current.json())["version"] == 2
    bad = await client.post("/app/macros/greeting/rollback",
                            data={"version": "x", "csrf_token": csrf})
    assert "version must be a version number" in await bad.text()


async def test_the_editor_keeps_line_breaks_and_speaks_french(client: Client) -> None:
    """Browsers send a textarea's line breaks as CRLF: every save rewrote the texts with
    CRs (which customers then got). In French, its notices and problems were English."""
    csrf = await sign_in(client, ADMIN_TOKEN)
    two_lines = {**GOOD, "locale_en": "Hello\r\nsecond line", "csrf_token": csrf}
    await client.post("/app/macros/greeting", data=two_lines)
    stored = await (await client.get("/api/v1/macros/greeting", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}"})).json()
    assert stored["locales"]["en"] == "Hello\nsecond line"
    client.session.cookie_jar.update_cookies({"lang": "fr"})
    saved = await (await client.post("/app/macros/greeting", data=two_lines)).text()
    assert "Enregistrée comme version 2" in saved
    for actions, french in (('{"set_status": "x"}', "action inconnue"),
                            ('{\n"status": }', "JSON invalide"),
                            ("[" * 5000, "trop imbriqué")):  # the last: a 500
        refused = await client.post("/app/macros/greeting", data={**two_lines,
                                                                   "actions": actions})
        html = await refused.text()
        assert refused.status == 422 and french in html, actions
        assert "La macro n&#39;a pas été enregistrée :" in html
