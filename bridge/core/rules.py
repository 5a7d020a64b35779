"""Triggers and automations as data (config/automations.toml), as Zendesk keeps them.

* A **trigger** runs when a ticket event happens (`on`: the trigger names the web process
  and the routing emit) and its conditions (`when`) hold on the ticket as it is now.
* An **automation** runs a delay (`after_s`) after a moment of the ticket (`since`:
  solved, created or updated) if its conditions still hold then. Its timer is set on every
  ticket event while the conditions (except the elapsed time) hold, and does nothing when
  the moment moved (re-solved, updated again) or the conditions stopped holding.

Everything here is pure (stdlib only): parsing with errors that name the rule and field,
and condition checks on a `Ticket` at a given time. workers/automations.py does the I/O.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bridge.core.changes import TriggerName
from bridge.core.macros import CONTENT_SID_RE, LOCALE_RE, NAME_RE
from bridge.core.tickets import SessionState, Status, Ticket, TransitionError, normalize_tags

# Trigger names a rule may listen to (`on`): bridge.core.changes derives them from changes.
TRIGGER_NAMES = frozenset(t.value for t in TriggerName)
# Meta's limit on reply-button titles.
BUTTON_TITLE_MAX = 20
MAX_BUTTONS = 3


class RuleError(ValueError):
    """An invalid rule file; the message names the file, the rule and the field."""


class Since(StrEnum):
    SOLVED = "solved"
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True, kw_only=True)
class Conditions:
    """All given conditions must hold (an empty Conditions always holds)."""

    status: frozenset[Status] = frozenset()
    status_not: frozenset[Status] = frozenset()
    channel: frozenset[str] = frozenset()
    channel_not: frozenset[str] = frozenset()
    session: SessionState | None = None
    session_ended_reason: frozenset[str] = frozenset()
    closed_reason: frozenset[str] = frozenset()
    tags_all: frozenset[str] = frozenset()
    tags_any: frozenset[str] = frozenset()
    tags_none: frozenset[str] = frozenset()
    assigned: bool | None = None
    message_count_min: int | None = None
    message_count_max: int | None = None
    # "at least this many seconds since ..."
    since_solved_s: int | None = None
    since_created_s: int | None = None
    since_updated_s: int | None = None
    csat_sent: bool | None = None
    csat_rating_min: int | None = None
    csat_rating_max: int | None = None

    def failing(self, t: Ticket, now_ms: int) -> list[str]:
        """The names of the conditions that do not hold (empty: the rule applies)."""
        bad: list[str] = []

        def need(ok: bool, name: str) -> None:
            if not ok:
                bad.append(name)

        need(not self.status or t.status in self.status, "status")
        need(t.status not in self.status_not, "status_not")
        need(not self.channel or t.channel in self.channel, "channel")
        need(t.channel not in self.channel_not, "channel_not")
        need(self.session is None or t.session is self.session, "session")
        need(not self.session_ended_reason or t.session_ended_reason in self.session_ended_reason,
             "session_ended_reason")
        need(not self.closed_reason or t.closed_reason in self.closed_reason, "closed_reason")
        tags = set(t.tags)
        need(self.tags_all <= tags, "tags_all")
        need(not self.tags_any or bool(self.tags_any & tags), "tags_any")
        need(not (self.tags_none & tags), "tags_none")
        need(self.assigned is None or self.assigned == bool(t.assignee), "assigned")
        need(self.message_count_min is None or t.message_count >= self.message_count_min,
             "message_count_min")
        need(self.message_count_max is None or t.message_count <= self.message_count_max,
             "message_count_max")
        need(self.since_solved_s is None or (
            t.solved_at_ms > 0 and now_ms - t.solved_at_ms >= self.since_solved_s * 1000),
            "since_solved_s")
        need(self.since_created_s is None
             or now_ms - t.created_at_ms >= self.since_created_s * 1000, "since_created_s")
        need(self.since_updated_s is None
             or now_ms - t.updated_at_ms >= self.since_updated_s * 1000, "since_updated_s")
        need(self.csat_sent is None or self.csat_sent == bool(t.csat_sent_at_ms), "csat_sent")
        need(self.csat_rating_min is None
             or (t.csat_rating > 0 and t.csat_rating >= self.csat_rating_min),
             "csat_rating_min")
        need(self.csat_rating_max is None
             or (t.csat_rating > 0 and t.csat_rating <= self.csat_rating_max),
             "csat_rating_max")
        return bad

    def matches(self, t: Ticket, now_ms: int) -> bool:
        return not self.failing(t, now_ms)

    def without_time(self) -> Conditions:
        """The same conditions with the elapsed-time ones dropped (to decide whether a
        timer is worth setting now)."""
        return Conditions(**{
            **{f: getattr(self, f) for f in self.__dataclass_fields__},
            "since_solved_s": None, "since_created_s": None, "since_updated_s": None,
        })


@dataclass(frozen=True, kw_only=True)
class RuleActions:
    """Run in this order: apply_macro (to the live conversation), the ticket changes
    (one update), send_csat."""

    set_status: Status | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    assign: str | None = None  # "" unassigns
    apply_macro: str = ""
    send_csat: bool = False

    @property
    def changes_ticket(self) -> bool:
        return bool(self.set_status or self.add_tags or self.remove_tags
                    or self.assign is not None)

    def tags_after(self, current: tuple[str, ...]) -> list[str] | None:
        if not (self.add_tags or self.remove_tags):
            return None
        out = [t for t in current if t not in self.remove_tags]
        return out + [t for t in self.add_tags if t not in out]


@dataclass(frozen=True, kw_only=True)
class Trigger:
    name: str
    on: frozenset[str]
    when: Conditions
    then: RuleActions
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Automation:
    name: str
    since: Since
    after_s: int
    when: Conditions
    then: RuleActions
    enabled: bool = True

    def anchor_ms(self, t: Ticket) -> int:
        """The moment the delay counts from; 0 when the ticket has none (never solved)."""
        if self.since is Since.SOLVED:
            return t.solved_at_ms
        if self.since is Since.CREATED:
            return t.created_at_ms
        return t.updated_at_ms

    def due_ms(self, t: Ticket) -> int | None:
        anchor = self.anchor_ms(t)
        return anchor + self.after_s * 1000 if anchor else None

    def should_schedule(self, t: Ticket) -> bool:
        """Worth a timer: the moment exists and the conditions other than time hold."""
        return bool(self.anchor_ms(t)) and self.when.without_time().matches(t, 0)

    def should_fire(self, t: Ticket, *, anchor_ms: int, now_ms: int) -> list[str]:
        """Why a due timer must do nothing (empty list: fire). `anchor_ms` is the moment
        the timer was set for; if the ticket's moment moved, the timer is stale."""
        if self.anchor_ms(t) != anchor_ms:
            return [f"{self.since.value}_changed"]
        if now_ms - anchor_ms < self.after_s * 1000:
            return ["not_due"]
        return self.when.failing(t, now_ms)


