"""Ticket fields defined by admins: a core form every ticket has, plus per-group additions
(a country team's own fields). Pure: definitions, value checks, required-on-solve.

Values live on the ticket as one JSON object {key: value}; a field without a value is
absent. Value types: text (string), number (int or float), dropdown (one option),
multiselect (a list of options), checkbox (bool), date ("YYYY-MM-DD").
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.core.teams import check_name


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    DROPDOWN = "dropdown"
    MULTISELECT = "multiselect"
    CHECKBOX = "checkbox"
    DATE = "date"


MAX_TEXT_CHARS = 1000
MAX_OPTIONS = 200
MAX_FIELDS = 200
_DEFINITION_KEYS = frozenset({"key", "title", "type", "options", "required_on_solve",
                              "groups", "description"})


@dataclass(frozen=True, kw_only=True)
class FieldDef:
    key: str
    title: str
    type: FieldType
    options: tuple[str, ...] = ()
    required_on_solve: bool = False
    groups: frozenset[str] = frozenset()  # empty: the core form
    description: str = ""

    def on_form_of(self, group: str) -> bool:
        return not self.groups or group in self.groups

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "type": self.type.value,
                "options": list(self.options), "required_on_solve": self.required_on_solve,
                "groups": sorted(self.groups), "description": self.description}


def parse_definition(data: Mapping[str, Any]) -> FieldDef:
    """A definition from the admin API or config/fields.toml; ValueError says what is wrong."""
    unknown = set(data) - _DEFINITION_KEYS
    if unknown:
        raise ValueError(f"unknown field setting(s): {', '.join(sorted(unknown))}")
    key = check_name("key", data.get("key", ""))
    title = data.get("title", key)
    if not isinstance(title, str) or not 1 <= len(title) <= 100:
        raise ValueError(f"{key}: title must be a string of 1-100 characters")
    try:
        kind = FieldType(str(data.get("type")))
    except ValueError:
        raise ValueError(f"{key}: type must be one of {', '.join(FieldType)}") from None
    options = data.get("options", [])
    if not isinstance(options, list) or not all(
            isinstance(o, str) and 1 <= len(o) <= 100 for o in options):
        raise ValueError(f"{key}: options must be a list of strings of 1-100 characters")
    if len(set(options)) != len(options) or len(options) > MAX_OPTIONS:
        raise ValueError(f"{key}: options must be unique, at most {MAX_OPTIONS}")
    if kind in (FieldType.DROPDOWN, FieldType.MULTISELECT) and not options:
        raise ValueError(f"{key}: a {kind.value} field needs options")
    if kind not in (FieldType.DROPDOWN, FieldType.MULTISELECT) and options:
        raise ValueError(f"{key}: only dropdown and multiselect fields have options")
    required = data.get("required_on_solve", False)
    if not isinstance(required, bool):
        raise ValueError(f"{key}: required_on_solve must be true or false")
    groups = data.get("groups", [])
    if not isinstance(groups, list):
        raise ValueError(f"{key}: groups must be a list of group names")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise ValueError(f"{key}: description must be a string of at most 500 characters")
    return FieldDef(key=key, title=title, type=kind, options=tuple(options),
                    required_on_solve=required,
                    groups=frozenset(check_name("group", g) for g in groups),
                    description=description)


def check_value(definition: FieldDef, value: Any) -> Any:
    """The value as stored, or ValueError. None clears the field."""
    if value is None:
        return None
    key, kind = definition.key, definition.type
    if kind is FieldType.TEXT:
        if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or "\x00" in value:
            raise ValueError(f"{key}: text of at most {MAX_TEXT_CHARS} characters")
        return value
    if kind is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{key}: a number")
        return value
    if kind is FieldType.CHECKBOX:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: true or false")
        return value
    if kind is FieldType.DATE:
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{key}: a date as YYYY-MM-DD") from None
        return value
    if kind is FieldType.DROPDOWN:
        if value not in definition.options:
            raise ValueError(f"{key}: one of {', '.join(definition.options)}")
        return value
    if not isinstance(value, list) or not all(v in definition.options for v in value):
        raise ValueError(f"{key}: a list of {', '.join(definition.options)}")
    return [o for o in definition.options if o in value]  # the options' order, no repeats


def check_values(definitions: Iterable[FieldDef], group: str, values: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """Check a patch of values against the form of a ticket in `group`."""
    form = {d.key: d for d in definitions if d.on_form_of(group)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in form:
            raise ValueError(f"{key}: no such field on the form of "
                             f"{'group ' + group if group else 'tickets without a group'}")
        out[key] = check_value(form[key], value)
    return out


def merged(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = {**current, **patch}
    return {k: v for k, v in out.items() if v is not None}


def has_value(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value is not False


def missing_on_solve(definitions: Iterable[FieldDef], group: str,
                     values: Mapping[str, Any]) -> list[str]:
    """The required-on-solve fields of the ticket's form without a value (a checkbox must
    be ticked)."""
    return [d.key for d in definitions if d.required_on_solve and d.on_form_of(group)
            and not has_value(values.get(d.key))]
