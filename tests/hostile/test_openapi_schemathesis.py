"""Schemathesis over the served OpenAPI document, against the real app on a real socket.

Stateless: every documented operation (the signed webhooks aside: test_signatures and
test_twilio_forms cover them) gets generated requests, positive and negative, with the agent
token; the macro routes get a second run with the admin token when they are served. Each
response must not be a 5xx and must match the documented status codes, content types and
schemas. The run is derandomized (same cases every time for a given document), 25 examples
per operation; `aim` points most path ids at seeded tickets and shipped macros.

Below the generated run: fixed cases the generator is unlikely to draw (Unicode digits in
query numbers, stream-id edges, extreme dates), and a table of refusals checked against the
status codes the document lists.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jsonschema
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bridge.store.macros import SHIPPED_DIR
from bridge.web.openapi import DOCUMENT
from tests.conftest import make_settings
from tests.factories import inbound_form, sign
from tests.hostile.conftest import ADMIN, AGENT, FORM_TYPE, live_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SEEDED_IDS = ["1", "2", "3"]
SHIPPED_MACROS = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))
MACROS_SERVED = importlib.util.find_spec("bridge.web.macros") is not None
REPORTS_SERVED = importlib.util.find_spec("bridge.web.reports") is not None


def ticket_pool(case: schemathesis.Case) -> list[str]:
    """Seeded tickets per kind of call, so that the calls which end a ticket's life (PATCH
    may close it, session/end ends it, a macro may do either) do not leave every ticket
    closed before the replies and notes run: 1 for reading and writing, 2 for macros, 3 for
    status changes and session ends."""
    path, method = case.operation.path, case.operation.method.upper()
    if path.endswith("/session/end") or method == "PATCH":
        return ["3"]
    if path.endswith("/macros/{name}"):
        return ["2"]
    return ["1", "2"]


def aim(case: schemathesis.Case) -> None:
    """Point most generated `{id}` / `{name}` path values at what exists (schemathesis cannot
    guess that ticket "1" or macro "greeting" exist), deterministically from the generated
    value so shrinking and replays stay stable; the rest stay as generated."""
    params = case.path_parameters or {}
    for name, pool in (("id", ticket_pool(case)), ("name", SHIPPED_MACROS)):
        if name in params:
            pick = zlib.crc32(str(params[name]).encode()) % 10
            if pick < 7:
                params[name] = pool[pick % len(pool)]


def _served(ctx: Any) -> bool:
    """Operations whose routes are registered in this tree (macros and reports land from
    bridge.web.macros / bridge.web.reports, optional imports in bridge.app)."""
    path = ctx.operation.path
    if path.startswith("/api/v1/macros") or path.endswith("/macros/{name}"):
        return MACROS_SERVED
    if path.startswith("/api/v1/reports"):
        return REPORTS_SERVED
    return True


def _is_macro(ctx: Any) -> bool:
    return bool(ctx.operation.path.startswith("/api/v1/macros"))


schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
schema.config.generation.update(max_examples=25)
schema = schema.exclude(path_regex=r"^/webhooks/").include(_served)
admin_schema = schema.exclude(lambda ctx: not _is_macro(ctx))

HYPOTHESIS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def live(redis_url: str) -> Iterator[str]:
    """A live server on 127.0.0.1 with three seeded tickets (ids 1-3) on a clean database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        with live_server(make_settings(redis_url)) as url:
            with httpx.Client(base_url=url, timeout=10) as http:
                for n, sender in enumerate(["whatsapp:+33600000001", "whatsapp:+33600000002",
                                            "whatsapp:US.13491208655302741918"]):
                    for body in (f"hello {n}", "second message"):
                        form = inbound_form(body, sender=sender)
                        answer = http.post("/webhooks/twilio", content=urlencode(form),
                                           headers={"Content-Type": FORM_TYPE,
                                                    "X-Twilio-Signature": sign(
                                                        "/webhooks/twilio", form)})
                        assert answer.status_code == 200, answer.text
                listing = http.get("/api/v1/tickets", headers=AGENT).json()
                assert sorted(t["id"] for t in listing["tickets"]) == SEEDED_IDS
                note = http.post("/api/v1/tickets/1/notes", json={"body": "seed"},
                                 headers=AGENT)
                assert note.status_code == 201
            yield url
    finally:
        client.flushdb()
        client.close()


