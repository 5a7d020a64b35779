"""Saved views: conditions on tickets, a sort and an optional grouping (pure).

The store keeps one sorted set per view (and per group of a grouped view) of the tickets
its conditions match, scored by creation time, so that a view's count is ZCARD and a page
is a range read. Aging is the one condition that moves with the clock: it is a range of
creation times at read time (`aging_range`), which is why a view with an aging condition
only holds unsolved tickets (aging is defined for them only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.core.teams import check_name
from bridge.core.tickets import UNSOLVED, Aging, Status, Ticket


class GroupBy(StrEnum):
    STATUS = "status"
    ASSIGNEE = "assignee"


class Sort(StrEnum):
    CREATED_DESC = "created_desc"
    CREATED_ASC = "created_asc"


_CONDITION_KEYS = frozenset({"status", "status_below", "channel", "group", "assignee",
                             "unassigned", "tags_all", "tags_none", "fields", "aging"})
_VIEW_KEYS = frozenset({"name", "conditions", "sort", "group_by", "shared"})
# Every ticket change is checked against every view (the relay's teams consumer), and a new
# view is built from every ticket: views cost the whole desk, so they are bounded.
MAX_VIEWS = 500
MAX_PERSONAL_VIEWS = 50  # per person



@dataclass(frozen=True, kw_only=True)
class ViewConditions:
    status: frozenset[Status] = frozenset()
    channel: frozenset[str] = frozenset()
    group: frozenset[str] = frozenset()  # "" : tickets without a group
    assignee: frozenset[str] = frozenset()
    unassigned: bool | None = None
    tags_all: frozenset[str] = frozenset()
    tags_none: frozenset[str] = frozenset()
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)
    aging: frozenset[Aging] = frozenset()

    def matches(self, t: Ticket) -> bool:
        """Every condition but aging's clock (aging: the ticket must be unsolved)."""
        return ((not self.status or t.status in self.status)
                and (not self.channel or t.channel in self.channel)
                and (not self.group or t.group in self.group)
                and (not self.assignee or t.assignee in self.assignee)
                and (self.unassigned is None or self.unassigned == (not t.assignee))
                and self.tags_all <= set(t.tags)
                and not (self.tags_none & set(t.tags))
                and all(field_matches(t.field_values.get(k), v) for k, v in self.fields.items())
                and (not self.aging or t.status in UNSOLVED))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("status", "channel", "group", "assignee", "tags_all", "tags_none",
                     "aging"):
            value = getattr(self, name)
            if value:
                out[name] = sorted(str(v) for v in value)
        if self.unassigned is not None:
            out["unassigned"] = self.unassigned
        if self.fields:
            out["fields"] = dict(self.fields)
        return out


def field_matches(value: Any, wanted: Any) -> bool:
    """A field condition: equal, or for a multiselect value, containing the option."""
    if isinstance(value, list) and not isinstance(wanted, list):
        return wanted in value
    return bool(value == wanted)


@dataclass(frozen=True, kw_only=True)
class View:
    id: str
    name: str
    owner: str  # "" : shared
    conditions: ViewConditions
    sort: Sort = Sort.CREATED_DESC
    group_by: GroupBy | None = None
    version: int = 1

    def group_of(self, t: Ticket) -> str:
        if self.group_by is GroupBy.STATUS:
            return t.status.value
        if self.group_by is GroupBy.ASSIGNEE:
            return t.assignee
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "shared": not self.owner,
                "owner": self.owner or None, "conditions": self.conditions.to_dict(),
                "sort": self.sort.value,
                "group_by": self.group_by.value if self.group_by else None,
                "version": self.version}


def _names(data: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> frozenset[str]:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw) or len(raw) > 100:
        raise ValueError(f"conditions.{key} must be a list of at most 100 strings")
    if key.startswith("tags"):
        return frozenset(v.strip().lower() for v in raw)
    return frozenset(v if allow_empty and v == "" else check_name(key, v) for v in raw)


