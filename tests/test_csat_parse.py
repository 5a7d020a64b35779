"""Recognising a satisfaction rating in a customer's message (pure)."""

from __future__ import annotations

import pytest

from bridge.core.csat import parse_rating_text, rating_signal, survey_payload
from bridge.core.routing import RatingSignal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # digits, alone or out of five, with stars
        ("5", 5),
        ("1", 1),
        (" 3 ", 3),
        ("4/5", 4),
        ("4 / 5", 4),
        ("5/5", 5),
        ("1/5", 1),
        ("5 stars", 5),
        ("1 star", 1),
        ("5 stars!!", 5),
        ("2 étoiles", 2),
        ("2 etoiles", 2),
        ("5⭐", 5),
        ("4 ⭐", 4),
        ("5.", 5),
        ("５", 5),  # full-width digit from some keyboards
        # English words
        ("terrible", 1),
        ("Awful", 1),
        ("very bad", 1),
        ("bad", 2),
        ("poor", 2),
        ("ok", 3),
        ("OK!", 3),
        ("okay", 3),
        ("average", 3),
        ("good", 4),
        ("Good.", 4),
        ("great", 5),
        ("Excellent!", 5),
        ("very good", 5),
        ("Perfect", 5),
        # French words, with and without accents, French spacing before "!"
        ("très mauvais", 1),
        ("tres mauvais", 1),
        ("nul", 1),
        ("mauvais", 2),
        ("moyen", 3),
        ("correct", 3),
        ("bien", 4),
        ("Bien!", 4),
        ("bon", 4),
        ("très bien", 5),
        ("TRÈS BIEN", 5),
        ("tres bien", 5),
        ("très bon", 5),
        ("parfait", 5),
        ("parfait !", 5),
        ("Très bien !", 5),
        # emoji, with or without variation selector, with skin tones
        ("😡", 1),
        ("😠", 1),
        ("😞", 2),
        ("🙁", 2),
        ("☹️", 2),
        ("☹", 2),
        ("😐", 3),
        ("🙂", 4),
        ("😊", 4),
        ("👍", 4),
        ("👍🏽", 4),
        ("👍🏻", 4),
        ("😀", 5),
        ("😍", 5),
        ("🤩", 5),
        ("❤️", 5),
        ("❤", 5),
        ("⭐⭐⭐⭐⭐", 5),
    ],
)
def test_ratings(text: str, expected: int) -> None:
    assert parse_rating_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "5 euros please",
        "I paid 5",
        "0",
        "6",
        "10",
        "5/10",
        "4.5",
        "+5",
        "-1",
        "55",
        "5 😀",
        "not good",
        "pas bien",
        "pas mal du tout",
        "bonjour",
        "hello",
        "five",
        "super",
        "my order 12345 has not arrived",
        "x" * 30,
        "1" * 21,
        "👍👍",
        "⭐⭐⭐",
    ],
)
def test_not_ratings(text: str) -> None:
    assert parse_rating_text(text) is None


def test_survey_payload_round_trips() -> None:
    for score in (1, 2, 3, 4, 5):
        payload = survey_payload("1234", score)
        assert payload == f"csat:1234:{score}"
        assert rating_signal(body="", button_payload=payload, replied_to_id="") == RatingSignal(
            score, "1234", ""
        )


@pytest.mark.parametrize(
    ("body", "payload", "replied", "expected"),
    [
        # A survey button wins over the button's text.
        ("Excellent", "csat:42:2", "", RatingSignal(2, "42", "")),
        (" ", " csat:42:5 ", "SMx", RatingSignal(5, "42", "SMx")),
        # Not a survey button: the body is read.
        ("5", "menu:billing", "", RatingSignal(5, "", "")),
        ("bien", "", "SMsurvey", RatingSignal(4, "", "SMsurvey")),
        ("where is my order?", "", "SMsurvey", RatingSignal(None, "", "SMsurvey")),
        # Malformed survey payloads are not trusted.
        ("hi", "csat:42:9", "", RatingSignal(None, "", "")),
        ("hi", "csat:42:0", "", RatingSignal(None, "", "")),
        ("hi", "csat::5", "", RatingSignal(None, "", "")),
        ("hi", "csat:a b:5", "", RatingSignal(None, "", "")),
        ("hi", "csat:" + "9" * 33 + ":5", "", RatingSignal(None, "", "")),
        ("4", "csat:42:5:extra", "", RatingSignal(4, "", "")),
    ],
)
def test_rating_signal(body: str, payload: str, replied: str, expected: RatingSignal) -> None:
    assert rating_signal(body=body, button_payload=payload, replied_to_id=replied) == expected
