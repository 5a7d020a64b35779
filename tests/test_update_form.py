"""The ticket page's update form against what it showed (bridge/web/workspace/update_form.py),
as a table: only what the person changed is written."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict, MultiDictProxy

from bridge.core.tickets import Status, Ticket
from bridge.web.workspace.update_form import Changes, changes, shown_json

SHOWN = Ticket(id="1", contact_id="c", channel="whatsapp", status=Status.OPEN,
               created_at_ms=0, updated_at_ms=0, assignee="awa", tags=("old",), group="fr")
# Meanwhile: pending, a tag added.
NOW = Ticket(**{**SHOWN.__dict__, "status": Status.PENDING, "tags": ("old", "vip")})


def _form(shown: str | None = None, **values: str) -> MultiDictProxy[Any]:
    base = {"status": "open", "assignee": "awa", "tags": "old", "group": "fr", **values}
    if shown is not None:
        base["shown"] = shown
    return MultiDictProxy(MultiDict(base))


@pytest.mark.parametrize(("form", "expected"), [
    (_form(shown_json(SHOWN)), Changes()),
    (_form(shown_json(SHOWN), assignee="mgr"), Changes(assignee="mgr")),
    (_form(shown_json(SHOWN), tags=""), Changes(tags=["vip"])),
    (_form(shown_json(SHOWN), tags="old, new"), Changes(tags=["old", "vip", "new"])),
    (_form(shown_json(SHOWN), status="solved"), Changes(status=Status.SOLVED)),
    (_form(shown_json(SHOWN), group=""), Changes(group="")),
    # No `shown` (a page drawn before it existed), or one that cannot be read: the ticket
    # as it is now stands for what was shown.
    (_form(), Changes(status=Status.OPEN, tags=["old"])),
    (_form("[" * 5000), Changes(status=Status.OPEN, tags=["old"])),
    (_form("{not json"), Changes(status=Status.OPEN, tags=["old"])),
])
def test_only_what_was_changed_on_the_form_is_written(form: MultiDictProxy[Any],
                                                      expected: Changes) -> None:
    assert changes(form, NOW, []) == expected
