"""bridge/core/teams.py by tables: ticket access and assignment rules per role."""

from __future__ import annotations

import pytest

from bridge.core.teams import (
    PERMISSIONS,
    Access,
    Actor,
    Permission,
    Person,
    Role,
    assignment_refusal,
    could_still_hold,
    ticket_access,
)

ADMIN = Actor(name="root", role=Role.ADMIN)
MANAGER = Actor(name="mgr", role=Role.MANAGER, groups=frozenset({"fr"}))
AGENT = Actor(name="ag", role=Role.AGENT, groups=frozenset({"fr"}))
READER = Actor(name="ro", role=Role.READ_ONLY, groups=frozenset({"fr"}))


@pytest.mark.parametrize(("actor", "group", "assignee", "access"), [
    (ADMIN, "sn", "x", Access.WORK),
    (MANAGER, "fr", "x", Access.WORK),
    (MANAGER, "sn", "", Access.NONE),
    (MANAGER, "", "", Access.WORK),
    (AGENT, "fr", "", Access.WORK),
    (AGENT, "fr", "ag", Access.WORK),
    (AGENT, "fr", "x", Access.READ),
    (AGENT, "sn", "ag", Access.WORK),  # assigned to them in another group
    (AGENT, "sn", "", Access.NONE),
    (AGENT, "", "x", Access.READ),
    (READER, "fr", "", Access.READ),
    (READER, "sn", "", Access.NONE),
])
def test_ticket_access(actor: Actor, group: str, assignee: str, access: Access) -> None:
    assert ticket_access(actor, group, assignee) is access


FR = frozenset({"fr"})
SN = frozenset({"sn"})


@pytest.mark.parametrize(("actor", "before", "after", "target_groups", "code"), [
    (ADMIN, ("", ""), ("sn", "x"), SN, None),
    (ADMIN, ("", ""), ("sn", "x"), FR, "not_a_member"),
    (MANAGER, ("fr", ""), ("fr", "x"), FR, None),
    (MANAGER, ("fr", ""), ("fr", "x"), SN, "not_a_member"),
    (MANAGER, ("", ""), ("", "x"), SN, "forbidden"),  # x is in none of mgr's groups
    (MANAGER, ("fr", ""), ("sn", ""), None, "forbidden"),
    (MANAGER, ("", ""), ("fr", ""), None, None),
    (AGENT, ("fr", ""), ("fr", "ag"), FR, None),  # take
    (AGENT, ("fr", "ag"), ("fr", ""), None, None),  # release
    (AGENT, ("fr", "x"), ("fr", "ag"), FR, "forbidden"),  # someone else's
    (AGENT, ("fr", ""), ("fr", "x"), FR, "forbidden"),
    (AGENT, ("fr", ""), ("", ""), None, "forbidden"),
    # Their own ticket to a group they are not in: the move is what is refused (403).
    (AGENT, ("fr", "ag"), ("en", "ag"), FR, "forbidden"),
    (AGENT, ("fr", "ag"), ("fr", "ag"), SN, "not_a_member"),  # no change, still checked
    (READER, ("fr", ""), ("fr", "ro"), FR, "forbidden"),
    (READER, ("fr", "x"), ("fr", "x"), FR, None),  # no change
])
def test_assignment_rules(actor: Actor, before: tuple[str, str], after: tuple[str, str],
                          target_groups: frozenset[str] | None, code: str | None) -> None:
    refusal = assignment_refusal(actor, current_group=before[0], current_assignee=before[1],
                                 group=after[0], assignee=after[1],
                                 assignee_groups=target_groups)
    assert (refusal.code if refusal else None) == code


def test_roles_nest() -> None:
    # An admin is not an agent: everything but taking a ticket.
    assert PERMISSIONS[Role.ADMIN] == frozenset(Permission) - {Permission.TICKETS_TAKE}
    assert PERMISSIONS[Role.READ_ONLY] < PERMISSIONS[Role.AGENT] < PERMISSIONS[Role.MANAGER]
    assert PERMISSIONS[Role.MANAGER] - {Permission.TICKETS_TAKE} < PERMISSIONS[Role.ADMIN]
    assert Permission.PEOPLE_MANAGE not in PERMISSIONS[Role.MANAGER]


FR_AGENT = Person(name="awa", role=Role.AGENT, groups=frozenset({"fr"}))


@pytest.mark.parametrize(("person", "group", "holds"), [
    (FR_AGENT, "fr", True),
    (FR_AGENT, "", True),  # the shared pool
    (FR_AGENT, "sn", False),  # not a member
    (Person(name="awa", role=Role.READ_ONLY, groups=frozenset({"fr"})), "fr", False),
    (Person(name="awa", role=Role.ADMIN), "", True),
    (Person(name="awa", role=Role.ADMIN), "fr", False),  # a group's ticket: its members
    (None, "", False),  # deleted
])
def test_who_could_still_hold_an_unsolved_ticket(person: Person | None, group: str,
                                                 holds: bool) -> None:
    assert could_still_hold(person, group) is holds
