"""The widget's part of the OpenAPI document (merged into bridge/web/openapi.py)."""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "Error", "content": {"application/json": {"schema": _ERR}}}
            for c in codes}


def _json(schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": "OK", "content": {"application/json": {"schema": schema}}}}


_ORIGIN = {"name": "Origin", "in": "header", "required": True,
           "description": "a page origin listed in BRIDGE_WIDGET_ORIGINS (else 403)",
           "schema": {"type": "string"}}
_VISITOR: list[dict[str, list[str]]] = [{"visitor": []}]
_KEY = {"type": ["string", "null"], "pattern": r"^[0-9]{1,15}-[0-9]{1,10}_[0-9]{1,15}$"}
_EVENTS = {"type": "object", "required": ["events"],
           "properties": {"events": {"type": "array", "items": {"type": "object"}},
                          "before": _KEY, "cursor": _KEY}}
# Every widget call reads a body and checks origin, budget and token.
_CALL_ERRORS = (400, 401, 403, 408, 413, 415, 422, 429, 503)


def _post(summary: str, request: dict[str, Any], answer: dict[str, Any], *,
          security: list[dict[str, list[str]]] | None = None, optional: bool = False
          ) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "parameters": [_ORIGIN], "security": security or _VISITOR,
        "requestBody": {"required": not optional,
                        "content": {"application/json": {"schema": request}}},
        "responses": {**answer, **_errors(*_CALL_ERRORS)}}}


WIDGET_PATHS: dict[str, Any] = {
    "/widget/v1/session": _post(
        "Start or continue a visitor session (anonymous, an anonymous visitor's stored "
        "token, or a site's JWT: a site's user's own token is 401 user_jwt_required)",
        {"type": "object", "properties": {"user_jwt": {"type": "string"}},
         "additionalProperties": False},
        _json({"type": "object", "required": ["token"],
               "properties": {"token": {"type": "string"}, "identified": {"type": "boolean"},
                              "read_up_to": _KEY}}),
        security=[{}, {"visitor": []}], optional=True),
    "/widget/v1/messages": _post(
        "Send a visitor message (routed like a WhatsApp message; client_id dedupes)",
        {"type": "object", "required": ["client_id"], "additionalProperties": False,
         "properties": {"client_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"},
                        "body": {"type": "string", "maxLength": 4096},
                        "button": {"type": "string"}}},
        {**_json({"type": "object"}, "201"), **_json({"type": "object"})}),
    "/widget/v1/history": _post(
        "The visitor's thread, newest first, a page at a time",
        {"type": "object", "additionalProperties": False,
         "properties": {"before": _KEY, "limit": {"type": "integer", "minimum": 1,
                                                  "maximum": 100}}},
        _json(_EVENTS), optional=True),
    "/widget/v1/poll": _post(
        "Long polling (where WebSockets are blocked): events after a key",
        {"type": "object", "additionalProperties": False,
         "properties": {"after": _KEY, "wait_s": {"type": "number", "minimum": 0,
                                                  "maximum": 25}}},
        _json(_EVENTS), optional=True),
    "/widget/v1/read": _post(
        "The visitor's read position (agents see their messages read)",
        {"type": "object", "required": ["key"], "additionalProperties": False,
         "properties": {"key": _KEY}},
        _json({"type": "object"})),
    "/widget/v1/typing": _post(
        "The visitor is typing (ephemeral)", {"type": "object"},
        {"204": {"description": "Published"}}, optional=True),
    "/widget/v1/ws": {"get": {
        "summary": "WebSocket: send {type: hello, token, after}; receive events, typing",
        "parameters": [_ORIGIN], "security": [{}],
        "responses": {"101": {"description": "Switching protocols"},
                      **_errors(400, 403, 429, 503)}}},
    "/widget/v1/{call}": {"options": {
        "summary": "CORS preflight of the widget's calls", "security": [{}],
        "parameters": [_ORIGIN, {"name": "call", "in": "path", "required": True,
                                 "schema": {"type": "string", "enum": [
                                     "session", "messages", "history", "read", "typing",
                                     "poll"]}}],
        "responses": {"204": {"description": "Allowed"}, **_errors(403, 404)}}},
    "/widget/v1/widget.js": {"get": {
        "summary": "The widget's script (gzip, ETag)", "security": [{}],
        "responses": {"200": {"description": "JavaScript",
                              "content": {"text/javascript": {"schema": {"type": "string"}}}},
                      "304": {"description": "Not modified"}}}},
    "/widget/demo": {"get": {
        "summary": "A page embedding the widget (strict CSP)", "security": [{}],
        "responses": {"200": {"description": "HTML",
                              "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/widget/demo.css": {"get": {
        "summary": "The demo page's styles", "security": [{}],
        "responses": {"200": {"description": "CSS",
                              "content": {"text/css": {"schema": {"type": "string"}}}}}}},
    "/api/v1/tickets/{id}/typing": {"post": {
        "summary": "The agent is typing on a widget ticket (ephemeral)",
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"204": {"description": "Published"}, **_errors(401, 403, 404, 422, 503)}}},
}
# The visitor token of /widget/v1/session.
WIDGET_SECURITY = {"visitor": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def merge_into(document: dict[str, Any]) -> None:
    document["paths"].update(WIDGET_PATHS)
    document["components"]["securitySchemes"].update(WIDGET_SECURITY)
