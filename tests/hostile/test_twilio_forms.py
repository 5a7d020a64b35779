"""Generated Twilio forms against the pure parser and the live, correctly signed handler.

The oracle for the live handler is the pure parser itself: a form that decode_form and
parse_inbound accept must be stored (200, exactly one more customer message, none for a
repeated MessageSid); one they refuse must be a 400 that leaves Redis byte-for-byte as it
was. Whatever the input, nothing but InvalidPayload may escape the parser and nothing but
200/400 may come back from the handler.
"""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy

from bridge.channels import twilio
from tests.conftest import ACCOUNT_SID
from tests.hostile.conftest import FORM_TYPE, customer_messages, signed_request, snapshot

Client = TestClient[Any, Any]
Pairs = list[tuple[str, str]]
PATH = "/webhooks/twilio"
MAX_FORM_BYTES = 48 * 1024  # well under max_body_bytes: a 413 is test_limits' business

HEX = "0123456789abcdef"
# Text without surrogates (they cannot be sent as UTF-8) but with everything else:
# controls, NUL, combining marks, emoji, right-to-left scripts.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
EMOJI = st.sampled_from(["👍", "😀", "❤️", "⭐⭐⭐⭐⭐", "🇫🇷", "👩‍👩‍👧", "\u200d", "\ufe0f"])


def _sid(prefix: str = "SM") -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=32, max_size=32).map(lambda h: prefix + h)


# A small pool of valid sids, so repeats (provider retries) happen often.
SID_POOL = ["SM" + c * 32 for c in "0123"] + ["MM" + "f" * 32]

MESSAGE_SID = st.one_of(
    st.sampled_from(SID_POOL),
    _sid("SM"),
    _sid("MM"),
    st.sampled_from(["", "SM", "sm" + "a" * 32, "SM" + "a" * 31, "SM" + "g" * 32,
                     "SM" + "a" * 33, "SM" + "a" * 32 + "\n", " SM" + "a" * 32,
                     "SM" + "٣" * 32]),
    TEXT,
)
FROM = st.one_of(
    st.sampled_from(["whatsapp:+33612345678", "whatsapp:+14155550100",
                     "whatsapp:US.13491208655302741918"]),
    st.text(string.digits, min_size=1, max_size=20).map(lambda d: "whatsapp:+" + d),
    st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=30)
    .map(lambda d: "whatsapp:US." + d),
    st.sampled_from(["", "whatsapp:", "whatsapp: +336", "+33612345678", "sms:+33612345678",
                     "whatsapp:+336\x00", "whatsapp:+" + "1" * 300, "whatsapp:" + "é" * 200,
                     "whatsapp:+33612345678\n", "WHATSAPP:+1", "whatsapp:😀"]),
    TEXT.map(lambda t: "whatsapp:" + t),
    TEXT,
)
BODY = st.one_of(
    TEXT,
    st.lists(EMOJI, max_size=30).map("".join),
    st.sampled_from(["", " ", "5", "4/5", "bien", "👍", "x" * twilio.MAX_BODY_CHARS,
                     "x" * (twilio.MAX_BODY_CHARS + 1), "é" * 3000, "a\x00b", "\r\n"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1000, max_size=1500),
)
NUM_MEDIA = st.one_of(
    st.integers(-3, 13).map(str),
    st.sampled_from(["", " 1", "1 ", "+1", "01", "0x1", "1.0", "²", "٣", "１", "1" * 5000]),
    TEXT,
)
COORD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "north", "nan", "inf", "-inf", "1e999", "48.8584", "1_0", "0x10",
                     " 12 ", "٣", "90.0000001"]),
    TEXT,
)
BUTTON_PAYLOAD = st.one_of(
    st.builds(lambda t, n: f"csat:{t}:{n}", st.text(string.ascii_letters + string.digits + "-",
                                                    max_size=40), st.integers(-1, 7)),
    st.builds(lambda t, n: f"csat:{t}:{n}", TEXT, TEXT),
    st.sampled_from(["csat:1:5", "csat::5", "csat:1:", "csat:1:5 ", "order-42"]),
    TEXT,
)
MEDIA_URL = st.one_of(
    st.just("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"),
    st.sampled_from(["", "ftp://x", "http://", "javascript:alert(1)"]),
    TEXT,
)
OTHER = st.sampled_from(["To", "ProfileName", "WaId", "ExternalUserId", "ButtonText",
                         "OriginalRepliedMessageSid", "MessageType", "Address", "Label",
                         "ChannelMetadata", "ReferralNumMedia", "SmsStatus", "Unknown"])
