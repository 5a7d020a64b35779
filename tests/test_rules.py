"""Triggers and automations as data: parsing errors name the rule and field; conditions."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.core.macros import MacroError, parse_macro, pick_locale
from bridge.core.rules import (
    AutomationConfig,
    Conditions,
    RuleError,
    Since,
    load_config,
    parse_config,
)
from bridge.core.tickets import SessionState, Status, Ticket

ROOT = Path(__file__).resolve().parent.parent
H = 3600 * 1000


def ticket(**kw: Any) -> Ticket:
    values: dict[str, Any] = {"id": "1", "contact_id": "c", "channel": "whatsapp",
                              "status": Status.OPEN, "created_at_ms": 0, "updated_at_ms": 0}
    values.update(kw)
    return Ticket(**values)


def shipped() -> AutomationConfig:
    return load_config(ROOT / "config" / "automations.toml")


def test_shipped_rules_parse_with_the_documented_defaults() -> None:
    config = shipped()
    close = config.automation("close_solved")
    wa = config.automation("close_solved_whatsapp")
    assert close is not None and wa is not None
    assert (close.since, close.after_s, close.then.set_status) == (
        Since.SOLVED, 4 * 24 * 3600, Status.CLOSED)
    assert (wa.after_s, wa.when.channel) == (3600, frozenset({"whatsapp"}))
    assert [t.name for t in config.triggers_for("ticket.status_changed")] == ["csat_on_solve"]
    assert [t.name for t in config.triggers_for("ticket.session_ended")] == [
        "csat_on_session_end"]
    notice = config.triggers_for("ticket.closed_thread_limit")
    assert [t.then.apply_macro for t in notice] == ["thread_limit"]
    # Disabled rules are kept but never fire.
    assert config.triggers_for("ticket.csat_answered") == []
    assert set(config.macro_names()) == {"csat_survey", "thread_limit", "csat_comment"}
    assert config.general.locale_for("", "whatsapp:+33612345678") == "fr"
    assert config.general.locale_for("", "whatsapp:+4915112345678") == "en"
    assert config.general.locale_for("pt-BR", "whatsapp:+33612345678") == "pt-BR"
    assert config.csat.scores == (5, 3, 1)


def config_from(text: str) -> AutomationConfig:
    return parse_config(tomllib.loads(text), "test.toml")


@pytest.mark.parametrize(("text", "names"), [
    ('[[automations]]\nname = "late"\nsince = "solved"\nafter_s = -5\n'
     'then = { set_status = "closed" }', ("automation 'late'", "after_s")),
    ('[[automations]]\nname = "late"\nsince = "solved"\nthen = { set_status = "closed" }',
     ("automation 'late'", "after_s")),
    ('[[automations]]\nname = "late"\nsince = "yesterday"\nafter_s = 5\n'
     'then = { set_status = "closed" }', ("automation 'late'", "since")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nwhen = { status = ["slved"] }\n'
     'then = { send_csat = true }', ("trigger 't1'", "when.status", "slved")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.exploded"]\nthen = { send_csat = true }',
     ("trigger 't1'", "'on'", "ticket.exploded")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nthen = { sned_csat = true }',
     ("trigger 't1'", "then.sned_csat")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nwhen = { colour = "red" }\n'
     'then = { send_csat = true }', ("trigger 't1'", "when.colour")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nthen = {}',
     ("trigger 't1'", "'then'", "at least one action")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nthen = { set_status = "new" }',
     ("trigger 't1'", "then.set_status")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\nthen = { apply_macro = "Bad Name" }',
     ("trigger 't1'", "then.apply_macro")),
    ('[[triggers]]\nname = "t1"\non = ["ticket.created"]\n'
     'when = { message_count_min = "3" }\nthen = { send_csat = true }',
     ("trigger 't1'", "when.message_count_min")),
    ('[[triggers]]\nname = "Has Spaces"\non = ["ticket.created"]\nthen = { send_csat = true }',
     ("trigger #1", "'name'")),
    ('[[triggers]]\nname = "dup"\non = ["ticket.created"]\nthen = { send_csat = true }\n'
     '[[automations]]\nname = "dup"\nsince = "created"\nafter_s = 5\n'
     'then = { add_tags = ["x"] }', ("'dup'", "twice")),
    ('[csat]\nscores = [5, 4, 3, 2]', ("[csat]", "scores")),
    ('[csat]\ncontent_sid = "nope"', ("[csat]", "content_sid")),
    ('[csat.button_titles]\nen = ["a very very long button title", "b", "c"]',
     ("[csat]", "button_titles.en")),
    ('[general]\ndefault_locale = "English"', ("[general]", "default_locale")),
    ('[surprise]\nx = 1', ("unknown section", "surprise")),
])
def test_invalid_rules_name_the_rule_and_the_field(text: str, names: tuple[str, ...]) -> None:
    with pytest.raises(RuleError) as info:
        config_from(text)
    message = str(info.value)
    assert message.startswith("test.toml")
    for part in names:
        assert part in message, message


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "automations.toml"
    path.write_text("[[triggers]\nname=", encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_means_no_rules(tmp_path: Path) -> None:
    config = load_config(tmp_path / "automations.toml")
    assert config.triggers == () and config.automations == ()


def test_conditions_all_must_hold() -> None:
    cond = Conditions(status=frozenset({Status.SOLVED}), channel=frozenset({"whatsapp"}),
                      tags_any=frozenset({"vip", "gold"}), tags_none=frozenset({"spam"}),
                      message_count_min=2, since_solved_s=60)
    good = ticket(status=Status.SOLVED, tags=("vip",), message_count=2, solved_at_ms=1000)
    assert cond.failing(good, 61_000) == []
    assert cond.failing(good, 60_999) == ["since_solved_s"]
    assert cond.failing(ticket(status=Status.OPEN, tags=("vip", "spam"), message_count=1,
                               channel="widget"), 10**9) == [
        "status", "channel", "tags_none", "message_count_min", "since_solved_s"]
    assert Conditions().matches(ticket(), 0)


def test_session_reason_and_csat_conditions() -> None:
    config = config_from(
        '[[triggers]]\nname = "t"\non = ["ticket.csat_answered"]\n'
        'when = { session = "ended", session_ended_reason = "agent", csat_rating_max = 2,'
        ' since_created_s = 10, since_updated_s = 5, assigned = true, csat_sent = true }\n'
        'then = { apply_macro = "csat_comment" }')
    when = config.triggers[0].when
    t = ticket(session=SessionState.ENDED, session_ended_reason="agent", csat_rating=1,
               assignee="alice", csat_sent_at_ms=5, updated_at_ms=5_000)
    assert when.failing(t, 10_000) == []
    assert when.failing(ticket(csat_rating=0), 0) == [
        "session", "session_ended_reason", "assigned", "since_created_s", "since_updated_s",
        "csat_sent", "csat_rating_max"]


def test_automation_timer_anchor_and_staleness() -> None:
    config = config_from(
        '[[automations]]\nname = "close"\nsince = "solved"\nafter_s = 2\n'
        'when = { status = "solved", channel = "whatsapp" }\nthen = { set_status = "closed" }')
    close = config.automations[0]
    solved = ticket(status=Status.SOLVED, solved_at_ms=10_000)
    assert close.should_schedule(solved) and close.due_ms(solved) == 12_000
    assert not close.should_schedule(ticket(status=Status.OPEN, solved_at_ms=10_000))
    assert not close.should_schedule(ticket(status=Status.SOLVED, channel="widget",
                                            solved_at_ms=1))
    assert close.should_fire(solved, anchor_ms=10_000, now_ms=12_000) == []
    assert close.should_fire(solved, anchor_ms=10_000, now_ms=11_999) == ["not_due"]
    # Solved again later: the old timer is stale.
    assert close.should_fire(solved, anchor_ms=5_000, now_ms=20_000) == ["solved_changed"]
    # Reopened since: the conditions fail.
    reopened = ticket(status=Status.OPEN, solved_at_ms=10_000)
    assert close.should_fire(reopened, anchor_ms=10_000, now_ms=20_000) == ["status"]


def test_pick_locale_falls_back_in_order() -> None:
    assert pick_locale(["en", "fr"], "fr", "en") == "fr"
    assert pick_locale(["en", "fr"], "fr-CA", "en") == "fr"
    assert pick_locale(["en", "fr-CA"], "fr", "en") == "fr-CA"
    assert pick_locale(["en", "fr"], "de", "en") == "en"
    assert pick_locale(["fr", "es"], "de", "fr") == "fr"
    assert pick_locale(["es", "it"], "de", "fr") == "es"
    assert pick_locale([], "fr", "en") is None


@pytest.mark.parametrize(("data", "field"), [
    ({"locales": {"english": "hi"}}, "locales"),
    ({"locales": {"en": 5}}, "locales.en"),
    ({"locales": {"en": "x" * 5000}}, "locales.en"),
    ({"locales": {"en": "hi"}, "actions": {"status": "slved"}}, "actions.status"),
    ({"locales": {"en": "hi"}, "actions": {"status": "new"}}, "actions.status"),
    ({"locales": {"en": "hi"}, "actions": {"explode": True}}, "actions.explode"),
    ({"locales": {"en": "hi"}, "actions": {"add_tags": ["has space"]}}, "actions.add_tags"),
    ({"locales": {"en": "hi"}, "actions": {"content_sid": "HX123"}}, "actions.content_sid"),
    ({"locales": {"en": "hi"}, "actions": {"fallback_content_variables": {"1": "x"}}},
     "actions.fallback_content_variables"),
    ({"locales": {"en": "hi", "fr": ""}}, "locales"),
    ({}, "macro"),
    ({"locales": {"en": "hi"}, "colour": "red"}, "colour"),
])
def test_macro_shape_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(MacroError) as info:
        parse_macro("demo", data)
    assert info.value.field == field


def test_macro_actions_compute_tags_and_round_trip() -> None:
    macro = parse_macro("m", {"locales": {"en": "hi"}, "actions": {
        "status": "pending", "add_tags": ["Waiting"], "remove_tags": ["vip"],
        "assignee": "@me"}})
    assert macro.actions.tags_after(("vip", "billing")) == ["billing", "waiting"]
    assert parse_macro("m", macro.to_dict()) == macro
    actions_only = parse_macro("m", {"actions": {"add_tags": ["x"]}})
    assert not actions_only.sends and actions_only.actions.changes_ticket
