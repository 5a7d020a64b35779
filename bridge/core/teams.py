"""People, groups and roles: who may do what, on which tickets (pure).

Four roles, as a help desk's field deployment organises its agents:

* admin: everything (the BRIDGE_ADMIN_TOKEN is the bootstrap admin);
* manager: works and assigns the tickets of their groups (to members of those groups);
* agent: sees the tickets of their groups, takes unassigned ones, works their own;
* read_only: reads the tickets of their groups.

A ticket without a group is in the shared pool every role sees (new conversations land
there unless config/teams.toml names a default group). The API checks each call twice:
the route against PERMISSIONS (`require(request, Permission.X)`), then the ticket against
`ticket_access` / `assignment_refusal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    AGENT = "agent"
    READ_ONLY = "read_only"


class Permission(StrEnum):
    TICKETS_READ = "tickets.read"  # list and read the tickets (and threads) one can see
    TICKETS_NOTE = "tickets.note"  # internal notes on the tickets one can see
    TICKETS_WORK = "tickets.work"  # reply, status, tags, fields, macros, end the session
    TICKETS_TAKE = "tickets.take"  # assign to oneself
    TICKETS_ASSIGN = "tickets.assign"  # assign to others (a manager: within their groups)
    TICKETS_ALL = "tickets.all"  # every ticket, whatever its group
    MACROS_READ = "macros.read"
    MACROS_EDIT = "macros.edit"
    REPORTS_READ = "reports.read"
    PEOPLE_READ = "people.read"  # the agents and groups (assignee pickers)
    PEOPLE_MANAGE = "people.manage"
    FIELDS_MANAGE = "fields.manage"
    VIEWS_READ = "views.read"
    VIEWS_PERSONAL = "views.personal"
    VIEWS_SHARED = "views.shared"
    AVAILABILITY = "availability"  # set oneself available for automatic assignment
    ADMIN = "admin"  # everything else only an admin does (export endpoints, ...)


_READ = frozenset({Permission.TICKETS_READ, Permission.MACROS_READ, Permission.REPORTS_READ,
                   Permission.PEOPLE_READ, Permission.VIEWS_READ})
_AGENT = _READ | {Permission.TICKETS_NOTE, Permission.TICKETS_WORK, Permission.TICKETS_TAKE,
                  Permission.VIEWS_PERSONAL, Permission.AVAILABILITY}

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # Not an agent (README's matrix): an admin assigns tickets but does not take one.
    Role.ADMIN: frozenset(Permission) - {Permission.TICKETS_TAKE},
    Role.MANAGER: _AGENT | {Permission.TICKETS_ASSIGN, Permission.VIEWS_SHARED},
    Role.AGENT: _AGENT,
    Role.READ_ONLY: _READ,
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_GROUPS = 50


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"{kind} must be 1-64 lower-case letters, digits, _ . - "
                         "(starting with a letter or digit)")
    return name


@dataclass(frozen=True, kw_only=True)
class Person:
    """An agent as the bridge knows them. `capacity`: how many active conversations
    automatic assignment gives them at most."""

    name: str
    role: Role
    display_name: str = ""
    locale: str = ""
    time_zone: str = ""
    groups: frozenset[str] = frozenset()
    capacity: int = 10
    available: bool = False


_LOCALE = re.compile(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
MAX_DISPLAY_NAME = 100
MAX_CAPACITY = 1000


def check_person(person: Person) -> Person:
    """The checks a person's values pass, whoever sets them (the API, `bridge agents`):
    ValueError says which failed. Group names and the time zone are the edges' to check
    against what exists."""
    if len(person.display_name) > MAX_DISPLAY_NAME:
        raise ValueError(f"display_name must be a string of at most {MAX_DISPLAY_NAME} "
                         "characters")
    if person.locale and not _LOCALE.fullmatch(person.locale):
        raise ValueError("locale must look like en, fr or pt-BR")
    if not 0 <= person.capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity must be a whole number from 0 to {MAX_CAPACITY}")
    # Read-only people work no tickets: in a group's rotation, assignment handed them
    # tickets they could not answer (and that kept them from being removed).
    if person.available and person.role is Role.READ_ONLY:
        raise ValueError("a read_only person works no tickets: they cannot be available "
                         "for assignment")
    return person


@dataclass(frozen=True, kw_only=True)
class Group:
    name: str
    description: str = ""


class Access(IntEnum):
    NONE = 0
    READ = 1  # read, and add notes where the role may
    WORK = 2


@dataclass(frozen=True, kw_only=True)
class Actor:
    """Who is asking: the authenticated principal's name, role and groups."""

    name: str
    role: Role
    groups: frozenset[str] = field(default_factory=frozenset)