FIELDS: dict[str, st.SearchStrategy[str]] = {
    "MessageSid": MESSAGE_SID,
    "From": FROM,
    "Body": BODY,
    "NumMedia": NUM_MEDIA,
    "Latitude": COORD,
    "Longitude": COORD,
    "ButtonPayload": BUTTON_PAYLOAD,
}


VALID: dict[str, st.SearchStrategy[str]] = {
    "MessageSid": st.sampled_from(SID_POOL) | _sid("SM") | _sid("MM"),
    "From": st.sampled_from(["whatsapp:+33612345678", "whatsapp:+14155550100",
                             "whatsapp:US.13491208655302741918"]),
    "Body": st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
    | st.lists(EMOJI, min_size=1, max_size=10).map("".join),
}


@st.composite
def forms(draw: st.DrawFn) -> Pairs:
    """Either a well-formed message with one to three fields made hostile, or a random
    subset of the real fields with hostile values; MediaUrlN or not, extra Twilio fields,
    and repeated names now and then, in any order."""
    fields: dict[str, str] = {"AccountSid": ACCOUNT_SID}
    if draw(st.integers(0, 9)) < 6:
        fields.update({name: draw(strategy) for name, strategy in VALID.items()})
        for name in draw(st.lists(st.sampled_from(list(FIELDS)), min_size=0, max_size=3,
                                  unique=True)):
            fields[name] = draw(FIELDS[name])
    else:
        for name, strategy in FIELDS.items():
            if draw(st.booleans()):
                fields[name] = draw(strategy)
    pairs: Pairs = list(fields.items())
    for i in range(draw(st.integers(0, 3))):
        pairs.append((f"MediaUrl{i}", draw(MEDIA_URL)))
        if draw(st.booleans()):
            pairs.append((f"MediaContentType{i}", draw(st.sampled_from(["image/jpeg", ""]))))
    for _ in range(draw(st.integers(0, 3))):
        pairs.append((draw(OTHER), draw(TEXT)))
    if draw(st.integers(0, 4)) == 0:  # repeated names
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from([*FIELDS, "MediaUrl0"]))
            pairs.append((name, draw(FIELDS.get(name, MEDIA_URL))))
    order = draw(st.permutations(range(len(pairs))))
    return [pairs[i] for i in order]


def small(pairs: Pairs) -> bool:
    return len(urlencode(pairs).encode()) <= MAX_FORM_BYTES


def parse(body: bytes, content_type: str = FORM_TYPE) -> Any:
    """The pure path the handler takes: decode, then parse (signature aside)."""
    form = twilio.decode_form(body, content_type)
    return twilio.parse_inbound(form, received_at_ms=1_700_000_000_000)


# --------------------------------------------------------------------------- pure parser

@settings(max_examples=300, deadline=None)
@given(pairs=forms())
def test_parser_raises_only_invalid_payload(pairs: Pairs) -> None:
    body = urlencode(pairs).encode()
    try:
        msg = parse(body)
    except twilio.InvalidPayload:
        return
    # Accepted: what was kept is what was sent (first value of a repeated name wins).
    first = dict(reversed(pairs))
    assert msg.provider_id == first["MessageSid"]
    assert msg.contact_address == first["From"]
    assert msg.body == first.get("Body", "")
    assert msg.body or msg.media or msg.location or msg.button_payload


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from([*FIELDS, "MediaUrl0", "MediaUrl1"]),
                                st.text(max_size=30)), max_size=12))
def test_parse_inbound_on_any_multidict_raises_only_invalid_payload(pairs: Pairs) -> None:
    """parse_inbound straight on a MultiDict (surrogates and NUL included: no decode_form)."""
    try:
        msg = twilio.parse_inbound(MultiDictProxy(MultiDict(pairs)), received_at_ms=1)
    except twilio.InvalidPayload:
        return
    assert len(msg.media) <= twilio.MAX_MEDIA
    assert len(msg.body) <= twilio.MAX_BODY_CHARS
    assert msg.body or msg.media or msg.location or msg.button_payload


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2000),
       content_type=st.sampled_from([FORM_TYPE, "application/json", "text/plain", "",
                                     "multipart/form-data"]))
@example(body=b"MessageSid=SM1&Body=\xff\xfe", content_type=FORM_TYPE)
@example(body=b"a=%ED%A0%80", content_type=FORM_TYPE)  # an encoded lone surrogate
@example(body=b"a=%00", content_type=FORM_TYPE)
@example(body=b"&&&", content_type=FORM_TYPE)
@example(body=b"=", content_type=FORM_TYPE)
@example(body=b"a=1;b=2", content_type=FORM_TYPE)
@example(body=b"a=1&" * 201, content_type=FORM_TYPE)
def test_decode_form_on_any_bytes_raises_only_invalid_payload(body: bytes,
                                                              content_type: str) -> None:
    try:
        form = twilio.decode_form(body, content_type)
    except twilio.InvalidPayload:
        return
    for key, value in form.items():
        assert "\x00" not in key + value
        key.encode("utf-8")  # no lone surrogates survive decoding
        value.encode("utf-8")


