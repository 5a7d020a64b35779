"""Reading and checking the rule file (config/automations.toml), as Zendesk keeps it.

Errors name the file, the rule and the field. The values it builds are in
bridge.core.rule_model; this module depends on that one, never the reverse.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bridge.core.changes import TriggerName
from bridge.core.macros import CONTENT_SID_RE, LOCALE_RE, NAME_RE
from bridge.core.rule_model import (
    Automation,
    AutomationConfig,
    Conditions,
    CsatConfig,
    General,
    RuleActions,
    Since,
    Trigger,
)
from bridge.core.teams import NAME_RE as GROUP_NAME_RE
from bridge.core.tickets import SessionState, Status, TransitionError, normalize_tags

# Trigger names a rule may listen to (`on`): bridge.core.changes derives them from changes.
TRIGGER_NAMES = frozenset(t.value for t in TriggerName)
# Meta's limit on reply-button titles.
BUTTON_TITLE_MAX = 20
MAX_BUTTONS = 3


class RuleError(ValueError):
    """An invalid rule file; the message names the file, the rule and the field."""


class _Where:
    def __init__(self, source: str, rule: str) -> None:
        self.source, self.rule = source, rule

    def error(self, fld: str, message: str) -> RuleError:
        return RuleError(f"{self.source}: {self.rule}: field {fld!r}: {message}")


def _str_set(value: Any, where: _Where, fld: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(fld, "must be a string or a list of strings")
    return frozenset(value)


def _statuses(value: Any, where: _Where, fld: str) -> frozenset[Status]:
    out = set()
    for raw in _str_set(value, where, fld):
        try:
            out.add(Status(raw))
        except ValueError:
            raise where.error(fld, f"unknown status {raw!r}; use one of "
                              f"{', '.join(s.value for s in Status)}") from None
    return frozenset(out)


def _tags(value: Any, where: _Where, fld: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(fld, "must be a list of tags")
    try:
        return normalize_tags(value)
    except TransitionError as exc:
        raise where.error(fld, exc.message) from exc


def _int(value: Any, where: _Where, fld: str, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (
        maximum is not None and value > maximum
    ):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise where.error(fld, f"must be a whole number of at least {minimum}{bound}")
    return value


def _bool(value: Any, where: _Where, fld: str) -> bool:
    if not isinstance(value, bool):
        raise where.error(fld, "must be true or false")
    return value


def _table(value: Any, where: _Where, fld: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(fld, "must be a table")
    return value


_CONDITION_FIELDS = frozenset(Conditions.__dataclass_fields__)
_ACTION_FIELDS = frozenset(RuleActions.__dataclass_fields__)


def parse_conditions(data: Any, where: _Where) -> Conditions:
    data = _table(data, where, "when")
    unknown = set(data) - _CONDITION_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise where.error(f"when.{name}", "unknown condition; use one of "
                          f"{', '.join(sorted(_CONDITION_FIELDS))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        fld = f"when.{key}"
        if key in ("status", "status_not"):
            values[key] = _statuses(value, where, fld)
        elif key in ("channel", "channel_not", "session_ended_reason", "closed_reason",
                     "group", "group_not"):
            values[key] = _str_set(value, where, fld)
        elif key == "fields":
            values[key] = _table(value, where, fld)
        elif key in ("tags_all", "tags_any", "tags_none"):
            values[key] = frozenset(_tags(value, where, fld))
        elif key == "session":
            try:
                values[key] = SessionState(value)
            except ValueError:
                raise where.error(fld, "must be 'active' or 'ended'") from None
        elif key in ("assigned", "csat_sent"):
            values[key] = _bool(value, where, fld)
        elif key in ("csat_rating_min", "csat_rating_max"):
            values[key] = _int(value, where, fld, minimum=1, maximum=5)
        else:
            values[key] = _int(value, where, fld)
    return Conditions(**values)


def parse_actions(data: Any, where: _Where) -> RuleActions:
    data = _table(data, where, "then")
    unknown = set(data) - _ACTION_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise where.error(f"then.{name}", "unknown action; use one of "
                          f"{', '.join(sorted(_ACTION_FIELDS))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        fld = f"then.{key}"
        if key == "set_status":
            statuses = _statuses(value, where, fld)
            if len(statuses) != 1 or not isinstance(value, str):
                raise where.error(fld, "must be one status")
            (status,) = statuses
            if status is Status.NEW:
                raise where.error(fld, "a ticket never goes back to new")
            values[key] = status
        elif key in ("add_tags", "remove_tags"):
            values[key] = _tags(value, where, fld)
        elif key == "assign":
            if not isinstance(value, str):
                raise where.error(fld, "must be an agent name ('' unassigns)")
            values[key] = value.strip()
        elif key == "set_group":
            if not isinstance(value, str) or (value and not GROUP_NAME_RE.fullmatch(value)):
                raise where.error(fld, "must be a group name ('' : no group)")
            values[key] = value
        elif key == "apply_macro":
            if not isinstance(value, str) or not NAME_RE.match(value):
                raise where.error(fld, "must be a macro name")
            values[key] = value
        else:
            values[key] = _bool(value, where, fld)
    actions = RuleActions(**values)
    if not (actions.changes_ticket or actions.apply_macro or actions.send_csat):
        raise where.error("then", "a rule needs at least one action")
    return actions


def _rule_name(item: Any, source: str, kind: str, index: int) -> str:
    if not isinstance(item, dict):
        raise RuleError(f"{source}: {kind} #{index + 1} must be a table")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RuleError(f"{source}: {kind} #{index + 1}: field 'name': "
                        "use 1-64 lower-case letters, digits, '_' or '-'")
    return name


def parse_trigger(item: Any, source: str, index: int) -> Trigger:
    name = _rule_name(item, source, "trigger", index)
    where = _Where(source, f"trigger {name!r}")
    unknown = set(item) - {"name", "on", "when", "then", "enabled", "description"}
    if unknown:
        raise where.error(sorted(unknown)[0], "unknown field; use name, on, when, then, enabled")
    on = _str_set(item.get("on", []), where, "on")
    if not on:
        raise where.error("on", f"name at least one of {', '.join(sorted(TRIGGER_NAMES))}")
    bad = on - TRIGGER_NAMES
    if bad:
        raise where.error("on", f"unknown trigger {sorted(bad)[0]!r}; use one of "
                          f"{', '.join(sorted(TRIGGER_NAMES))}")
    return Trigger(
        name=name, on=on,
        when=parse_conditions(item.get("when", {}), where),
        then=parse_actions(item.get("then"), where),
        enabled=_bool(item.get("enabled", True), where, "enabled"),
    )


def parse_automation(item: Any, source: str, index: int) -> Automation:
    name = _rule_name(item, source, "automation", index)
    where = _Where(source, f"automation {name!r}")
    unknown = set(item) - {"name", "since", "after_s", "when", "then", "enabled", "description"}
    if unknown:
        raise where.error(sorted(unknown)[0],
                          "unknown field; use name, since, after_s, when, then, enabled")
    try:
        since = Since(item.get("since", ""))
    except ValueError:
        raise where.error("since", "must be 'solved', 'created' or 'updated'") from None
    if "after_s" not in item:
        raise where.error("after_s", "is required (seconds)")
    return Automation(
        name=name, since=since,
        after_s=_int(item["after_s"], where, "after_s", minimum=1),
        when=parse_conditions(item.get("when", {}), where),
        then=parse_actions(item.get("then"), where),
        enabled=_bool(item.get("enabled", True), where, "enabled"),
    )


def parse_general(data: Any, source: str) -> General:
    where = _Where(source, "[general]")
    data = _table(data, where, "general")
    unknown = set(data) - {"company_name", "default_locale", "locale_by_prefix"}
    if unknown:
        raise where.error(sorted(unknown)[0], "unknown setting")
    company = data.get("company_name", "Support")
    if not isinstance(company, str) or not company.strip() or len(company) > 100:
        raise where.error("company_name", "must be a name of 1-100 characters")
    default_locale = data.get("default_locale", "en")
    if not isinstance(default_locale, str) or not LOCALE_RE.match(default_locale):
        raise where.error("default_locale", "must be a locale such as en or fr")
    prefixes = _table(data.get("locale_by_prefix", {}), where, "locale_by_prefix")
    pairs: list[tuple[str, str]] = []
    for prefix, locale in prefixes.items():
        if not isinstance(locale, str) or not LOCALE_RE.match(locale):
            raise where.error(f"locale_by_prefix.{prefix}", "must be a locale such as fr")
        pairs.append((prefix, locale))
    pairs.sort(key=lambda p: len(p[0]), reverse=True)
    return General(company_name=company.strip(), default_locale=default_locale,
                   locale_by_prefix=tuple(pairs))


def parse_csat(data: Any, source: str) -> CsatConfig:
    where = _Where(source, "[csat]")
    data = _table(data, where, "csat")
    unknown = set(data) - {"macro", "content_sid", "fallback_content_sid", "scores",
                           "button_titles"}
    if unknown:
        raise where.error(sorted(unknown)[0], "unknown setting")
    macro = data.get("macro", "csat_survey")
    if not isinstance(macro, str) or not NAME_RE.match(macro):
        raise where.error("macro", "must be a macro name")
    sids: dict[str, str] = {}
    for key in ("content_sid", "fallback_content_sid"):
        sid = data.get(key, "")
        if not isinstance(sid, str) or (sid and not CONTENT_SID_RE.match(sid)):
            raise where.error(key, "must be empty or a Content SID (HX + 32 hex digits)")
        sids[key] = sid
    scores_raw = data.get("scores", [5, 3, 1])
    if not isinstance(scores_raw, list) or not 1 <= len(scores_raw) <= MAX_BUTTONS:
        raise where.error("scores", f"must list 1 to {MAX_BUTTONS} scores (WhatsApp allows "
                          f"{MAX_BUTTONS} buttons in a session)")
    scores = tuple(_int(s, where, "scores", minimum=1, maximum=5) for s in scores_raw)
    if len(set(scores)) != len(scores):
        raise where.error("scores", "must not repeat a score")
    titles_raw = _table(data.get("button_titles", {"en": ["😀 Good", "😐 OK", "🙁 Bad"]}),
                        where, "button_titles")
    titles: dict[str, tuple[str, ...]] = {}
    for locale, values in titles_raw.items():
        fld = f"button_titles.{locale}"
        if not LOCALE_RE.match(locale):
            raise where.error(fld, "must be keyed by a locale such as en or fr")
        if not isinstance(values, list) or len(values) != len(scores) or not all(
            isinstance(v, str) and 0 < len(v) <= BUTTON_TITLE_MAX for v in values
        ):
            raise where.error(fld, f"must list {len(scores)} titles (one per score) of 1-"
                              f"{BUTTON_TITLE_MAX} characters")
        titles[locale] = tuple(values)
    if not titles:
        raise where.error("button_titles", "needs at least one locale")
    return CsatConfig(macro=macro, content_sid=sids["content_sid"],
                      fallback_content_sid=sids["fallback_content_sid"], scores=scores,
                      button_titles=MappingProxyType(titles))


def parse_config(data: Mapping[str, Any], source: str = "automations.toml") -> AutomationConfig:
    unknown = set(data) - {"general", "csat", "triggers", "automations"}
    if unknown:
        raise RuleError(f"{source}: unknown section {sorted(unknown)[0]!r}; use general, "
                        "csat, triggers, automations")
    triggers_raw = data.get("triggers", [])
    automations_raw = data.get("automations", [])
    if not isinstance(triggers_raw, list) or not isinstance(automations_raw, list):
        raise RuleError(f"{source}: triggers and automations are arrays of tables "
                        "([[triggers]], [[automations]])")
    triggers = tuple(parse_trigger(t, source, i) for i, t in enumerate(triggers_raw))
    automations = tuple(parse_automation(a, source, i) for i, a in enumerate(automations_raw))
    seen: set[str] = set()
    for name in [t.name for t in triggers] + [a.name for a in automations]:
        if name in seen:
            raise RuleError(f"{source}: rule name {name!r} is used twice")
        seen.add(name)
    return AutomationConfig(
        general=parse_general(data.get("general", {}), source),
        csat=parse_csat(data.get("csat", {}), source),
        triggers=triggers,
        automations=automations,
    )


def load_config(path: Path) -> AutomationConfig:
    """Read and check config/automations.toml; a missing file means no rules."""
    if not path.exists():
        return AutomationConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: {exc}") from exc
    return parse_config(data, str(path))
