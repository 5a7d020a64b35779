"""The OpenAPI 3.1 document of the bridge, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.web import teams_openapi, widget_openapi
from bridge.web.export_openapi import merge_export
from bridge.web.reports_openapi import REPORT_PATHS

routes = web.RouteTableDef()


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses; a route that reads a body (415/413) can also answer 408 and 413."""
    if 415 in codes or 413 in codes:
        codes = tuple(sorted({*codes, 408, 413}))
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                      "maximum": 200, "default": 50}}
_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}}
_NULLSTR = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_STATUS = {"type": "string", "enum": ["new", "open", "pending", "hold", "solved", "closed"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"}}}},
    },
    "Ticket": {
        "type": "object",
        "required": ["id", "status", "channel", "contact", "assignee", "tags", "created_at",
                     "updated_at", "solved_at", "session", "message_count", "follow_up_of",
                     "follow_ups", "age_s", "aging"],
        "properties": {
            "id": {"type": "string"},
            "status": _STATUS,
            "channel": {"type": "string"},
            "contact": {"type": "object", "required": ["id", "address", "name"],
                        "properties": {"id": {"type": "string"}, "address": _NULLSTR,
                                       "name": _NULLSTR}},
            "assignee": _NULLSTR,
            "group": _NULLSTR,
            "tags": {"type": "array", "items": {"type": "string"}},
            "fields": {"type": "object"},
            "created_at": _TIME, "updated_at": _TIME, "solved_at": _TIME, "closed_at": _TIME,
            "closed_reason": _NULLSTR,
            "session": {"type": "object", "required": ["state", "ended_reason"],
                        "properties": {"state": {"type": "string", "enum": ["active", "ended"]},
                                       "ended_reason": _NULLSTR}},
            "message_count": {"type": "integer", "minimum": 0},
            "follow_up_of": _NULLSTR,
            "follow_ups": {"type": "array", "items": {"type": "string"}},
            "age_s": {"type": "integer", "minimum": 0},
            "aging": {"type": "string", "enum": ["ok", "yellow", "red"]},
            "csat": {"type": "object"},
            "version": {"type": "integer"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "type", "at", "author", "body", "delivery"],
        "properties": {
            "id": {"type": "string"},
            "ticket_id": {"type": "string"},
            "type": {"type": "string", "enum": [
                "customer_message", "agent_reply", "note", "status_changed", "session_ended",
                "macro_applied", "csat_sent", "csat_answered", "automation", "ticket_updated",
                "follow_up_created"]},
            "at": _TIME,
            "author": {"type": "string"},
            "body": {"type": "string"},
            "data": {"type": "object"},
            "delivery": {"type": ["string", "null"], "enum": [
                None, "queued", "sending", "sent", "delivered", "read", "undelivered",
                "failed"]},
            "error_code": _NULLSTR,
            "error_message": _NULLSTR,
        },
    },
    "TicketPage": {
        "type": "object", "required": ["tickets", "next_cursor"],
        "properties": {"tickets": {"type": "array", "items": _ref("Ticket")},
                       "next_cursor": _NULLSTR},
    },
    "EventPage": {
        "type": "object", "required": ["events", "next_cursor"],
        "properties": {"events": {"type": "array", "items": _ref("Event")},
                       "next_cursor": _NULLSTR},
    },
    "TicketPatch": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {"status": _STATUS,
                       "assignee": {**_NULLSTR, "description": "An agent's name (from "
                                    "BRIDGE_AGENT_TOKENS) or null; another name is 422 "
                                    "unknown_agent"},
                       "tags": {"type": "array", "items": {"type": "string"}},
                       "group": {**_NULLSTR, "description": "A group name or null"},
                       "fields": {"type": "object", "description": "Ticket field values "
                                  "(null clears one)"}},
    },
    "Reply": {
        "type": "object", "additionalProperties": False,
        "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 1600},
                       "macro": {"type": "string", "minLength": 1}},
        "oneOf": [{"required": ["body"]}, {"required": ["macro"]}],
    },
    "Note": {
        "type": "object", "additionalProperties": False, "required": ["body"],
        "properties": {"body": {"type": "string", "minLength": 1, "maxLength": 10000}},
    },
    "TwilioInbound": {
        "type": "object", "required": ["MessageSid", "From"],
        "properties": {k: {"type": "string"} for k in (
            "MessageSid", "AccountSid", "From", "To", "Body", "NumMedia", "MediaUrl0",
            "MediaContentType0", "ProfileName", "WaId", "ExternalUserId", "ButtonPayload",
            "ButtonText", "OriginalRepliedMessageSid", "Latitude", "Longitude", "MessageType")},
    },
    "TwilioStatus": {
        "type": "object", "required": ["MessageSid", "MessageStatus"],
        "properties": {k: {"type": "string"} for k in (
            "MessageSid", "MessageStatus", "ErrorCode", "ErrorMessage", "AccountSid")},
    },
}