@pytest.mark.parametrize("num_media", ["²", "٣", "１", "1" * 5000, "01" * 3])
def test_parser_numeric_fields_non_ascii_or_huge(num_media: str) -> None:
    """Regression: str.isdigit() is true for '²' and int('²') raises a plain ValueError (a
    500 from the webhook); int() also refuses more than 4300 digits."""
    body = urlencode({"MessageSid": SID_POOL[0], "From": "whatsapp:+1", "Body": "hi",
                      "NumMedia": num_media}).encode()
    with pytest.raises(twilio.InvalidPayload):
        parse(body)


@pytest.mark.parametrize("field", ["MessageSid", "From"])
def test_parser_refuses_a_trailing_newline(field: str) -> None:
    """Regression: a pattern ending in `$` also matches before a final newline."""
    form = {"MessageSid": SID_POOL[0], "From": "whatsapp:+33612345678", "Body": "hi"}
    form[field] += "\n"
    with pytest.raises(twilio.InvalidPayload):
        parse(urlencode(form).encode())


# --------------------------------------------------------------------------- live handler

@pytest.fixture
def history() -> dict[str, set[Any]]:
    """What the live handler stored so far in one test (shared by its examples)."""
    return {"accepted": set(), "sids": set()}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(pairs=forms().filter(small))
async def test_live_handler_agrees_with_the_parser(
    client: Client, sync_redis: redis.Redis, history: dict[str, set[Any]], pairs: Pairs
) -> None:
    data, headers = signed_request(PATH, pairs)
    try:
        msg = parse(data.encode())
        expected = 200
    except twilio.InvalidPayload:
        expected = 400
    before, count = snapshot(sync_redis), customer_messages(sync_redis)
    response = await client.post(PATH, data=data, headers=headers)
    text = await response.text()
    event(f"answered {response.status}")
    assert response.status == expected, (response.status, text, pairs)
    if expected == 400:
        assert (await response.json())["error"]["code"] in {"malformed", "invalid"}
        assert snapshot(sync_redis) == before, pairs
        return
    assert response.content_type == "text/xml" and "<Response/>" in text
    key = (msg.contact_address, msg.provider_id)
    added = customer_messages(sync_redis) - count
    if key in history["accepted"]:
        assert added == 0, pairs  # a provider retry is stored once
    elif msg.provider_id in history["sids"]:
        assert added in (0, 1), pairs  # the same sid from another contact: either will do
    else:
        assert added == 1, pairs
    history["accepted"].add(key)
    history["sids"].add(msg.provider_id)


@pytest.fixture
async def one_message(client: Client) -> None:
    """Something for the random bytes to damage: one stored message."""
    data, headers = signed_request(PATH, [("MessageSid", SID_POOL[0]),
                                          ("From", "whatsapp:+33612345678"), ("Body", "hi")])
    assert (await client.post(PATH, data=data, headers=headers)).status == 200


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=4000), signature=st.sampled_from(["", "x", "forged=="]))
@example(body=b"\xff\xfe", signature="x")
@example(body=b"a=%ED%A0%80", signature="x")
@example(body=urlencode({"MessageSid": SID_POOL[1], "From": "whatsapp:+1",
                         "Body": "unsigned"}).encode(), signature="x")
async def test_live_handler_on_random_bytes(
    client: Client, sync_redis: redis.Redis, one_message: None, body: bytes, signature: str
) -> None:
    """Raw bytes with the form content type, unsigned: 400 or 403, nothing written."""
    before = snapshot(sync_redis)
    assert before, "the fixture message is missing"
    headers = {"Content-Type": FORM_TYPE}
    if signature:
        headers["X-Twilio-Signature"] = signature
    response = await client.post(PATH, data=body, headers=headers)
    assert response.status in (400, 403), (response.status, body)
    assert (await response.json())["error"]["code"] in {"malformed", "bad_signature"}
    assert snapshot(sync_redis) == before


@pytest.mark.parametrize("num_media", ["²", "1" * 5000])
async def test_live_numeric_fields_non_ascii_or_huge_are_400(
    client: Client, sync_redis: redis.Redis, num_media: str
) -> None:
    data, headers = signed_request(PATH, [("MessageSid", SID_POOL[0]),
                                          ("From", "whatsapp:+1"), ("Body", "hi"),
                                          ("NumMedia", num_media)])
    response = await client.post(PATH, data=data, headers=headers)
    assert response.status == 400
    assert sync_redis.dbsize() == 0
