"""Sizes and shapes past the limits: bodies, headers, field counts, JSON depth, content types.

Every answer is a 4xx with the API's error shape (never a 5xx) and leaves Redis exactly as
it was.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from aiohttp.test_utils import TestClient
from multidict import MultiDict

from config.settings import Settings
from tests.factories import inbound_form, sign
from tests.hostile.conftest import ADMIN, AGENT, FORM_TYPE, customer_messages, snapshot

Client = TestClient[Any, Any]
INBOUND = "/webhooks/twilio"
STATUS = "/webhooks/twilio/status"
JSON = {"Content-Type": "application/json"}
MACROS_SERVED = importlib.util.find_spec("bridge.web.macros") is not None


@pytest.fixture
async def ticket(client: Client) -> str:
    """One open WhatsApp ticket (the customer wrote just now: the window is open)."""
    form = inbound_form("hello")
    response = await client.post(INBOUND, data=urlencode(form), headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, form)})
    assert response.status == 200
    listing = await (await client.get("/api/v1/tickets", headers=AGENT)).json()
    return str(listing["tickets"][0]["id"])


@dataclass(frozen=True)
class Write:
    """One API call that takes a JSON body: a valid body for it, who may call it, and the
    name of a free-text field it reads (None when it reads none)."""
    id: str
    verb: str
    path: str  # {t}: the ticket id
    payload: dict[str, Any]
    auth: dict[str, str]
    text_field: str | None

    def url(self, ticket: str) -> str:
        return self.path.format(t=ticket)


WRITES = [
    Write("patch", "PATCH", "/api/v1/tickets/{t}", {"status": "open"}, AGENT, "assignee"),
    Write("notes", "POST", "/api/v1/tickets/{t}/notes", {"body": "internal"}, AGENT, "body"),
    Write("replies", "POST", "/api/v1/tickets/{t}/replies", {"body": "public"}, AGENT, "body"),
    # Its only field, `reason`, is read and then ignored.
    Write("session-end", "POST", "/api/v1/tickets/{t}/session/end", {}, AGENT, None),
]
if MACROS_SERVED:
    WRITES += [
        Write("macro-put", "PUT", "/api/v1/macros/greeting", {"locales": {"en": "Hello"}},
              ADMIN, "title"),
        Write("macro-preview", "POST", "/api/v1/macros/greeting/preview", {"ticket_id": "{t}"},
              AGENT, "ticket_id"),
        Write("macro-validate", "POST", "/api/v1/macros/greeting/validate",
              {"locales": {"en": "Hello"}}, ADMIN, "title"),
        Write("macro-rollback", "POST", "/api/v1/macros/greeting/rollback", {"version": 0},
              ADMIN, None),
    ]
WRITE_IDS = [w.id for w in WRITES]


async def error_code(response: Any) -> str:
    assert response.content_type == "application/json", await response.text()
    return str((await response.json())["error"]["code"])


def padded_form(total_bytes: int) -> tuple[dict[str, str], str]:
    """A valid signed-able message whose urlencoded body is exactly total_bytes long
    (Twilio adds parameters without notice, so an unknown `Padding` field is legitimate)."""
    form = {**inbound_form("padded"), "Padding": ""}
    form["Padding"] = "x" * (total_bytes - len(urlencode(form)))
    body = urlencode(form)
    assert len(body.encode()) == total_bytes
    return form, body


# --------------------------------------------------------------------------- bodies

async def test_webhook_body_at_the_limit_is_accepted(
    client: Client, sync_redis: redis.Redis, settings: Settings
) -> None:
    form, body = padded_form(settings.max_body_bytes)
    response = await client.post(INBOUND, data=body, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, form)})
    assert response.status == 200
    assert customer_messages(sync_redis) == 1


@pytest.mark.parametrize("path", [INBOUND, STATUS])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_webhook_body_one_byte_over_is_413_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, settings: Settings, path: str, chunked: bool
) -> None:
    form, body = padded_form(settings.max_body_bytes + 1)
    before = snapshot(sync_redis)
    data: Any = body.encode()
    if chunked:  # no Content-Length: the limit must hold while reading too
        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096].encode()
        data = stream()
    response = await client.post(path, data=data, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(path, form)})
    assert response.status == 413
    assert await error_code(response) == "payload_too_large"
    assert snapshot(sync_redis) == before


def payload(write: Write, ticket: str) -> dict[str, Any]:
    return json.loads(json.dumps(write.payload).replace("{t}", ticket))


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
async def test_api_body_one_byte_over_is_413_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, settings: Settings, ticket: str, write: Write
) -> None:
    prefix = b'{"body": "'
    body = prefix + b"x" * (settings.max_body_bytes + 1 - len(prefix) - 2) + b'"}'
    assert len(body) == settings.max_body_bytes + 1
    before = snapshot(sync_redis)
    response = await client.request(write.verb, write.url(ticket), data=body,
                                    headers={**write.auth, **JSON})
    assert response.status == 413
    assert await error_code(response) == "payload_too_large"
    assert snapshot(sync_redis) == before


# --------------------------------------------------------------------------- headers

@pytest.mark.parametrize("path", [INBOUND, "/api/v1/tickets", "/healthz"])
@pytest.mark.parametrize("shape", ["one long header", "long signature", "200 headers",
                                   "long request line"])
async def test_oversized_headers_are_4xx_not_5xx(
    client: Client, sync_redis: redis.Redis, ticket: str, path: str, shape: str
) -> None:
    form = inbound_form("big headers")
    headers = {**AGENT, "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, form)}
    url = path
    if shape == "one long header":
        headers["X-Padding"] = "a" * 8191
    elif shape == "long signature":
        headers["X-Twilio-Signature"] = "A" * 9000
    elif shape == "200 headers":
        headers.update({f"X-H{i}": "1" for i in range(200)})
    else:
        url = path + "?q=" + "a" * 9000
    before = snapshot(sync_redis)
    response = await client.post(url, data=urlencode(form), headers=headers) \
        if path == INBOUND else await client.get(url, headers=headers)
    assert 400 <= response.status < 500, (shape, response.status)
    assert snapshot(sync_redis) == before


# --------------------------------------------------------------------------- field counts

@pytest.mark.parametrize("shape", ["10000 distinct fields", "10000 repeats of one field",
                                   "201 fields", "10000 empty pairs"])
async def test_many_form_fields_are_400_or_413(
    client: Client, sync_redis: redis.Redis, settings: Settings, shape: str
) -> None:
    base = list(inbound_form("many fields").items())
    if shape == "10000 distinct fields":
        pairs = base + [(f"F{i}", "") for i in range(10_000)]
    elif shape == "10000 repeats of one field":
        pairs = base + [("F", str(i % 10)) for i in range(10_000)]
    elif shape == "201 fields":
        pairs = base + [(f"F{i}", "") for i in range(201 - len(base))]
    else:
        pairs = base
    body = urlencode(pairs) + ("&" * 10_000 if shape == "10000 empty pairs" else "")
    before = snapshot(sync_redis)
    response = await client.post(INBOUND, data=body, headers={
        "Content-Type": FORM_TYPE, "X-Twilio-Signature": sign(INBOUND, MultiDict(pairs))})
    if len(body) <= settings.max_body_bytes:
        assert response.status == 400, shape
        assert await error_code(response) == "malformed"
    else:
        assert response.status == 413, shape
    assert snapshot(sync_redis) == before


# --------------------------------------------------------------------------- hostile JSON

def nested(depth: int, kind: str) -> str:
    if kind == "arrays":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# Regressions: json.loads raised RecursionError on deep nesting (not caught: 500), and a
# \ud800 escape, or UTF-8-encoded surrogate bytes (json.loads(bytes) decodes with
# surrogatepass), became a lone surrogate that redis-py cannot encode (500).
HOSTILE = ["nested arrays (5000)", "nested objects (5000)", "nested value in a known field",
           "lone surrogate escape", "UTF-8-encoded surrogate bytes", "lone surrogate in tags"]


def hostile_json(name: str, write: Write) -> bytes | None:
    """The hostile body for one write call, or None when the case does not apply."""
    field = write.text_field or "body"
    if name == "nested arrays (5000)":
        return nested(5000, "arrays").encode()
    if name == "nested objects (5000)":
        return nested(5000, "objects").encode()
    if name == "nested value in a known field":
        return (f'{{"{field}": ' + nested(3000, "arrays") + "}").encode()
    if write.text_field is None:
        return None
    if name == "lone surrogate escape":
        return f'{{"{field}": "a\\ud800b"}}'.encode()
    if name == "UTF-8-encoded surrogate bytes":
        return f'{{"{field}": "a'.encode() + b"\xed\xa0\x80" + b'b"}'
    if name == "lone surrogate in tags":
        return b'{"tags": ["\\udfff"]}' if write.id == "patch" else None
    raise AssertionError(name)


def _with_locales(write: Write, body: bytes) -> bytes:
    """PUT and validate need templates beside the hostile field to reach it."""
    if write.id not in ("macro-put", "macro-validate") or not body.startswith(b'{"title"'):
        return body
    return b'{"locales": {"en": "Hello"}, ' + body[1:]


HOSTILE_CASES = [
    (name, write, _with_locales(write, body)) for name in HOSTILE for write in WRITES
    if (body := hostile_json(name, write)) is not None
]


BENIGN_JSON: dict[str, str] = {
    "a huge string": json.dumps({"body": "x" * 60_000}),
    "5000 unknown keys": json.dumps({f"k{i}": i for i in range(5000)}),
    "10000 tags": json.dumps({"tags": [f"t{i}" for i in range(10_000)]}),
    "huge integer literal": '{"body": ' + "9" * 5000 + "}",
    "1e999 (infinity)": '{"body": 1e999}',
    "NaN literal": '{"body": NaN}',
    "duplicate keys": '{"body": "a", "body": ""}',
    "top-level array": "[1, 2, 3]",
    "top-level string": '"body"',
    "null": "null",
    "truncated": '{"body": "abc',
    "trailing garbage": '{"body": "a"} x',
    "invalid UTF-8": '{"body": "\udcff"}',  # sent as the raw byte 0xff, see below
    "NUL byte outside a string": '{"body": "a"}\x00',
}


@pytest.mark.parametrize(("name", "write", "body"), [
    pytest.param(name, w, body, id=f"{w.id}-{name}") for name, w, body in HOSTILE_CASES])
async def test_hostile_json_is_4xx_not_5xx(
    client: Client, ticket: str, name: str, write: Write, body: bytes
) -> None:
    response = await client.request(write.verb, write.url(ticket), data=body,
                                    headers={**write.auth, **JSON})
    assert response.status in (400, 404, 413, 422), (name, response.status)
    assert await error_code(response)


@pytest.mark.parametrize(("name", "write", "body"), [
    pytest.param(name, w, body, id=f"{w.id}-{name}") for name, w, body in HOSTILE_CASES])
async def test_hostile_json_writes_nothing(
    client: Client, sync_redis: redis.Redis, ticket: str, name: str, write: Write, body: bytes
) -> None:
    """Whatever the status, no partial write is left behind."""
    before = snapshot(sync_redis)
    response = await client.request(write.verb, write.url(ticket), data=body,
                                    headers={**write.auth, **JSON})
    assert response.status not in (200, 201, 202) or write.id == "macro-validate"
    assert snapshot(sync_redis) == before


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("name", list(BENIGN_JSON))
async def test_malformed_or_oversized_json_is_refused(
    client: Client, sync_redis: redis.Redis, ticket: str, name: str, write: Write
) -> None:
    body = BENIGN_JSON[name].encode("utf-8", "surrogateescape")
    before = snapshot(sync_redis)
    response = await client.request(write.verb, write.url(ticket), data=body,
                                    headers={**write.auth, **JSON})
    if (name == "null" and write.id.startswith("macro-")) or (
            name == "duplicate keys" and write.id == "macro-preview"):
        # The macro readers take `null`... as no draft, and preview ignores unknown-free
        # bodies it does not need: answered like an empty body. Not an error, not a write
        # beyond what the call does with an empty body.
        assert response.status < 500
        return
    assert response.status in (400, 413, 422), (name, response.status)
    assert await error_code(response) in {
        "malformed", "invalid", "too_long", "invalid_tag", "too_many_tags",
        "payload_too_large", "invalid_macro"}
    assert snapshot(sync_redis) == before


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
async def test_non_utf8_json_encodings_are_not_5xx(
    client: Client, ticket: str, write: Write, encoding: str
) -> None:
    """json.loads(bytes) also reads UTF-16/32 and a BOM: lenient, but never a 5xx."""
    body = json.dumps(payload(write, ticket)).encode(encoding)
    response = await client.request(write.verb, write.url(ticket), data=body,
                                    headers={**write.auth, **JSON})
    assert response.status < 500


# --------------------------------------------------------------------------- content types

WRONG_TYPES = ["text/plain", FORM_TYPE, "multipart/form-data; boundary=x", "application/xml",
               "application/jsonx", "application/x-json", "text/json", None]


@pytest.mark.parametrize("content_type", WRONG_TYPES, ids=lambda t: str(t))
@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
async def test_wrong_content_type_is_415_and_writes_nothing(
    client: Client, sync_redis: redis.Redis, ticket: str, write: Write,
    content_type: str | None
) -> None:
    headers = dict(write.auth)
    skip: list[str] = []
    if content_type is None:
        skip = ["Content-Type"]  # no Content-Type header at all
    else:
        headers["Content-Type"] = content_type
    before = snapshot(sync_redis)
    response = await client.request(write.verb, write.url(ticket),
                                    data=json.dumps(payload(write, ticket)).encode(),
                                    headers=headers, skip_auto_headers=skip)
    assert response.status == 415, (content_type, response.status)
    assert await error_code(response) == "unsupported_media_type"
    assert snapshot(sync_redis) == before


@pytest.mark.parametrize("write", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "Application/JSON"])
async def test_json_content_type_variants_are_accepted(
    client: Client, ticket: str, write: Write, content_type: str
) -> None:
    response = await client.request(write.verb, write.url(ticket),
                                    data=json.dumps(payload(write, ticket)).encode(),
                                    headers={**write.auth, "Content-Type": content_type})
    assert response.status in (200, 201, 202), (await response.text())


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None],
                         ids=lambda t: str(t))
async def test_webhook_refuses_other_content_types(
    client: Client, sync_redis: redis.Redis, content_type: str | None
) -> None:
    """A correctly signed form sent with another content type is still not a form."""
    form = inbound_form("typed")
    headers = {"X-Twilio-Signature": sign(INBOUND, form)}
    skip: list[str] = []
    if content_type is None:
        skip = ["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    response = await client.post(INBOUND, data=urlencode(form).encode(), headers=headers,
                                 skip_auto_headers=skip)
    assert response.status == 400
    assert await error_code(response) == "malformed"
    assert sync_redis.dbsize() == 0
