"""The webhook export in the OpenAPI document: the admin paths, the bulk export, and the
`webhooks` section (OpenAPI 3.1) that documents every payload a receiver gets."""

from __future__ import annotations

from typing import Any

from bridge.core.export_events import SCHEMA_VERSION, ExportEventType
from bridge.core.export_rows import EVENT_COLUMNS, TICKET_COLUMNS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    if 415 in codes:
        codes = tuple(sorted({*codes, 408, 413}))
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_NULLSTR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_EVENTS = {"type": "array", "minItems": 1, "items": {
    "type": "string", "enum": ["*", *(t.value for t in ExportEventType)]}}
_ADMIN_ERRORS = (401, 403, 404, 503)

SCHEMAS: dict[str, Any] = {
    "WebhookEndpoint": {"type": "object", "required": ["id", "url", "events", "enabled"],
                        "properties": {
        "id": {"type": "string"}, "url": {"type": "string"}, "events": _EVENTS,
        "description": {"type": "string"}, "enabled": {"type": "boolean"},
        "anonymize": {"type": "boolean", "description": "Payloads without message bodies, "
                      "phone numbers, names, media or locations (those fields are null)."},
        "follow_redirects": {"type": "boolean"}, "created_at": _TIME,
        "disabled_reason": _NULLSTR,
        "secret": {"type": "string", "pattern": "^whsec_",
                   "description": "Only in the answer that creates the endpoint."},
        "health": _ref("WebhookHealth")}},
    "WebhookEndpointInput": {"type": "object", "properties": {
        "url": {"type": "string", "description": "https:// (http:// only in development); "
                "hosts that are or resolve to private, loopback, link-local or metadata "
                "addresses are refused"},
        "events": _EVENTS, "description": {"type": "string", "maxLength": 500},
        "enabled": {"type": "boolean"}, "anonymize": {"type": "boolean"},
        "follow_redirects": {"type": "boolean"}}},
    "WebhookHealth": {"type": "object", "properties": {
        "state": {"type": "string", "enum": ["healthy", "failing", "disabled"]},
        "delivered": {"type": "integer"}, "failed_attempts": {"type": "integer"},
        "given_up": {"type": "integer"}, "consecutive_failures": {"type": "integer"},
        "last_success_at": _TIME, "last_failure_at": _TIME,
        "last_status": {"type": ["integer", "null"]}, "last_error": _NULLSTR,
        "backlog": {"type": "integer"}, "retrying_tickets": {"type": "integer"},
        "failed": {"type": "integer"}}},
    "WebhookPayload": {
        "type": "object", "required": ["type", "timestamp", "schema_version", "data"],
        "description": "Sent with Standard Webhooks headers: webhook-id (the same on every "
                       "retry and replay of one event), webhook-timestamp, webhook-signature "
                       "(v1,<base64 HMAC-SHA256 of id.timestamp.body>; two during a secret "
                       "rotation). Verify with the standardwebhooks library.",
        "properties": {
            "type": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
            "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
            "data": {"type": "object", "required": ["ticket", "contact"], "properties": {
                "ticket": {"type": "object", "required": ["id"],
                           "properties": {"id": {"type": "string"}}},
                "contact": {"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string"}, "address": _NULLSTR, "name": _NULLSTR}}}}}},
    "WebhookMessage": {"type": "object", "properties": {
        "id": {"type": "string"}, "type": {"type": "string"},
        "at": {"type": "string", "format": "date-time"}, "author": {"type": "string"},
        "body": _NULLSTR}},
}

_DATA: dict[ExportEventType, tuple[str, dict[str, Any]]] = {
    ExportEventType.TICKET_CREATED: ("A ticket was opened (contact.address and name: null "
                                     "when anonymised)", {"ticket": {"type": "object"}}),
    ExportEventType.TICKET_STATUS_CHANGED: ("The status moved", {"status": {
        "type": "object", "properties": {"from": _NULLSTR, "to": {"type": "string"},
                                         "reason": _NULLSTR}}}),
    ExportEventType.TICKET_ASSIGNED: ("The assignee changed", {"assignee": _NULLSTR}),
    ExportEventType.TICKET_TAGGED: ("The tags changed", {"tags": {
        "type": "array", "items": {"type": "string"}}}),
    ExportEventType.MESSAGE_RECEIVED: ("A customer message (body null when anonymised)",
                                       {"message": _ref("WebhookMessage")}),
    ExportEventType.MESSAGE_SENT: ("A reply, macro, survey or automation message was queued",
                                   {"message": _ref("WebhookMessage")}),
    ExportEventType.MESSAGE_DELIVERY_STATUS_CHANGED: ("An outbound message's delivery moved",
                                                      {"delivery": {"type": "object"}}),
    ExportEventType.NOTE_ADDED: ("An internal note", {"note": _ref("WebhookMessage")}),
    ExportEventType.SESSION_ENDED: ("An agent ended the messaging session",
                                    {"session": {"type": "object"}}),
    ExportEventType.CSAT_ANSWERED: ("The customer rated the ticket", {"csat": {
        "type": "object", "properties": {"rating": {"type": ["integer", "null"]}}}}),
}