_RESPONSES = {
    f"E{code}": _json(_ref("Error"), text)
    for code, text in {
        400: "Malformed request", 401: "Missing or unknown token", 403: "Forbidden",
        408: "Body not received in time",
        404: "Not found", 409: "Conflict with the ticket's state", 413: "Body too large",
        415: "Unsupported media type", 422: "Invalid field",
        429: "Too many template renders by this agent (Retry-After)",
        503: "Storage unavailable (or, rendering macros: every renderer busy); Retry-After",
    }.items()
}

_SIGNATURE = {"name": "X-Twilio-Signature", "in": "header", "required": True,
              "schema": {"type": "string"}}
_IDEMPOTENCY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Send the request again with the same key after a timeout or a 5xx: "
                   "nothing is recorded twice, the answer is the first request's (24 h; "
                   "422 idempotency_key_reused with another request, 409 "
                   "idempotency_key_in_progress while the first one runs).",
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}

PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Process is up", "security": [],
                         "responses": {"200": _json({"type": "object"})}}},
    "/readyz": {"get": {"summary": "Redis reachable", "security": [],
                        "responses": {"200": _json({"type": "object"}),
                                      "503": _json({"type": "object"}, "Redis unreachable")}}},
    "/webhooks/twilio": {"post": {
        "summary": "Twilio inbound WhatsApp message (signed)", "security": [],
        "parameters": [_SIGNATURE],
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": _ref("TwilioInbound")}}},
        "responses": {"200": {"description": "Empty TwiML",
                              "content": {"text/xml": {"schema": {"type": "string"}}}},
                      **_errors(400, 403, 413, 503)},
    }},
    "/webhooks/twilio/status": {"post": {
        "summary": "Twilio delivery status callback (signed)", "security": [],
        "parameters": [_SIGNATURE],
        "requestBody": {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": _ref("TwilioStatus")}}},
        "responses": {"204": {"description": "Recorded (only forward moves change state)"},
                      **_errors(400, 403, 413, 503)},
    }},
    "/api/v1/tickets": {"get": {
        "summary": "List tickets, newest first",
        "parameters": [
            {"name": "status", "in": "query", "schema": _STATUS},
            {"name": "channel", "in": "query",
             "schema": {"type": "string", "enum": ["whatsapp", "widget"]}},
            {"name": "assignee", "in": "query", "schema": {"type": "string"}},
            {"name": "contact", "in": "query", "schema": {"type": "string"},
             "description": "A contact id (a ticket's contact.id) or the customer's WhatsApp "
                            "address: whatsapp:+33612345678, or the number alone "
                            "(+33612345678, + encoded as %2B). Anything else is 400 "
                            "invalid_contact.",
             "examples": {"address": {"value": "whatsapp:+33612345678"},
                          "number": {"value": "+33612345678"}}},
            _CURSOR, _LIMIT],
        "responses": {"200": _json(_ref("TicketPage")), **_errors(400, 401, 422, 503)},
    }},
    "/api/v1/tickets/{id}": {
        "get": {"summary": "Read a ticket", "parameters": [_ID],
                "responses": {"200": _json(_ref("Ticket")), **_errors(401, 404, 503)}},
        "patch": {"summary": "Change status, assignee or tags", "parameters": [_ID],
                  "requestBody": _body(_ref("TicketPatch")),
                  "responses": {"200": _json(_ref("Ticket")),
                                **_errors(400, 401, 404, 409, 415, 422, 503)}},
    },
    "/api/v1/tickets/{id}/events": {"get": {
        "summary": "Page through the thread, newest first", "parameters": [_ID, _CURSOR, _LIMIT],
        "responses": {"200": _json(_ref("EventPage")), **_errors(401, 404, 422, 503)},
    }},
    "/api/v1/tickets/{id}/replies": {"post": {
        "summary": "Public reply (body) or macro; sent by a worker",
        "parameters": [_ID, _IDEMPOTENCY], "requestBody": _body(_ref("Reply")),
        "responses": {"202": _json(_ref("Event"), "Queued"),
                      **_errors(400, 401, 404, 409, 415, 422, 503)},
    }},
    "/api/v1/tickets/{id}/notes": {"post": {
        "summary": "Internal note (never sent to the customer)",
        "parameters": [_ID, _IDEMPOTENCY], "requestBody": _body(_ref("Note")),
        "responses": {"201": _json(_ref("Event"), "Created"),
                      **_errors(400, 401, 404, 409, 415, 422, 503)},
    }},
    "/api/v1/tickets/{id}/session/end": {"post": {
        "summary": "End the messaging session (status unchanged)", "parameters": [_ID],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 64}}}}}},
        "responses": {"200": _json(_ref("Ticket")),
                      **_errors(400, 401, 404, 409, 415, 422, 503)},
    }},
    "/api/v1/tickets/{id}/macros/{name}": {"post": {
        "summary": "Apply a macro: render, send, run its actions",
        "parameters": [_ID, _NAME, _IDEMPOTENCY],
        "responses": {"202": _json(_ref("Event"), "Queued"),
                      **_errors(400, 401, 404, 409, 422, 503)},
    }},
    "/api/v1/macros": {"get": {"summary": "List macros",
                               "responses": {"200": _json({"type": "object"}),
                                             **_errors(401, 503)}}},
    "/api/v1/macros/{name}": {
        "get": {"summary": "Read a macro", "parameters": [_NAME],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 404, 503)}},
        "put": {"summary": "Save a new version (admin): locales and actions as sent, the "
                           "title kept when left out", "parameters": [_NAME],
                "requestBody": _body({"type": "object"}),
                "responses": {"200": _json({"type": "object"}),
                              **_errors(400, 401, 403, 415, 422, 429, 503)}},
    },
    "/api/v1/macros/{name}/preview": {"post": {
        "summary": "Render against a ticket", "parameters": [_NAME],
        "requestBody": _body({"type": "object"}),
        "responses": {"200": _json({"type": "object"}),
                      **_errors(400, 401, 404, 415, 422, 429, 503)}}},
    "/api/v1/macros/{name}/validate": {"post": {
        "summary": "Validate a template without saving", "parameters": [_NAME],
        "requestBody": _body({"type": "object"}),
        "responses": {"200": _json({"type": "object"}),
                      **_errors(400, 401, 415, 422, 429, 503)}}},
    "/api/v1/macros/{name}/rollback": {"post": {
        "summary": "Roll back to an earlier version (admin)", "parameters": [_NAME],
        "requestBody": _body({"type": "object"}),
        "responses": {"200": _json({"type": "object"}),
                      **_errors(400, 401, 403, 404, 415, 422, 429, 503)}}},
    "/api/v1/macros/{name}/versions": {"get": {
        "summary": "Version history", "parameters": [_NAME],
        "responses": {"200": _json({"type": "object"}), **_errors(401, 404, 503)}}},
    "/api/v1/reports/csat": {"get": {
        "summary": "CSAT by channel or agent over a period",
        "parameters": [{"name": "by", "in": "query",
                        "schema": {"type": "string", "enum": ["channel", "agent"]}},
                       {"name": "since", "in": "query", "schema": {"type": "string"}},
                       {"name": "until", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": _json({"type": "object"}), **_errors(401, 422, 503)}}},
}

teams_openapi.merge(PATHS, SCHEMAS)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Help-desk messaging bridge", "version": "1"},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {**PATHS, **REPORT_PATHS},
    "components": {
        "schemas": SCHEMAS,
        "responses": _RESPONSES,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
widget_openapi.merge_into(DOCUMENT)


merge_export(DOCUMENT)


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
