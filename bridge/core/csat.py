"""Recognise a satisfaction rating in a customer's message (French and English)."""

from __future__ import annotations

import re
import unicodedata

from bridge.core.routing import RatingSignal

RATING_SCALE = (1, 2, 3, 4, 5)

# Button ids the bridge puts on survey quick replies: csat:<ticket-id>:<score>.
_PAYLOAD = re.compile(r"^csat:(?P<ticket>[A-Za-z0-9-]{1,32}):(?P<score>[1-5])$")

_WORDS: dict[str, int] = {
    # English
    "terrible": 1, "awful": 1, "very bad": 1, "bad": 2, "poor": 2, "ok": 3, "okay": 3,
    "average": 3, "good": 4, "great": 5, "excellent": 5, "very good": 5, "perfect": 5,
    # French
    "très mauvais": 1, "nul": 1, "mauvais": 2, "moyen": 3, "correct": 3, "bien": 4,
    "bon": 4, "très bien": 5, "très bon": 5, "parfait": 5,
}
_EMOJI: dict[str, int] = {
    "😡": 1, "😠": 1, "😞": 2, "🙁": 2, "☹️": 2, "😐": 3, "🙂": 4, "😊": 4, "👍": 4,
    "😀": 5, "😃": 5, "😍": 5, "🤩": 5, "❤️": 5, "⭐⭐⭐⭐⭐": 5,
}
_DIGITS = re.compile(r"^(?P<score>[1-5])(\s*(/\s*5|⭐|stars?|etoiles?))?$")
# Emoji variation selector and skin-tone modifiers: "❤" and "❤️", "👍" and "👍🏽" are one.
_EMOJI_NOISE = re.compile("[\ufe0f\U0001f3fb-\U0001f3ff]")


def _fold(text: str) -> str:
    """Lower case without accents ("Très" -> "tres", as people type on phones), emoji
    without variation selectors or skin tones."""
    if text.isascii():  # most messages: no accent or emoji to fold, and NFKD keeps ASCII
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _EMOJI_NOISE.sub("", plain)


_FOLDED_WORDS = {_fold(word): score for word, score in _WORDS.items()}
_FOLDED_EMOJI = {_fold(emoji): score for emoji, score in _EMOJI.items()}


def survey_payload(ticket_id: str, score: int) -> str:
    return f"csat:{ticket_id}:{score}"


def parse_rating_text(text: str) -> int | None:
    """A rating when the whole message is one: "5", "4/5", "bien", "👍". Otherwise None."""
    text = text.strip()
    if len(text) > 64:  # far longer than any rating, even before folding (most messages)
        return None
    # French typography puts a space before "!": "parfait !".
    cleaned = _fold(text).rstrip("!. ")
    if not cleaned or len(cleaned) > 20:
        return None
    match = _DIGITS.match(cleaned)
    if match:
        return int(match["score"])
    return _FOLDED_WORDS.get(cleaned) or _FOLDED_EMOJI.get(cleaned)


def rating_signal(*, body: str, button_payload: str, replied_to_id: str) -> RatingSignal:
    """Everything routing needs to decide whether a message answers a survey."""
    match = _PAYLOAD.match(button_payload.strip())
    if match:
        return RatingSignal(int(match["score"]), match["ticket"], replied_to_id)
    return RatingSignal(parse_rating_text(body), "", replied_to_id)
