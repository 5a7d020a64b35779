"""Triggers and automations as values, and their checks on a ticket.

* A **trigger** runs when a ticket event happens (`on`: the trigger names the web process
  and the routing emit) and its conditions (`when`) hold on the ticket as it is now.
* An **automation** runs a delay (`after_s`) after a moment of the ticket (`since`:
  solved, created or updated) if its conditions still hold then. Its timer is set on every
  ticket event while the conditions (except the elapsed time) hold, and does nothing when
  the moment moved (re-solved, updated again) or the conditions stopped holding.

Pure (stdlib only): condition checks on a `Ticket` at a given time. Reading and checking
config/automations.toml is bridge.core.rule_parsing; workers/automations.py does the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from bridge.core.tickets import SessionState, Status, Ticket
from bridge.core.views import field_matches


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
    # Agents' groups ("" : the shared pool) and ticket field values (bridge/core/teams.py).
    group: frozenset[str] = frozenset()
    group_not: frozenset[str] = frozenset()
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)

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
        need(not self.group or t.group in self.group, "group")
        need(t.group not in self.group_not, "group_not")
        need(all(field_matches(t.field_values.get(k), v) for k, v in self.fields.items()),
             "fields")
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
    set_group: str | None = None  # "" : back to the shared pool
    apply_macro: str = ""
    send_csat: bool = False

    @property
    def changes_ticket(self) -> bool:
        return bool(self.set_status or self.add_tags or self.remove_tags
                    or self.assign is not None or self.set_group is not None)

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

    def may_act_on(self, trigger_name: str, status_after: Status | None) -> bool:
        """Whether a ticket event can lead to anything: a rule that listens to it, or a
        timer that an automation could set for a ticket in that status (None: the status
        is not known, so any enabled automation could). When not, the event needs no job."""
        if self.triggers_for(trigger_name):
            return True
        for automation in self.automations:
            if not automation.enabled:
                continue
            when = automation.when
            if status_after is not None and (
                    (when.status and status_after not in when.status)
                    or status_after in when.status_not):
                continue
            return True
        return False

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