@dataclass(frozen=True, kw_only=True)
class General:
    company_name: str = "Support"
    default_locale: str = "en"
    # Address prefix -> locale, longest first (e.g. "whatsapp:+33" -> "fr").
    locale_by_prefix: tuple[tuple[str, str], ...] = ()

    def locale_for(self, contact_locale: str, address: str) -> str:
        if contact_locale:
            return contact_locale
        for prefix, locale in self.locale_by_prefix:
            if address.startswith(prefix):
                return locale
        return self.default_locale


@dataclass(frozen=True, kw_only=True)
class CsatConfig:
    macro: str = "csat_survey"
    # Twilio Content quick-reply (in the window, <= 3 buttons), ids csat:{{1}}:<score>.
    content_sid: str = ""
    # Approved template for outside the window; variable 1 is the ticket id.
    fallback_content_sid: str = ""
    scores: tuple[int, ...] = (5, 3, 1)
    button_titles: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType(
        {"en": ("😀 Good", "😐 OK", "🙁 Bad")}))


@dataclass(frozen=True, kw_only=True)
class AutomationConfig:
    general: General = field(default_factory=General)
    csat: CsatConfig = field(default_factory=CsatConfig)
    triggers: tuple[Trigger, ...] = ()
    automations: tuple[Automation, ...] = ()

    def triggers_for(self, trigger_name: str) -> list[Trigger]:
        return [t for t in self.triggers if t.enabled and trigger_name in t.on]

    def automation(self, name: str) -> Automation | None:
        for a in self.automations:
            if a.name == name:
                return a
        return None

    def macro_names(self) -> dict[str, str]:
        """Every macro the rules refer to -> where (for `bridge check`)."""
        out = {self.csat.macro: "[csat] macro"}
        for kind, rules in (("trigger", self.triggers), ("automation", self.automations)):
            for rule in rules:
                if rule.then.apply_macro:
                    out.setdefault(rule.then.apply_macro,
                                   f"{kind} {rule.name!r}: then.apply_macro")
        return out


# ------------------------------------------------------------------ parsing


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
        elif key in ("channel", "channel_not", "session_ended_reason", "closed_reason"):
            values[key] = _str_set(value, where, fld)
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
