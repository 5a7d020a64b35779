"""Ticket fields: definitions and values (tables), required-on-solve, per-group forms, and
the optional on-hold status, through the API."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.core.teams import TeamConfig, parse_team_config
from bridge.core.ticket_fields import (
    FieldDef,
    FieldType,
    check_value,
    missing_on_solve,
    parse_definition,
)
from bridge.store.tickets import TicketStore
from bridge.web.keys import store_key
from config.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, make_settings
from tests.factories import inbound

Client = TestClient[Any, Any]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}

COUNTRY = FieldDef(key="country", title="Country", type=FieldType.DROPDOWN,
                   options=("fr", "sn"), required_on_solve=True)
TOPICS = FieldDef(key="topics", title="Topics", type=FieldType.MULTISELECT,
                  options=("billing", "visa", "lost"))


@pytest.mark.parametrize(("definition", "value", "stored"), [
    (FieldDef(key="t", title="t", type=FieldType.TEXT), "hello", "hello"),
    (FieldDef(key="n", title="n", type=FieldType.NUMBER), 3.5, 3.5),
    (FieldDef(key="n", title="n", type=FieldType.NUMBER), 7, 7),
    (FieldDef(key="c", title="c", type=FieldType.CHECKBOX), True, True),
    (FieldDef(key="d", title="d", type=FieldType.DATE), "2024-02-29", "2024-02-29"),
    (COUNTRY, "sn", "sn"),
    (TOPICS, ["lost", "billing", "lost"], ["billing", "lost"]),
    (COUNTRY, None, None),
])
def test_values_are_checked_and_normalised(definition: FieldDef, value: Any,
                                           stored: Any) -> None:
    assert check_value(definition, value) == stored


@pytest.mark.parametrize(("definition", "value"), [
    (FieldDef(key="t", title="t", type=FieldType.TEXT), 5),
    (FieldDef(key="t", title="t", type=FieldType.TEXT), "x" * 1001),
    (FieldDef(key="n", title="n", type=FieldType.NUMBER), True),
    (FieldDef(key="n", title="n", type=FieldType.NUMBER), "3"),
    (FieldDef(key="n", title="n", type=FieldType.NUMBER), float("nan")),
    (FieldDef(key="c", title="c", type=FieldType.CHECKBOX), 1),
    (FieldDef(key="d", title="d", type=FieldType.DATE), "2023-02-29"),
    (FieldDef(key="d", title="d", type=FieldType.DATE), "29/02/2024"),
    (COUNTRY, "ml"),
    (TOPICS, "billing"),
    (TOPICS, ["billing", "other"]),
])
def test_bad_values_are_refused(definition: FieldDef, value: Any) -> None:
    with pytest.raises(ValueError):
        check_value(definition, value)


@pytest.mark.parametrize("table", [
    {"key": "Bad Key", "type": "text"},
    {"key": "k", "type": "colour"},
    {"key": "k", "type": "dropdown"},
    {"key": "k", "type": "text", "options": ["a"]},
    {"key": "k", "type": "dropdown", "options": ["a", "a"]},
    {"key": "k", "type": "text", "required_on_solve": "yes"},
    {"key": "k", "type": "text", "colour": "red"},
])
def test_bad_definitions_are_refused(table: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_definition(table)


def test_required_fields_follow_the_form_of_the_group() -> None:
    team_field = FieldDef(key="visa", title="Visa", type=FieldType.CHECKBOX,
                          required_on_solve=True, groups=frozenset({"sn"}))
    definitions = [COUNTRY, team_field]
    assert missing_on_solve(definitions, "", {}) == ["country"]
    assert missing_on_solve(definitions, "sn", {"country": "sn"}) == ["visa"]
    assert missing_on_solve(definitions, "sn", {"country": "sn", "visa": False}) == ["visa"]
    assert missing_on_solve(definitions, "sn", {"country": "sn", "visa": True}) == []


def test_team_config_is_checked() -> None:
    assert parse_team_config({"tickets": {"hold_enabled": False}}).hold_enabled is False
    for bad in ({"tickets": {"hold": False}}, {"assignment": {"auto": "yes"}},
                {"other": {}}, {"assignment": {"default_group": "Bad Group"}}):
        with pytest.raises(ValueError):
            parse_team_config(bad)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url, config_fields=(COUNTRY,),
                         teams=TeamConfig(hold_enabled=False))


async def _ticket(client: Client) -> str:
    store: TicketStore = client.app[store_key]
    routed = await inbound(store)
    return str(routed.ticket_id)


async def test_solving_without_required_fields_is_409_and_changes_nothing(client: Client) -> None:
    tid = await _ticket(client)
    response = await client.patch(f"/api/v1/tickets/{tid}", json={"status": "solved"},
                                  headers=AGENT)
    assert response.status == 409
    error = (await response.json())["error"]
    assert error["code"] == "required_fields_missing" and "country" in error["message"]
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert (ticket["status"], ticket["fields"], ticket["version"]) == ("new", {}, 1)
    # The same request with the field solves.
    response = await client.patch(f"/api/v1/tickets/{tid}", headers=AGENT,
                                  json={"status": "solved", "fields": {"country": "fr"}})
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["fields"]) == ("solved", {"country": "fr"})


async def test_fields_from_the_api_are_edited_on_the_ticket_and_in_its_thread(
        client: Client) -> None:
    assert (await client.put("/api/v1/fields/topics", headers=ADMIN, json={
        "type": "multiselect", "options": ["billing", "visa"]})).status == 200
    listed = await (await client.get("/api/v1/fields", headers=AGENT)).json()
    assert [(f["key"], f["source"]) for f in listed["fields"]] == [("country", "config"),
                                                                   ("topics", "api")]
    tid = await _ticket(client)
    response = await client.patch(f"/api/v1/tickets/{tid}", headers=AGENT,
                                  json={"fields": {"topics": ["visa"], "country": "sn"}})
    assert (await response.json())["fields"] == {"country": "sn", "topics": ["visa"]}
    response = await client.patch(f"/api/v1/tickets/{tid}", headers=AGENT,
                                  json={"fields": {"topics": None}})
    assert (await response.json())["fields"] == {"country": "sn"}
    events = (await (await client.get(f"/api/v1/tickets/{tid}/events",
                                      headers=AGENT)).json())["events"]
    assert events[0]["data"]["fields"] == {"topics": None}


@pytest.mark.parametrize("fields", [
    {"country": "ml"}, {"unknown": 1}, {"country": ["fr"]}, "country=fr", {"team_only": "x"},
])
async def test_bad_field_values_are_422_and_write_nothing(client: Client,
                                                          fields: Any) -> None:
    await client.post("/api/v1/groups", json={"name": "sn"}, headers=ADMIN)
    await client.put("/api/v1/fields/team_only", headers=ADMIN,
                     json={"type": "text", "groups": ["sn"]})
    tid = await _ticket(client)
    response = await client.patch(f"/api/v1/tickets/{tid}", json={"fields": fields},
                                  headers=AGENT)
    assert response.status == 422
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert (ticket["fields"], ticket["version"]) == ({}, 1)


async def test_a_team_field_belongs_to_its_groups_form(client: Client) -> None:
    await client.post("/api/v1/groups", json={"name": "sn"}, headers=ADMIN)
    await client.put("/api/v1/fields/visa", headers=ADMIN,
                     json={"type": "checkbox", "groups": ["sn"], "required_on_solve": True})
    tid = await _ticket(client)
    response = await client.patch(f"/api/v1/tickets/{tid}", headers=ADMIN, json={
        "group": "sn", "fields": {"visa": True, "country": "sn"}})
    assert response.status == 200
    response = await client.patch(f"/api/v1/tickets/{tid}", headers=ADMIN,
                                  json={"fields": {"visa": None}, "status": "solved"})
    assert response.status == 409 and "visa" in (await response.json())["error"]["message"]


async def test_config_fields_cannot_be_changed_through_the_api(client: Client) -> None:
    for response in (await client.put("/api/v1/fields/country", headers=ADMIN,
                                      json={"type": "text"}),
                     await client.delete("/api/v1/fields/country", headers=ADMIN)):
        assert response.status == 409


async def test_on_hold_disabled_is_refused(client: Client) -> None:
    tid = await _ticket(client)
    response = await client.patch(f"/api/v1/tickets/{tid}", json={"status": "hold"},
                                  headers=AGENT)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "hold_disabled"
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert ticket["status"] == "new"


async def test_a_macro_that_solves_needs_the_required_fields_too(client: Client) -> None:
    tid = await _ticket(client)
    response = await client.post(f"/api/v1/tickets/{tid}/macros/solved", headers=AGENT)
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "required_fields_missing"
    events = (await (await client.get(f"/api/v1/tickets/{tid}/events",
                                      headers=AGENT)).json())["events"]
    assert [e["type"] for e in events] == ["customer_message"]
    await client.patch(f"/api/v1/tickets/{tid}", json={"fields": {"country": "fr"}},
                       headers=AGENT)
    response = await client.post(f"/api/v1/tickets/{tid}/macros/solved", headers=AGENT)
    assert response.status == 202
    ticket = await (await client.get(f"/api/v1/tickets/{tid}", headers=AGENT)).json()
    assert ticket["status"] == "solved"


def test_reports_group_by_agents_group_and_field_value() -> None:
    from bridge.core.tickets import Status, Ticket
    from bridge.web.reports import aggregate

    def t(tid: str, rating: int, group: str, values: dict[str, Any]) -> Ticket:
        return Ticket(id=tid, contact_id="c", channel="whatsapp", status=Status.SOLVED,
                      created_at_ms=0, updated_at_ms=0, csat_rating=rating, group=group,
                      field_values=values)
    tickets = [t("1", 5, "fr", {"country": "fr", "topics": ["visa", "lost"]}),
               t("2", 1, "", {}), t("3", 3, "fr", {"country": "fr"})]
    _, by_group = aggregate(tickets, "group")
    assert [(g.key, g.sent) for g in by_group] == [("fr", 2), ("no group", 1)]
    _, by_country = aggregate(tickets, "field:country")
    assert [(g.key, g.count) for g in by_country] == [("(none)", 1), ("fr", 2)]
    _, by_topics = aggregate(tickets, "field:topics")
    assert [g.key for g in by_topics] == ["(none)", "visa,lost"]


async def test_report_by_field_through_the_api(client: Client) -> None:
    response = await client.get("/api/v1/reports/csat?by=field:country", headers=AGENT)
    assert response.status == 200
    for bad in ("field:", "field:Bad Key", "groups"):
        response = await client.get(f"/api/v1/reports/csat?by={bad}", headers=AGENT)
        assert response.status == 422


async def test_macros_read_the_ticket_fields_and_group(client: Client) -> None:
    tid = await _ticket(client)
    await client.patch(f"/api/v1/tickets/{tid}", json={"fields": {"country": "sn"}},
                       headers=AGENT)
    draft = {"locales": {"en": "Pays {{ ticket.fields.country | default('-') }}, "
                               "visa {{ ticket.fields.visa | default('-') }}, "
                               "groupe '{{ ticket.group }}'"}}
    response = await client.post("/api/v1/macros/greeting/preview", headers=ADMIN,
                                 json={"ticket_id": tid, **draft})
    assert response.status == 200, await response.text()
    assert (await response.json())["body"] == "Pays sn, visa -, groupe ''"
    # Saved only when it renders against the sample ticket (no fields): default() does.
    saved = await client.put("/api/v1/macros/greeting", headers=ADMIN, json=draft)
    assert saved.status == 200, await saved.text()


def test_bulk_export_rows_carry_group_and_fields() -> None:
    from bridge.core.export_rows import TICKET_COLUMNS, render, ticket_row
    from bridge.core.tickets import Status, Ticket
    ticket = Ticket(id="7", contact_id="c", channel="whatsapp", status=Status.OPEN,
                    created_at_ms=1, updated_at_ms=1, group="sn",
                    field_values={"country": "sn", "topics": ["visa"]})
    row = ticket_row(ticket)
    assert (row["group"], row["fields"]) == ("sn", {"country": "sn", "topics": ["visa"]})
    csv_text = render([row], TICKET_COLUMNS, "csv")
    assert '"{""country"": ""sn"", ""topics"": [""visa""]}"' in csv_text


async def test_a_field_a_saved_view_filters_on_is_not_deleted(client: Client) -> None:
    """Deleted, the view went on filtering on it and could no longer be saved."""
    await client.put("/api/v1/fields/prio", headers=ADMIN,
                     json={"type": "dropdown", "options": ["low", "high"]})
    made = await client.post("/api/v1/views", headers=ADMIN, json={
        "name": "urgent", "conditions": {"fields": {"prio": "high"}}})
    assert made.status == 201, await made.text()
    refused = await client.delete("/api/v1/fields/prio", headers=ADMIN)
    assert refused.status == 409
    error = (await refused.json())["error"]
    assert error["code"] == "field_in_use" and "urgent" in error["message"]
    assert (await client.delete(f"/api/v1/views/{(await made.json())['id']}",
                                headers=ADMIN)).status == 204
    assert (await client.delete("/api/v1/fields/prio", headers=ADMIN)).status == 204
