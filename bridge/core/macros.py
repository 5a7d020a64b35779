"""Macros as values: per-locale texts plus actions, parsed and checked without I/O.

A macro is what an agent applies to a ticket: a Jinja2 text per locale (rendered by
bridge.templating) and actions (status, tags, assignee, ending the session). Outside
WhatsApp's 24-hour window only an approved template can go out, so a macro may name one
(`fallback_content_sid`, with `fallback_content_variables`); inside the window it may send
Twilio Content (`content_sid`, e.g. quick-reply buttons) instead of its plain text.

The dict shape (TOML files under bridge/templates/macros/, JSON in the API and in Redis):

    {"title": str, "locales": {"en": str, "fr": str, ...},
     "actions": {"status": str, "add_tags": [str], "remove_tags": [str],
                 "assignee": str ("" unassigns, "@me" is the applying agent),
                 "end_session": bool,
                 "content_sid": "HX…", "content_variables": {"1": "<jinja>"},
                 "fallback_content_sid": "HX…", "fallback_content_variables": {...}}}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bridge.core.tickets import Status, TransitionError, normalize_tags

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
CONTENT_SID_RE = re.compile(r"^HX[0-9a-fA-F]{32}$")
# Twilio's Content API: variable keys up to 16 characters, at most 100 per send.
_VAR_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,16}$")
MAX_VARIABLES = 100
MAX_TITLE = 120
SELF_ASSIGNEE = "@me"

_ACTION_KEYS = frozenset({
    "status", "add_tags", "remove_tags", "assignee", "end_session", "content_sid",
    "content_variables", "fallback_content_sid", "fallback_content_variables",
})
_MACRO_KEYS = frozenset({"title", "locales", "actions"})


class MacroError(ValueError):
    """A macro's shape is wrong; `field` names the offending part (dotted)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, kw_only=True)