def parse_conditions(data: Mapping[str, Any]) -> ViewConditions:
    unknown = set(data) - _CONDITION_KEYS
    if unknown:
        raise ValueError(f"unknown condition(s): {', '.join(sorted(unknown))}")
    try:
        if not isinstance(data.get("status", []), list):
            raise TypeError
        status = frozenset(Status(s) for s in data.get("status", []))
    except (ValueError, TypeError):
        raise ValueError(f"conditions.status must list statuses of {', '.join(Status)}") from None
    if "status_below" in data:
        try:
            below = Status(data["status_below"])
        except ValueError:
            raise ValueError("conditions.status_below must be a status") from None
        order = list(Status)
        allowed = frozenset(order[:order.index(below)])
        status = status & allowed if status else allowed
        if not status:
            raise ValueError("conditions.status and status_below match no status")
    raw_channels = data.get("channel", [])
    if not isinstance(raw_channels, list) or not all(isinstance(c, str) for c in raw_channels):
        raise ValueError("conditions.channel must be a list of channels")
    channel = frozenset(raw_channels)
    unassigned = data.get("unassigned")
    if unassigned is not None and not isinstance(unassigned, bool):
        raise ValueError("conditions.unassigned must be true or false")
    fields = data.get("fields", {})
    if not isinstance(fields, dict) or len(fields) > 20:
        raise ValueError("conditions.fields must be an object of at most 20 field values")
    try:
        if not isinstance(data.get("aging", []), list):
            raise TypeError
        aging = frozenset(Aging(a) for a in data.get("aging", []))
    except (ValueError, TypeError):
        raise ValueError("conditions.aging must list ok, yellow, red") from None
    if aging == {Aging.OK, Aging.RED}:
        raise ValueError("conditions.aging: ok and red without yellow is not a range")
    return ViewConditions(
        status=status, channel=channel, group=_names(data, "group", allow_empty=True),
        assignee=_names(data, "assignee"), unassigned=unassigned,
        tags_all=_names(data, "tags_all"), tags_none=_names(data, "tags_none"),
        fields=dict(fields), aging=aging)


def parse_view(view_id: str, owner: str, data: Mapping[str, Any], *, version: int = 1) -> View:
    unknown = set(data) - _VIEW_KEYS
    if unknown:
        raise ValueError(f"unknown view setting(s): {', '.join(sorted(unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise ValueError("name must be a string of 1-100 characters")
    conditions = data.get("conditions", {})
    if not isinstance(conditions, dict):
        raise ValueError("conditions must be an object")
    try:
        sort = Sort(data.get("sort", Sort.CREATED_DESC))
    except ValueError:
        raise ValueError(f"sort must be one of {', '.join(Sort)}") from None
    group_by = data.get("group_by")
    try:
        grouping = GroupBy(group_by) if group_by is not None else None
    except ValueError:
        raise ValueError(f"group_by must be one of {', '.join(GroupBy)} (or null)") from None
    return View(id=view_id, name=name.strip(), owner=owner,
                conditions=parse_conditions(conditions), sort=sort, group_by=grouping,
                version=version)


def aging_range(aging: frozenset[Aging], *, now_ms: int, yellow_after_s: int,
                red_after_s: int) -> tuple[float, float]:
    """The creation times (min exclusive, max inclusive, in ms) of the unsolved tickets
    whose aging colour is in `aging` now (everything for no condition)."""
    inf = float("inf")
    if not aging:
        return -inf, inf
    red_before = now_ms - red_after_s * 1000  # created at or before: red
    yellow_before = now_ms - yellow_after_s * 1000
    bounds = {Aging.RED: (-inf, red_before), Aging.YELLOW: (red_before, yellow_before),
              Aging.OK: (yellow_before, inf)}
    low = min(bounds[a][0] for a in aging)
    high = max(bounds[a][1] for a in aging)
    return low, high


def views_refusal(views: list[View], owner: str) -> str | None:
    """Why one more view (personal when `owner`) may not be made now; None: it may."""
    if len(views) >= MAX_VIEWS:
        return f"there are {MAX_VIEWS} views already: delete one first"
    if owner and sum(1 for v in views if v.owner == owner) >= MAX_PERSONAL_VIEWS:
        return f"{owner} has {MAX_PERSONAL_VIEWS} personal views already: delete one first"
    return None
