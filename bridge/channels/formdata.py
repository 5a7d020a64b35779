"""Strict application/x-www-form-urlencoded parsing for webhooks.

Same result as `urllib.parse.parse_qsl(text, keep_blank_values=True,
strict_parsing=True, errors="strict", max_num_fields=...)` (a property test holds it to
that), at about half the cost: parse_qsl makes six generic calls per field, and a Twilio
webhook has 15-25 fields on the hot path of every request. Decoding stays urllib's
`unquote`'s. When no escape decodes to "&" or "=" (%26, %3D: a Twilio body has none
unless a customer typed one), decoding the whole body once gives the same pairs as one
decode per name and value: an escape never spans a separator, and decoding creates none.
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_to_bytes


class MalformedForm(ValueError):
    """A field without "=", too many fields, or an escape that is not UTF-8."""


def parse_form(text: str, *, max_fields: int) -> list[tuple[str, str]]:
    """(name, value) pairs in order; "" gives no pairs."""
    if not text:
        return []
    if text.count("&") >= max_fields:
        raise MalformedForm("too many fields")
    if "%26" in text or "%3D" in text or "%3d" in text:
        return _per_field(text)
    try:
        # "+" first: an escaped plus (%2B) must stay a plus.
        raw = text.replace("+", " ").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (never in text decoded from bytes)
        return _per_field(text)
    fields = [field.partition("=") for field in _decode_utf8(raw).split("&")]
    for name, eq, _ in fields:
        if not eq:
            raise MalformedForm(f"field without '=': {name[:40]!r}")
    return [(name, value) for name, _, value in fields]


def _per_field(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for field in text.split("&"):
        name, eq, value = field.partition("=")
        if not eq:
            raise MalformedForm(f"field without '=': {field[:40]!r}")
        pairs.append((_decode(name), _decode(value)))
    return pairs


def _decode_utf8(raw: bytes) -> str:
    """`unquote(text, errors="strict")` on valid UTF-8 text, at half its cost: every byte
    the escapes give decoded at once, where unquote decodes each ASCII run. The same
    text is refused: the literal characters are whole UTF-8 sequences, so an escape
    cannot complete one, nor become valid beside one."""
    try:
        return unquote_to_bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedForm("a %-escape is not UTF-8") from None


def _decode(part: str) -> str:
    if "+" in part:
        part = part.replace("+", " ")
    if "%" not in part:
        return part
    try:
        return unquote(part, errors="strict")
    except UnicodeDecodeError:
        raise MalformedForm("a %-escape is not UTF-8") from None