class MacroActions:
    status: Status | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    # None leaves the assignee alone, "" unassigns, SELF_ASSIGNEE is the applying agent.
    assignee: str | None = None
    end_session: bool = False
    content_sid: str = ""
    content_variables: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    fallback_content_sid: str = ""
    fallback_content_variables: Mapping[str, str] = field(default_factory=lambda: _frozen({}))

    @property
    def changes_ticket(self) -> bool:
        return bool(
            self.status or self.add_tags or self.remove_tags or self.assignee is not None
            or self.end_session
        )

    def tags_after(self, current: Iterable[str]) -> list[str] | None:
        """The ticket's tags once applied, or None when the macro does not touch tags."""
        if not (self.add_tags or self.remove_tags):
            return None
        out = [t for t in current if t not in self.remove_tags]
        out += [t for t in self.add_tags if t not in out]
        return out

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.status is not None:
            data["status"] = self.status.value
        if self.add_tags:
            data["add_tags"] = list(self.add_tags)
        if self.remove_tags:
            data["remove_tags"] = list(self.remove_tags)
        if self.assignee is not None:
            data["assignee"] = self.assignee
        if self.end_session:
            data["end_session"] = True
        for key in ("content_sid", "fallback_content_sid"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        for key in ("content_variables", "fallback_content_variables"):
            if getattr(self, key):
                data[key] = dict(getattr(self, key))
        return data


@dataclass(frozen=True, kw_only=True)
class Macro:
    name: str
    title: str = ""
    locales: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    actions: MacroActions = field(default_factory=MacroActions)
    # 0 is the shipped default (bridge/templates/macros/); admin edits are 1, 2, ...
    version: int = 0
    updated_at_ms: int = 0
    updated_by: str = ""
    note: str = ""

    @property
    def sends(self) -> bool:
        """Whether applying it sends something to the customer."""
        return any(text.strip() for text in self.locales.values()) or bool(
            self.actions.content_sid
        )

    def to_dict(self) -> dict[str, Any]:
        """The editable part (what PUT takes and what a version stores)."""
        return {
            "title": self.title,
            "locales": dict(self.locales),
            "actions": self.actions.to_dict(),
        }

    def templates(self) -> dict[str, str]:
        """Every Jinja2 source of the macro, keyed for error reports: `locale:<xx>`,
        `content_variables.<k>`, `fallback_content_variables.<k>`."""
        out = {f"locale:{loc}": text for loc, text in self.locales.items()}
        for key in ("content_variables", "fallback_content_variables"):
            for var, text in getattr(self.actions, key).items():
                out[f"{key}.{var}"] = text
        return out


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise MacroError("name", "use 1-64 lower-case letters, digits, '_' or '-'")
    return name


def _str(value: Any, where: str, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise MacroError(where, "must be a string")
    if limit is not None and len(value) > limit:
        raise MacroError(where, f"must be at most {limit} characters")
    return value


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise MacroError(where, "must be a list of strings")
    try:
        return normalize_tags(value)
    except TransitionError as exc:
        raise MacroError(where, exc.message) from exc


def _variables(value: Any, where: str, *, source_limit: int) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise MacroError(where, "must be a table of variable -> template text")
    if len(value) > MAX_VARIABLES:
        raise MacroError(where, f"at most {MAX_VARIABLES} variables")
    out: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not _VAR_KEY_RE.match(key):
            raise MacroError(where, f"variable name {key!r} must be 1-16 letters or digits")
        out[key] = _str(text, f"{where}.{key}", limit=source_limit)
    return _frozen(out)


def _sid(value: Any, where: str) -> str:
    sid = _str(value, where)
    if sid and not CONTENT_SID_RE.match(sid):
        raise MacroError(where, "must be a Twilio Content SID (HX followed by 32 hex digits)")
    return sid


def parse_actions(data: Any, *, source_limit: int = 4096) -> MacroActions:
    if data is None:
        return MacroActions()
    if not isinstance(data, dict):
        raise MacroError("actions", "must be an object")
    unknown = set(data) - _ACTION_KEYS
    if unknown:
        raise MacroError(f"actions.{sorted(unknown)[0]}",
                         f"unknown action; use one of {', '.join(sorted(_ACTION_KEYS))}")
    status = None
    if data.get("status") is not None:
        raw = _str(data["status"], "actions.status")
        try:
            status = Status(raw)
        except ValueError:
            raise MacroError("actions.status",
                             f"unknown status {raw!r}; use one of "
                             f"{', '.join(s.value for s in Status if s is not Status.NEW)}"
                             ) from None
        if status is Status.NEW:
            raise MacroError("actions.status", "a ticket never goes back to new")
    end_session = data.get("end_session", False)
    if not isinstance(end_session, bool):
        raise MacroError("actions.end_session", "must be true or false")
    assignee = None
    if data.get("assignee") is not None:
        assignee = _str(data["assignee"], "actions.assignee", limit=64).strip()
    content_sid = _sid(data.get("content_sid", ""), "actions.content_sid")
    fallback_sid = _sid(data.get("fallback_content_sid", ""), "actions.fallback_content_sid")
    content_vars = _variables(data.get("content_variables", {}), "actions.content_variables",
                              source_limit=source_limit)
    fallback_vars = _variables(data.get("fallback_content_variables", {}),
                               "actions.fallback_content_variables", source_limit=source_limit)
    if content_vars and not content_sid:
        raise MacroError("actions.content_variables", "needs actions.content_sid")
    if fallback_vars and not fallback_sid:
        raise MacroError("actions.fallback_content_variables",
                         "needs actions.fallback_content_sid")
    return MacroActions(
        status=status,
        add_tags=_tags(data.get("add_tags", []), "actions.add_tags"),
        remove_tags=_tags(data.get("remove_tags", []), "actions.remove_tags"),
        assignee=assignee,
        end_session=end_session,
        content_sid=content_sid,
        content_variables=content_vars,
        fallback_content_sid=fallback_sid,
        fallback_content_variables=fallback_vars,
    )


def parse_macro(name: str, data: Any, *, source_limit: int = 4096, version: int = 0,
                updated_at_ms: int = 0, updated_by: str = "", note: str = "") -> Macro:
    """Check and build a macro from its dict shape. Raises MacroError naming the field.

    Template sources are only size-checked here; bridge.templating validates them."""
    check_name(name)
    if not isinstance(data, dict):
        raise MacroError("macro", "must be an object with locales and actions")
    unknown = set(data) - _MACRO_KEYS
    if unknown:
        raise MacroError(sorted(unknown)[0], "unknown field; use title, locales, actions")
    locales_raw = data.get("locales", {})
    if not isinstance(locales_raw, dict):
        raise MacroError("locales", "must be an object of locale -> template text")
    locales: dict[str, str] = {}
    for loc, text in locales_raw.items():
        if not isinstance(loc, str) or not LOCALE_RE.match(loc):
            raise MacroError("locales", f"{loc!r} is not a locale such as en, fr or pt-BR")
        text = _str(text, f"locales.{loc}")
        if len(text.encode()) > source_limit:
            raise MacroError(f"locales.{loc}",
                             f"template is {len(text.encode())} bytes; the limit is "
                             f"{source_limit}")
        locales[loc] = text
    actions = parse_actions(data.get("actions"), source_limit=source_limit)
    texts = [t for t in locales.values() if t.strip()]
    if texts and len(texts) != len(locales):
        raise MacroError("locales", "every locale needs a text (or leave all of them out)")
    if not locales and not actions.changes_ticket and not actions.content_sid:
        raise MacroError("macro", "a macro needs a text in at least one locale or an action")
    return Macro(
        name=name,
        title=_str(data.get("title", ""), "title", limit=MAX_TITLE),
        locales=_frozen(locales),
        actions=actions,
        version=version,
        updated_at_ms=updated_at_ms,
        updated_by=updated_by,
        note=note,
    )


def check_variants(macro: Macro, max_variants: int) -> None:
    """Saving and validating render every locale variant one after another: a macro may
    hold at most `max_variants` of them. Raises MacroError (field "locales")."""
    count = len(macro.locales)
    if count > max_variants:
        raise MacroError("locales", f"{count} locale variants; a macro may have at most "
                         f"{max_variants}")


def pick_locale(available: Iterable[str], wanted: str, default: str) -> str | None:
    """The variant to use for a contact: the exact locale, then its language (`fr-CA` ->
    `fr`), then a regional variant of that language, then the default locale, then
    English, then the first in sorted order."""
    have = sorted(available)
    if not have:
        return None
    wanted = wanted.strip()
    lang = wanted.split("-")[0].lower()
    for cand in (wanted, lang):
        if cand and cand in have:
            return cand
    for loc in have:
        if lang and loc.split("-")[0] == lang:
            return loc
    for cand in (default, default.split("-")[0], "en"):
        if cand and cand in have:
            return cand
    return have[0]
