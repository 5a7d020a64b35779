"""The webhook form parser agrees with urllib's strict parse_qsl on any input."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.channels.formdata import MalformedForm, parse_form

MAX_FIELDS = 20

# Text made mostly of the characters that matter to the parser; %26 and %3D (escaped "&"
# and "=") send it down its per-field path, their absence down its whole-body one.
_PIECES = [*"&=%+abcAB019fF", "%2", "%C3%A9", "%FF", "%E2%82", "é", "😀", "\x00", " ",
           "%26", "%3D", "%3d", "\ud800"]
_form_text = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


def _reference(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                         errors="strict", max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError included
        return None


def _ours(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_form(text, max_fields=MAX_FIELDS)
    except MalformedForm:
        return None


@settings(max_examples=800, deadline=None)  # a stall of a shared machine is no failure
@given(_form_text)
@example("")
@example("a=1&&b=2")
@example("a")
@example("=")
@example("a=%FF")
@example("a=%E2%82%AC+%2B")
@example("a=%zz&b=%4")
@example("a%3Db=c%26d=e")
@example("a=%C3&b=%A9")
@example("&".join(["a=1"] * MAX_FIELDS))
@example("&".join(["a=1"] * (MAX_FIELDS + 1)))
def test_same_pairs_or_same_refusal_as_parse_qsl(text: str) -> None:
    assert _ours(text) == _reference(text)


@settings(deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=40), max_size=15))
def test_round_trips_what_urlencode_builds(form: dict[str, str]) -> None:
    try:
        text = urlencode(form)
    except UnicodeEncodeError:  # lone surrogates cannot be sent at all
        return
    assert parse_form(text, max_fields=MAX_FIELDS) == list(form.items())


@pytest.mark.parametrize("text, reason", [
    ("Body=hi&From", "field without '='"),
    ("Body=%FF", "not UTF-8"),
    ("&".join(["a=1"] * (MAX_FIELDS + 1)), "too many fields"),
])
def test_refusals_say_why(text: str, reason: str) -> None:
    with pytest.raises(MalformedForm, match=reason):
        parse_form(text, max_fields=MAX_FIELDS)