def test_served_document_is_the_one_tested(live: str) -> None:
    served = httpx.get(f"{live}/api/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


def test_every_api_operation_is_covered() -> None:
    """No operation slips out of the run by accident: everything but the webhooks (and the
    macro/report routes while they are not served) is in."""
    tested = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    documented = {(m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item
                  if not p.startswith("/webhooks/")}
    unserved = {(m, p) for m, p in documented
                if ((p.startswith("/api/v1/macros") or p.endswith("/macros/{name}"))
                    and not MACROS_SERVED)
                or (p.startswith("/api/v1/reports") and not REPORTS_SERVED)}
    assert tested == documented - unserved
    assert ("GET", "/api/v1/tickets/{id}/events") in tested


def call_and_validate(case: schemathesis.Case, base_url: str, headers: dict[str, str]) -> None:
    aim(case)
    response = case.call(base_url=base_url, headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)


@schema.parametrize()
@HYPOTHESIS
def test_api_conforms_to_its_document(case: schemathesis.Case, live: str) -> None:
    call_and_validate(case, live, AGENT)


@pytest.mark.skipif(not MACROS_SERVED, reason="bridge.web.macros is not in this tree yet")
@admin_schema.parametrize()
@HYPOTHESIS
def test_macro_routes_conform_with_the_admin_token(case: schemathesis.Case, live: str) -> None:
    call_and_validate(case, live, ADMIN)


# --------------------------------------------------------------------------- explicit cases
# Inputs the generated run is unlikely to produce (it draws from the whole of Unicode), kept
# as fixed regressions.

@pytest.mark.parametrize(("path", "allowed"), [
    pytest.param("/api/v1/tickets?limit=%C2%B2", {422}),
    pytest.param("/api/v1/tickets?limit=" + "9" * 5000, {422}),
    pytest.param("/api/v1/tickets?cursor=%C2%B2", {422}),
    pytest.param("/api/v1/tickets?cursor=" + "9" * 5000, {422}),
    pytest.param("/api/v1/tickets/1/events?limit=%C2%B2", {422}),
    pytest.param("/api/v1/tickets/1/events?cursor=%C2%B2", {422}),
    pytest.param("/api/v1/tickets/1/events?cursor=99999999999999999999999", {200, 422}),
    pytest.param("/api/v1/tickets/1/events?cursor=18446744073709551616-0", {200, 422}),
    pytest.param("/api/v1/tickets/1/events?cursor=0-0", {200, 422}),
    pytest.param("/api/v1/reports/csat?until=0001-01-01", {200, 422}),
    pytest.param("/api/v1/reports/csat?since=9999-12-31&until=9999-12-31T23:59:59-14:00",
                 {200, 422}),
    # Must stay below 500:
    ("/api/v1/tickets?limit=%D9%A3", {200, 422}),  # Arabic-Indic 3
    ("/api/v1/tickets?cursor=99999999999999999999", {200, 422}),
    ("/api/v1/tickets?limit=0", {422}),
    ("/api/v1/tickets?limit=201", {422}),
    ("/api/v1/tickets?status=NEW", {422}),
    # contact= takes an id or a WhatsApp number only (400 invalid_contact otherwise);
    # channel= one of the channels (422).
    ("/api/v1/tickets?contact=%00&assignee=%ED%A0%80&channel=whatsapp", {400}),
    ("/api/v1/tickets?contact=%00&assignee=%ED%A0%80&channel=%F0%9F%98%80", {400, 422}),
    ("/api/v1/tickets?assignee=%ED%A0%80&channel=%F0%9F%98%80", {422}),
    ("/api/v1/tickets?assignee=%ED%A0%80&channel=widget", {200}),
    ("/api/v1/tickets?contact=%2B33%00", {400}),
    ("/api/v1/tickets?contact=%2B%D9%A3%D9%A3%D9%A3", {400}),  # Arabic-Indic digits
    ("/api/v1/tickets?contact=whatsapp:%2B" + "3" * 5000, {400}),
    ("/api/v1/tickets/%ED%A0%80", {404}),
    ("/api/v1/tickets/1/events?cursor=0", {200, 422}),
    ("/api/v1/tickets/1/events?cursor=1-2-3", {422}),
    ("/api/v1/tickets/1/events?cursor=-1", {422}),
    ("/api/v1/tickets/1/events?cursor=18446744073709551615-18446744073709551615", {200, 422}),
    ("/api/v1/reports/csat?since=%C2%B2", {422}),
    ("/api/v1/reports/csat?by=team", {422}),
])
def test_query_parameters_are_4xx_not_5xx(live: str, path: str, allowed: set[int]) -> None:
    response = httpx.get(live + path, headers=AGENT, timeout=10)
    assert response.status_code in allowed, (path, response.status_code, response.text[:200])
    if response.status_code >= 400:
        jsonschema.validate(response.json(), ERROR)


def test_report_period_is_iso_8601(live: str) -> None:
    response = httpx.get(f"{live}/api/v1/reports/csat?since=0001-01-01&until=0001-01-02",
                         headers=AGENT, timeout=10)
    assert response.status_code in (200, 422)
    if response.status_code == 200:
        for key in ("since", "until"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", response.json()[key])


# What the handlers answer for a body they refuse, against what the document lists.

ERROR = {"$ref": "#/components/schemas/Error", "components": DOCUMENT["components"]}
TOO_BIG = b'{"body": "' + b"x" * (make_settings().max_body_bytes + 1) + b'"}'
JSON_TYPE = {"Content-Type": "application/json"}
TEXT_TYPE = {"Content-Type": "text/plain"}


def _probe(method: str, path: str, auth: dict[str, str], body: bytes | None,
           headers: dict[str, str], expected: int, needs_macros: bool = False) -> Any:
    marks = []
    if needs_macros and not MACROS_SERVED:
        marks = [pytest.mark.skip(reason="macro routes are not served in this tree")]
    label = f"{method} {path} -> {expected}"
    return pytest.param(method, path, auth, body, headers, expected, id=label, marks=marks)


STATUS_PROBES = [
    # Documented today.
    _probe("GET", "/api/v1/tickets", {}, None, {}, 401),
    _probe("GET", "/api/v1/tickets/999", AGENT, None, {}, 404),
    _probe("GET", "/api/v1/tickets?limit=0", AGENT, None, {}, 422),
    _probe("GET", "/api/v1/tickets/1/events?cursor=abc", AGENT, None, {}, 422),
    _probe("PATCH", "/api/v1/tickets/1", AGENT, b"{}", TEXT_TYPE, 415),
    _probe("PATCH", "/api/v1/tickets/1", AGENT, b"{", JSON_TYPE, 400),
    _probe("PATCH", "/api/v1/tickets/1", AGENT, b'{"x": 1}', JSON_TYPE, 422),
    _probe("POST", "/api/v1/tickets/1/notes", AGENT, b"{}", TEXT_TYPE, 415),
    _probe("POST", "/api/v1/tickets/1/replies", AGENT, b"{}", TEXT_TYPE, 415),
    _probe("POST", "/api/v1/tickets/999/session/end", AGENT, None, {}, 404),
    _probe("PUT", "/api/v1/macros/greeting", AGENT, b"{}", JSON_TYPE, 403, needs_macros=True),
    _probe("PUT", "/api/v1/macros/greeting", ADMIN, b"{}", TEXT_TYPE, 415, needs_macros=True),
    _probe("POST", "/api/v1/macros/nonexistent/validate", AGENT, None, {}, 422,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/rollback", AGENT, b"{}", JSON_TYPE, 403,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/preview", AGENT, b"{}", TEXT_TYPE, 415,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/validate", AGENT, b"{}", TEXT_TYPE, 415,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/rollback", ADMIN, b"{}", TEXT_TYPE, 415,
           needs_macros=True),
    # Bodies over the limit and session/end's optional body.
    _probe("PATCH", "/api/v1/tickets/1", AGENT, TOO_BIG, JSON_TYPE, 413),
    _probe("POST", "/api/v1/tickets/1/notes", AGENT, TOO_BIG, JSON_TYPE, 413),
    _probe("POST", "/api/v1/tickets/1/replies", AGENT, TOO_BIG, JSON_TYPE, 413),
    _probe("POST", "/api/v1/tickets/1/session/end", AGENT, TOO_BIG, JSON_TYPE, 413),
    _probe("POST", "/api/v1/tickets/1/session/end", AGENT, b"{}", TEXT_TYPE, 415),
    _probe("POST", "/api/v1/tickets/1/session/end", AGENT, b"{", JSON_TYPE, 400),
    _probe("POST", "/api/v1/tickets/1/session/end", AGENT, b'{"x": 1}', JSON_TYPE, 422),
    _probe("PUT", "/api/v1/macros/greeting", ADMIN, TOO_BIG, JSON_TYPE, 413, needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/preview", AGENT, TOO_BIG, JSON_TYPE, 413,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/validate", AGENT, TOO_BIG, JSON_TYPE, 413,
           needs_macros=True),
    _probe("POST", "/api/v1/macros/greeting/rollback", ADMIN, TOO_BIG, JSON_TYPE, 413,
           needs_macros=True),
]


def documented_statuses(method: str, path: str) -> set[int]:
    """The status codes the document lists for the operation serving this concrete path."""
    bare = path.split("?", 1)[0]
    for template, item in DOCUMENT["paths"].items():
        pattern = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, bare) and method.lower() in item:
            return {int(code) for code in item[method.lower()]["responses"]}
    raise AssertionError(f"{method} {path} is not in the document")


@pytest.mark.parametrize(("method", "path", "auth", "body", "headers", "expected"),
                         STATUS_PROBES)
def test_refusals_are_answered_and_documented(
    live: str, method: str, path: str, auth: dict[str, str], body: bytes | None,
    headers: dict[str, str], expected: int
) -> None:
    response = httpx.request(method, live + path, content=body, headers={**auth, **headers},
                             timeout=10)
    assert response.status_code == expected, response.text[:200]
    jsonschema.validate(response.json(), ERROR)
    assert expected in documented_statuses(method, path), (
        f"{method} {path} answers {expected}, which the document does not list")
