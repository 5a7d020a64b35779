"""French for the messages made at run time (bridge/web/workspace/i18n_messages.py): each
entry is a message the code makes, and a French page shows them in French."""

from __future__ import annotations

import ast
import html
import re
from http import HTTPStatus
from pathlib import Path

import pytest

import bridge
from bridge.web.workspace.i18n import french
from bridge.web.workspace.i18n_messages import _PATTERNS, FRENCH_MESSAGES
from tests.test_workspace_teams import Client, flash, person, teams, ticket_in
from tests.workspace_support import sign_in

HTTP_REASONS = {status.phrase for status in HTTPStatus}


def _messages_in_the_code() -> list[tuple[re.Pattern[str], int]]:
    """Every string literal of the package as a pattern, with the length of its fixed
    text: an f-string's values are wildcards (implicit concatenation is one literal by
    then)."""
    found: list[tuple[re.Pattern[str], int]] = []
    for path in Path(bridge.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((re.compile(re.escape(node.value)), len(node.value)))
            elif isinstance(node, ast.JoinedStr):
                fixed = [p.value for p in node.values if isinstance(p, ast.Constant)]
                found.append((re.compile("".join(
                    re.escape(p.value) if isinstance(p, ast.Constant) else ".*"
                    for p in node.values)), len("".join(fixed))))
    return found


def _skeleton(pattern: str) -> str:
    """The English of a pattern with each named part as {}."""
    return re.sub(r"\\(.)", r"\1", re.sub(r"\(\?P<\w+>[^()]*\)", "{}", pattern))


CODE = _messages_in_the_code()


def made_by_the_code(message: str) -> bool:
    """Some literal of the package gives `message` (its {} parts as any value), with at
    least half of the message's fixed words its own: f"ticket {id}" alone does not make
    "ticket {} is assigned to {}: ...", nor does f"{a}{b}" make everything."""
    fixed = len(message.replace("{}", ""))
    return any(pattern.fullmatch(message) and own * 2 >= fixed for pattern, own in CODE)


@pytest.mark.parametrize("english", sorted(FRENCH_MESSAGES))
def test_every_fixed_message_is_one_the_code_makes(english: str) -> None:
    # A reworded message would otherwise lose its French without a word.
    assert english in HTTP_REASONS or made_by_the_code(english), english


def test_a_message_no_code_makes_is_not_found() -> None:
    # The check below must be able to fail (an f-string of wildcards alone matched all).
    assert not made_by_the_code("utter nonsense {} that no code makes")
    assert not made_by_the_code(_skeleton(r"(?P<who>.+) is the king of group (?P<g>.+)"))
    assert not made_by_the_code("ticket {} is given to {}: only they or a manager can work it")
    assert made_by_the_code("ticket {} is assigned to {}: only they or a manager can work it")


@pytest.mark.parametrize("pattern", [pattern for pattern, _ in _PATTERNS])
def test_every_pattern_is_a_message_the_code_makes(pattern: str) -> None:
    skeleton = _skeleton(pattern)
    assert made_by_the_code(skeleton), skeleton


@pytest.mark.parametrize(("english", "expected"), [
    ("ticket 12 is assigned to awa: only they or a manager can work it",
     "le ticket 12 est assigné à awa : seuls cette personne ou un responsable peuvent le "
     "traiter"),
    ("ticket 7 belongs to group sn, which is not yours",
     "le ticket 7 appartient au groupe sn, qui n'est pas le vôtre"),
    ("fill these fields to solve: country, due",
     "remplissez ces champs pour résoudre : country, due"),
    ("order_no: a number", "order_no : un nombre"),
    ("products: a list of phone, sim, box", "products : une liste parmi phone, sim, box"),
    ("region: no such field on the form of tickets without a group",
     "region : ce champ n'est pas sur le formulaire des tickets sans groupe"),
    ("locales.fr: must be at most 100 characters", "locales.fr : doit faire au plus 100 "
     "caractères"),
    ("title: must be a string", "title : doit être un texte"),
    ("a closed ticket cannot change", "un ticket fermé ne change plus"),
    # Without a translation: the English, whole (a pattern's parts never swallow more).
    ("something nobody translated", "something nobody translated"),
    ("bob is not a member of group fr: ask an admin",
     "bob is not a member of group fr: ask an admin"),
    ("title: something nobody translated", "title: something nobody translated"),
])
def test_run_time_messages_read_in_french(english: str, expected: str) -> None:
    assert french(english) == expected


async def test_a_french_page_shows_the_refusals_in_french(client: Client) -> None:
    await teams(client)
    manager = await person(client, "mgr", "manager", ["fr"])
    tid = await ticket_in(client, "fr")
    csrf = await sign_in(client, manager)
    client.session.cookie_jar.update_cookies({"lang": "fr"})
    base = {"csrf_token": csrf, "status": "new", "assignee": "", "tags": "",
            "group": "fr", "fields_shown": "1"}
    for extra, expected in (
            ({"field.order_no": "forty-two"}, "error: order_no : un nombre"),
            ({"status": "solved"}, "error: remplissez ces champs pour résoudre : country"),
            ({"group": "nowhere"}, "error: le groupe doit être un groupe existant")):
        answer = await client.post(f"/app/tickets/{tid}/update", data={**base, **extra})
        assert flash(await answer.text()).startswith(expected), extra
    agent = await person(client, "awa", "agent", ["fr"])
    csrf = await sign_in(client, agent)
    forged = await client.post(f"/app/tickets/{tid}/update",
                               data={**base, "csrf_token": csrf, "group": "sn"})
    assert html.unescape(flash(await forged.text())) == (
        "error: les agents ne déplacent pas de tickets d'un groupe à l'autre")