def sees(actor: Actor, group: str, assignee: str) -> bool:
    """Whether the ticket (of `group`, assigned to `assignee`) is visible at all."""
    if allowed(actor.role, Permission.TICKETS_ALL):
        return True
    return not group or group in actor.groups or (bool(assignee) and assignee == actor.name)


def ticket_access(actor: Actor, group: str, assignee: str) -> Access:
    if not sees(actor, group, assignee):
        return Access.NONE
    if not allowed(actor.role, Permission.TICKETS_WORK):
        return Access.READ
    if allowed(actor.role, Permission.TICKETS_ASSIGN):
        return Access.WORK  # admins and managers work every ticket they see
    # Agents work their own and the unassigned ones; others' tickets they read (and note).
    return Access.WORK if assignee in ("", actor.name) else Access.READ


@dataclass(frozen=True)
class Refusal:
    code: str  # "not_a_member" (the request is wrong: 422) or "forbidden" (the role: 403)
    message: str


def _membership(group: str, assignee: str, assignee_groups: frozenset[str] | None
                ) -> Refusal | None:
    if assignee and group and assignee_groups is not None and group not in assignee_groups:
        return Refusal("not_a_member", f"{assignee} is not a member of group {group}")
    return None


def assignment_refusal(actor: Actor, *, current_group: str, current_assignee: str,
                       group: str, assignee: str, assignee_groups: frozenset[str] | None
                       ) -> Refusal | None:
    """Why `actor` may not move a ticket from (current_group, current_assignee) to
    (group, assignee) (None: allowed). `assignee_groups` is the new assignee's groups (None
    when the new assignee is nobody). A ticket with a group goes to a member of it."""
    if (group, assignee) == (current_group, current_assignee):
        return _membership(group, assignee, assignee_groups)
    # What the role forbids first: an agent moving a ticket to another group is refused
    # for the move (403), not told to join the group (422).
    if (not allowed(actor.role, Permission.TICKETS_ALL)
            and not allowed(actor.role, Permission.TICKETS_ASSIGN)):
        if not allowed(actor.role, Permission.TICKETS_TAKE):
            return Refusal("forbidden", "your role cannot assign tickets")
        if group != current_group:
            return Refusal("forbidden", "agents cannot move tickets between groups")
    if refusal := _membership(group, assignee, assignee_groups):
        return refusal
    if allowed(actor.role, Permission.TICKETS_ALL):
        return None
    if allowed(actor.role, Permission.TICKETS_ASSIGN):
        if group and group not in actor.groups:
            return Refusal("forbidden", "a manager assigns within their groups "
                                        f"({', '.join(sorted(actor.groups))})")
        if assignee and assignee != actor.name and not (
                assignee_groups is not None and assignee_groups & actor.groups):
            return Refusal("forbidden", f"{assignee} is in none of your groups")
        return None
    if not allowed(actor.role, Permission.TICKETS_TAKE):
        return Refusal("forbidden", "your role cannot assign tickets")
    if group != current_group:
        return Refusal("forbidden", "agents cannot move tickets between groups")
    if assignee == actor.name and current_assignee == "":
        return None  # take
    if assignee == "" and current_assignee == actor.name:
        return None  # release
    return Refusal("forbidden", "agents take unassigned tickets and release their own; "
                                "ask a manager")