_HEADERS = [{"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")]

WEBHOOKS: dict[str, Any] = {
    etype.value: {"post": {
        "summary": summary, "parameters": _HEADERS,
        "requestBody": _body({"allOf": [_ref("WebhookPayload"), {"properties": {
            "type": {"const": etype.value},
            "data": {"type": "object", "properties": extra}}}]}),
        "responses": {"2XX": {"description": "Received; 410 disables the endpoint, 429 "
                              "and 5xx are retried with backoff for about three days"}}}}
    for etype, (summary, extra) in _DATA.items()
}

_BASE = "/api/v1/webhook-endpoints"
_SINCE = {"name": "since", "in": "query", "schema": {"type": "string"}}
_PAGE = [_SINCE, {"name": "cursor", "in": "query", "schema": {"type": "string"}},
         {"name": "limit", "in": "query",
          "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
         {"name": "format", "in": "query",
          "schema": {"type": "string", "enum": ["json", "ndjson", "csv"]}}]


def _rows(columns: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object",
                                       "properties": {c: {} for c in columns}}}


PATHS: dict[str, Any] = {
    _BASE: {
        "post": {"summary": "Add a webhook endpoint (admin); the secret is shown once",
                 "requestBody": _body(_ref("WebhookEndpointInput")),
                 "responses": {"201": _json(_ref("WebhookEndpoint")),
                               **_errors(400, 401, 403, 409, 415, 422, 503)}},
        "get": {"summary": "List webhook endpoints (admin)",
                "responses": {"200": _json({"type": "object", "properties": {
                    "endpoints": {"type": "array", "items": _ref("WebhookEndpoint")}}}),
                    **_errors(401, 403, 503)}}},
    _BASE + "/{id}": {
        "get": {"summary": "A webhook endpoint and its health (admin)", "parameters": [_ID],
                "responses": {"200": _json(_ref("WebhookEndpoint")), **_errors(*_ADMIN_ERRORS)}},
        "patch": {"summary": "Change url, events, enabled... (admin)", "parameters": [_ID],
                  "requestBody": _body(_ref("WebhookEndpointInput")),
                  "responses": {"200": _json(_ref("WebhookEndpoint")),
                                **_errors(400, 401, 403, 404, 415, 422, 503)}},
        "delete": {"summary": "Remove a webhook endpoint (admin)", "parameters": [_ID],
                   "responses": {"204": {"description": "Removed"},
                                 **_errors(*_ADMIN_ERRORS)}}},
    _BASE + "/{id}/rotate-secret": {"post": {
        "summary": "New secret; the previous one signs too for 24 h (admin)",
        "parameters": [_ID],
        "responses": {"200": _json({"type": "object", "properties": {
            "secret": {"type": "string"}, "previous_valid_until": _TIME}}),
            **_errors(*_ADMIN_ERRORS)}}},
    _BASE + "/{id}/health": {"get": {
        "summary": "Delivery health (admin)", "parameters": [_ID],
        "responses": {"200": _json(_ref("WebhookHealth")), **_errors(*_ADMIN_ERRORS)}}},
    _BASE + "/{id}/failed": {"get": {
        "summary": "Deliveries that used up their attempts, newest first (admin)",
        "parameters": [_ID, {"name": "limit", "in": "query",
                             "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
        "responses": {"200": _json({"type": "object", "properties": {
            "deliveries": {"type": "array", "items": {"type": "object"}}}}),
            **_errors(401, 403, 404, 422, 503)}}},
    _BASE + "/{id}/replay": {"post": {
        "summary": "Deliver again: one failed delivery (webhook_id) or all since a time",
        "parameters": [_ID],
        "requestBody": _body({"type": "object", "properties": {
            "webhook_id": {"type": "string"}, "since": {"type": "string",
                                                       "format": "date-time"}}}),
        "responses": {"202": _json({"type": "object", "properties": {
            "replayed": {"type": "integer"}}}), **_errors(400, 401, 403, 404, 415, 422, 503)}}},
    "/api/v1/export/tickets": {"get": {
        "summary": "Bulk export: tickets updated since a time, by id (admin)",
        "parameters": _PAGE,
        "responses": {"200": {"description": "A page", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "tickets": _rows(TICKET_COLUMNS), "next_cursor": _NULLSTR}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}}}, **_errors(401, 403, 422, 503)}}},
    "/api/v1/export/events": {"get": {
        "summary": "Bulk export: events since a time, ticket by ticket (admin)",
        "parameters": [*_PAGE, {"name": "anonymize", "in": "query",
                                "schema": {"type": "string", "enum": ["true", "false"]}}],
        "responses": {"200": {"description": "A page", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "events": _rows(EVENT_COLUMNS), "next_cursor": _NULLSTR}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}}}, **_errors(401, 403, 422, 503)}}},
}


def merge_export(document: dict[str, Any]) -> None:
    """Add the export's paths, schemas and webhooks to the bridge's document."""
    document["paths"].update(PATHS)
    document["components"]["schemas"].update(SCHEMAS)
    document["webhooks"] = WEBHOOKS
