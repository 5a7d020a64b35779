"""Forged and replayed X-Twilio-Signature headers against the live handlers.

Every forged request must be answered 403 `bad_signature` and leave Redis byte-for-byte as
it was (one stored message is there beforehand, so a write into existing keys shows too).
Variations Twilio itself produces (parameter order, the default port, header-name case)
must stay valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator
from yarl import URL

from bridge.channels import twilio
from tests.conftest import AUTH_TOKEN
from tests.factories import PUBLIC_BASE_URL, inbound_form, new_sid, sign
from tests.hostile.conftest import FORM_TYPE, customer_messages, snapshot

Client = TestClient[Any, Any]
INBOUND = "/webhooks/twilio"
STATUS = "/webhooks/twilio/status"
HOST = PUBLIC_BASE_URL.removeprefix("https://")


@pytest.fixture
async def client(client: Client) -> Client:
    """The shared client (tests/conftest.py), with one message already stored."""
    form = inbound_form("already here", sender="whatsapp:+33600000000")
    body, headers = encode(form), signed_headers(INBOUND, form)
    assert (await client.post(INBOUND, data=body, headers=headers)).status == 200
    return client


def encode(form: dict[str, str] | list[tuple[str, str]]) -> str:
    return urlencode(form)


def signed_headers(path: str, form: Any, **kwargs: str) -> dict[str, str]:
    return {"Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(path, form, **kwargs)}


def hmac_b64(key: str, message: str, digest: Any = hashlib.sha1) -> str:
    return base64.b64encode(hmac.new(key.encode(), message.encode(), digest).digest()).decode()


def twilio_string(url: str, form: dict[str, str]) -> str:
    """What Twilio signs: the URL, then every name+value, names sorted."""
    return url + "".join(k + form[k] for k in sorted(form))


@dataclass
class Forged:
    """One request: `path` it is posted to, the form sent, the headers sent."""
    path: str = INBOUND
    form: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # when the body is not just encode(form)
    headers: dict[str, str] = field(default_factory=dict)


def _case(build: Callable[[dict[str, str]], Forged]) -> Callable[[], Forged]:
    def make() -> Forged:
        return build(inbound_form("forged?", sender="whatsapp:+33699999999"))
    return make


def _swap(f: dict[str, str], **changes: str) -> dict[str, str]:
    return {**f, **changes}


FORGED: dict[str, Callable[[], Forged]] = {
    "no header": _case(lambda f: Forged(form=f, headers={"Content-Type": FORM_TYPE})),
    "empty header": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": ""})),
    "whitespace-only header": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": "   "})),
    "space inside the signature": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE,
        "X-Twilio-Signature": sign(INBOUND, f)[:10] + " " + sign(INBOUND, f)[10:]})),
    "signature case-swapped": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, f).swapcase()})),
    "signature truncated": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, f)[:-2]})),
    "hex digest instead of base64": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": hmac.new(
            AUTH_TOKEN.encode(), twilio_string(PUBLIC_BASE_URL + INBOUND, f).encode(),
            hashlib.sha1).hexdigest()})),
    "HMAC-SHA256 with the right token": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": hmac_b64(
            AUTH_TOKEN, twilio_string(PUBLIC_BASE_URL + INBOUND, f), hashlib.sha256)})),
    "wrong token": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, token="not-the-token"))),
    "token with a trailing space": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, token=AUTH_TOKEN + " "))),
    "empty token": _case(lambda f: Forged(form=f, headers={
        "Content-Type": FORM_TYPE,
        "X-Twilio-Signature": hmac_b64("", twilio_string(PUBLIC_BASE_URL + INBOUND, f))})),
    "http instead of https": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, base="http://" + HOST))),
    "other host": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, base="https://evil.example.com"))),
    "host with another case": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, base="https://" + HOST.upper()))),
    "non-default port": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, f, base=PUBLIC_BASE_URL + ":8443"))),
    "other path": _case(lambda f: Forged(form=f, headers=signed_headers("/webhooks/other", f))),
    "path with a trailing slash": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND + "/", f))),
    "signed with a query, posted without": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND + "?source=proxy", f))),
    "posted with an extra query": _case(lambda f: Forged(
        path=INBOUND + "?extra=1", form=f, headers=signed_headers(INBOUND, f))),
    "query reordered": _case(lambda f: Forged(
        path=INBOUND + "?b=2&a=1", form=f, headers=signed_headers(INBOUND + "?a=1&b=2", f))),
    "extra parameter": _case(lambda f: Forged(form=_swap(f, Injected="1"),
                                              headers=signed_headers(INBOUND, f))),
    "missing parameter": _case(lambda f: Forged(
        form={k: v for k, v in f.items() if k != "ProfileName"},
        headers=signed_headers(INBOUND, f))),
    "value changed": _case(lambda f: Forged(form=_swap(f, Body="tampered"),
                                            headers=signed_headers(INBOUND, f))),
    "repeated parameter added": _case(lambda f: Forged(
        form=f, body=encode(f) + "&Body=second", headers=signed_headers(INBOUND, f))),
    "signature of an empty form": _case(lambda f: Forged(form=f, headers=signed_headers(
        INBOUND, {}))),
    "signature of the URL alone (JSON-style, no bodySHA256)": _case(lambda f: Forged(
        form=f, headers={"Content-Type": FORM_TYPE, "X-Twilio-Signature": hmac_b64(
            AUTH_TOKEN, PUBLIC_BASE_URL + INBOUND)})),
    "status-route signature replayed on the inbound route": _case(lambda f: Forged(
        form=f, headers=signed_headers(STATUS, f))),
    "inbound signature replayed on the status route": _case(lambda f: Forged(
        path=STATUS, form=_swap(f, MessageStatus="delivered"),
        headers=signed_headers(INBOUND, _swap(f, MessageStatus="delivered")))),
}


@pytest.mark.parametrize("case", list(FORGED))
async def test_forged_signature_is_403_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, case: str
) -> None:
    forged = FORGED[case]()
    before = snapshot(sync_redis)
    body = forged.body if forged.body is not None else encode(forged.form)
    response = await client.post(forged.path, data=body, headers=forged.headers)
    assert response.status == 403, (case, await response.text())
    assert (await response.json())["error"]["code"] == "bad_signature"
    assert snapshot(sync_redis) == before, case


# Variations Twilio produces or HTTP allows: each must still be accepted and stored once.
VALID: dict[str, Callable[[dict[str, str]], tuple[str, str, dict[str, str]]]] = {
    "parameters in another order than signed (Twilio sorts them)": lambda f: (
        INBOUND, encode(sorted(f.items(), reverse=True)), signed_headers(INBOUND, f)),
    "parameters in the signed order": lambda f: (
        INBOUND, encode(f), signed_headers(INBOUND, f)),
    "explicit default port :443 in the signed URL": lambda f: (
        INBOUND, encode(f), signed_headers(INBOUND, f, base=PUBLIC_BASE_URL + ":443")),
    "query string kept byte for byte": lambda f: (
        INBOUND + "?b=2&a=%27x%27", encode(f), signed_headers(INBOUND + "?b=2&a=%27x%27", f)),
    "header name in lower case": lambda f: (
        INBOUND, encode(f), {"content-type": FORM_TYPE,
                             "x-twilio-signature": sign(INBOUND, f)}),
    # RFC 9110: optional whitespace around a field value is not part of the value.
    "signature with surrounding optional whitespace": lambda f: (
        INBOUND, encode(f), {"Content-Type": FORM_TYPE,
                             "X-Twilio-Signature": " " + sign(INBOUND, f) + "\t"}),
    "percent-encoded spaces and plus signs": lambda f: (
        INBOUND, encode(f).replace("+", "%20"), signed_headers(INBOUND, f)),
    "charset parameter on the content type": lambda f: (
        INBOUND, encode(f), {"Content-Type": FORM_TYPE + "; charset=utf-8",
                             "X-Twilio-Signature": sign(INBOUND, f)}),
}


@pytest.mark.parametrize("case", list(VALID))
async def test_variations_twilio_produces_stay_valid(
    client: Client, sync_redis: redis.Redis, case: str
) -> None:
    form = inbound_form("a valid variation + spaces", sender="whatsapp:+33611111111")
    path, body, headers = VALID[case](form)
    before = customer_messages(sync_redis)
    # encoded=True: send the query exactly as written (yarl would turn %27 into ').
    response = await client.post(URL(path, encoded=True), data=body, headers=headers)
    assert response.status == 200, (case, await response.text())
    assert customer_messages(sync_redis) == before + 1


async def test_replayed_valid_request_is_200_and_stored_once(
    client: Client, sync_redis: redis.Redis
) -> None:
    form = inbound_form("replay me", sender="whatsapp:+33622222222")
    body, headers = encode(form), signed_headers(INBOUND, form)
    before = customer_messages(sync_redis)
    first = await client.post(INBOUND, data=body, headers=headers)
    assert first.status == 200
    state = snapshot(sync_redis)
    for _ in range(3):
        again = await client.post(INBOUND, data=body, headers=headers)
        assert again.status == 200
        assert again.content_type == "text/xml"
    assert customer_messages(sync_redis) == before + 1
    # The thread and ticket are untouched by the replays (the dedupe set may only be
    # refreshed, never grown).
    after = snapshot(sync_redis)
    changed = {k for k in after.keys() | state.keys() if after.get(k) != state.get(k)}
    assert all(k.endswith(b":seen") for k in changed), changed


async def test_name_value_boundary_shift_is_never_stored(
    client: Client, sync_redis: redis.Redis
) -> None:
    """Twilio concatenates names and values without delimiters, so `Body=hi` and
    `Bodyhi=` sign alike: a property of Twilio's scheme, not of the bridge. What the bridge
    owes is that such a shifted form, whose signature checks out, is refused as a message
    (400) and writes nothing."""
    form = inbound_form("hi", sender="whatsapp:+33644444444")
    shifted = {**{k: v for k, v in form.items() if k != "Body"}, "Bodyhi": ""}
    assert twilio_string("u", form) == twilio_string("u", shifted)
    before = snapshot(sync_redis)
    response = await client.post(INBOUND, data=encode(shifted),
                                 headers=signed_headers(INBOUND, form))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid"
    assert snapshot(sync_redis) == before


async def test_replay_with_a_new_sid_is_forged(client: Client, sync_redis: redis.Redis) -> None:
    """Re-using a captured signature with a fresh MessageSid (to get past dedupe) is a
    changed parameter: 403."""
    form = inbound_form("captured", sender="whatsapp:+33633333333")
    headers = signed_headers(INBOUND, form)
    assert (await client.post(INBOUND, data=encode(form), headers=headers)).status == 200
    before = snapshot(sync_redis)
    sid = new_sid()
    replay = {**form, "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid}
    response = await client.post(INBOUND, data=encode(replay), headers=headers)
    assert response.status == 403
    assert snapshot(sync_redis) == before


@pytest.mark.parametrize("case", ["wrong token", "other path", "missing parameter", "empty"])
async def test_forged_status_callbacks_are_403_and_write_nothing(
    client: Client, sync_redis: redis.Redis, case: str
) -> None:
    form = {"MessageSid": new_sid(), "MessageStatus": "delivered", "AccountSid": "AC1"}
    headers = {
        "wrong token": signed_headers(STATUS, form, token="nope"),
        "other path": signed_headers(INBOUND, form),
        "missing parameter": signed_headers(STATUS, {**form, "ErrorCode": "30008"}),
        "empty": {"Content-Type": FORM_TYPE, "X-Twilio-Signature": ""},
    }[case]
    before = snapshot(sync_redis)
    response = await client.post(STATUS, data=encode(form), headers=headers)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "bad_signature"
    assert snapshot(sync_redis) == before


# ------------------------------------------------- the published vector (protocols.md §2.1)

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PORT_URL = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
                 "To": "+18005551212", "Caller": "+14158675309"}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
VECTOR_PORT_SIGNATURE = "kvajT1Ptam85bY51eRf/AJRuM3w="


def vector_form(params: dict[str, str] = VECTOR_PARAMS) -> twilio.FormData:
    return MultiDictProxy(MultiDict(params))


def test_published_vector_by_hand() -> None:
    """The vector itself, recomputed with plain hmac: the algorithm is what we think."""
    assert hmac_b64("12345", twilio_string(VECTOR_URL, VECTOR_PARAMS)) == VECTOR_SIGNATURE
    assert hmac_b64("12345", twilio_string(VECTOR_PORT_URL, VECTOR_PARAMS)) == (
        VECTOR_PORT_SIGNATURE)


@pytest.mark.parametrize(("url", "signature"), [
    (VECTOR_URL, VECTOR_SIGNATURE),
    (VECTOR_URL, VECTOR_PORT_SIGNATURE),  # Twilio signed with :443, we know the URL without
    (VECTOR_PORT_URL, VECTOR_SIGNATURE),
    (VECTOR_PORT_URL, VECTOR_PORT_SIGNATURE),
])
def test_published_vector_is_valid(url: str, signature: str) -> None:
    assert twilio.signature_valid(url=url, form=vector_form(), signature=signature,
                                  auth_token="12345")


@pytest.mark.parametrize(("case", "url", "params", "signature", "token"), [
    ("wrong token", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, "54321"),
    ("empty token", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, ""),
    ("empty signature", VECTOR_URL, VECTOR_PARAMS, "", "12345"),
    ("http", VECTOR_URL.replace("https", "http"), VECTOR_PARAMS, VECTOR_SIGNATURE, "12345"),
    ("query reordered", "https://mycompany.com/myapp.php?bar=2&foo=1", VECTOR_PARAMS,
     VECTOR_SIGNATURE, "12345"),
    ("query dropped", "https://mycompany.com/myapp.php", VECTOR_PARAMS, VECTOR_SIGNATURE,
     "12345"),
    # Signed for another port than the URL we know (twilio-python strips any port from
    # *our* URL, so only this direction is refused).
    ("signed for port 8443", VECTOR_URL, VECTOR_PARAMS, hmac_b64("12345", twilio_string(
        "https://mycompany.com:8443/myapp.php?foo=1&bar=2", VECTOR_PARAMS)), "12345"),
    ("digit changed", VECTOR_URL, {**VECTOR_PARAMS, "Digits": "1235"}, VECTOR_SIGNATURE,
     "12345"),
    ("extra param", VECTOR_URL, {**VECTOR_PARAMS, "X": ""}, VECTOR_SIGNATURE, "12345"),
    ("case-swapped signature", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE.swapcase(),
     "12345"),
])
def test_published_vector_forgeries_are_invalid(
    case: str, url: str, params: dict[str, str], signature: str, token: str
) -> None:
    assert not twilio.signature_valid(url=url, form=vector_form(params), signature=signature,
                                      auth_token=token), case


# ------------------------------------------ the fast HMAC against twilio-python's algorithm

_names = st.sampled_from(["Body", "From", "To", "MediaUrl0", "b", "B", "a", "é", ""])
_values = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(url=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),
       pairs=st.lists(st.tuples(_names, _values), max_size=8),
       token=st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1,
                     max_size=20))
def test_fast_signature_is_twilio_pythons(url: str, pairs: list[tuple[str, str]],
                                           token: str) -> None:
    """Repeated names, repeated pairs, any order and any text: the same signature as
    RequestValidator.compute_signature, which signature_valid falls back to."""
    form = MultiDictProxy(MultiDict(pairs))
    expected = RequestValidator(token).compute_signature(url, form)
    assert twilio._signature(url, form, token).decode() == expected
    assert twilio.signature_valid(url=url, form=form, signature=expected, auth_token=token)