def could_still_hold(person: Person | None, ticket_group: str) -> bool:
    """Whether `person` (None: deleted) may go on holding an unsolved ticket of
    `ticket_group` ("" : the shared pool) after an admin changes or deletes them: read-only
    people hold none, and a ticket with a group is held by a member of it. A change that
    leaves a ticket behind is refused until it is reassigned, instead of stranding it with
    someone who can no longer be its assignee (or no longer exists)."""
    if person is None or person.role is Role.READ_ONLY:
        return False
    return not ticket_group or ticket_group in person.groups


# How many tickets a refusal names at most.
STRANDED_NAMED = 10


def _listed(ticket_ids: list[str]) -> str:
    return ", ".join(ticket_ids) + (", ..." if len(ticket_ids) >= STRANDED_NAMED else "")


def holder_refusal(holder: str, ticket_ids: list[str]) -> str:
    return (f"{holder} holds unsolved tickets they could no longer hold "
            f"({_listed(ticket_ids)}): reassign them first")


def group_refusal(group: str, ticket_ids: list[str]) -> str:
    return (f"group {group} still has unsolved tickets ({_listed(ticket_ids)}): move them "
            "to another group first")


@dataclass(frozen=True, kw_only=True)
class TeamConfig:
    """config/teams.toml: the deployment's ticket options, automatic assignment, and the
    ticket fields kept as configuration (the admin API adds more in Redis)."""

    hold_enabled: bool = True
    auto_assign: bool = False
    # The group a new ticket joins ("" : the shared pool), per channel or by default.
    default_group: str = ""
    channel_groups: tuple[tuple[str, str], ...] = ()
    # Field definitions as TOML tables (checked by bridge.core.ticket_fields on load).
    field_tables: tuple[dict[str, object], ...] = ()

    def group_for_channel(self, channel: str) -> str:
        return dict(self.channel_groups).get(channel, self.default_group)

    @property
    def places_tickets(self) -> bool:
        """Whether a new ticket may be given an agent or a group (otherwise it waits in
        the shared pool as it was opened)."""
        return self.auto_assign or bool(self.default_group or self.channel_groups)


_TEAM_SECTIONS = {"tickets": {"hold_enabled"},
                  "assignment": {"auto", "default_group", "channel_groups"},
                  "fields": None}


def parse_team_config(data: dict[str, object]) -> TeamConfig:
    """Check and read config/teams.toml's tables; ValueError names what is wrong."""
    unknown = set(data) - set(_TEAM_SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}")
    tickets = data.get("tickets", {})
    assignment = data.get("assignment", {})
    fields = data.get("fields", [])
    if not isinstance(tickets, dict) or not isinstance(assignment, dict):
        raise ValueError("[tickets] and [assignment] must be tables")
    for section, table in (("tickets", tickets), ("assignment", assignment)):
        extra = set(table) - (_TEAM_SECTIONS[section] or set())
        if extra:
            raise ValueError(f"[{section}]: unknown setting(s) {sorted(extra)}")
    hold, auto = tickets.get("hold_enabled", True), assignment.get("auto", False)
    if not isinstance(hold, bool) or not isinstance(auto, bool):
        raise ValueError("hold_enabled and auto must be true or false")
    default_group = assignment.get("default_group", "")
    if default_group:
        check_name("[assignment] default_group", str(default_group))
    channel_groups = assignment.get("channel_groups", {})
    if not isinstance(channel_groups, dict):
        raise ValueError("[assignment.channel_groups] must map channels to group names")
    for group in channel_groups.values():
        check_name("[assignment.channel_groups] group", str(group))
    if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
        raise ValueError("[[fields]] must be tables")
    return TeamConfig(hold_enabled=hold, auto_assign=auto, default_group=str(default_group),
                      channel_groups=tuple(sorted((str(k), str(v))
                                                  for k, v in channel_groups.items())),
                      field_tables=tuple(fields))
