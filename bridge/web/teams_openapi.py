"""The OpenAPI paths and schemas of people, groups, availability, taking tickets, ticket
fields and saved views (merged into bridge/web/openapi.py's document)."""

from __future__ import annotations

from typing import Any

from bridge.core.teams import Permission, Role
from bridge.core.ticket_fields import FieldType


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int, body: bool = False) -> dict[str, Any]:
    """Every route answers 401 (token), 403 (role) and 503 (storage); one with a body also
    408, 413, 415 and 422."""
    every = {401, 403, 503, *codes, *((400, 408, 413, 415, 422) if body else ())}
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted(every)}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_NULLSTR = {"type": ["string", "null"]}
_NAMES = {"type": "array", "items": {"type": "string"}}
_NO_CONTENT = {"204": {"description": "Done"}}

SCHEMAS: dict[str, Any] = {
    "Agent": {
        "type": "object", "required": ["name", "role", "groups", "capacity", "available"],
        "properties": {
            "name": {"type": "string"}, "role": {"type": "string", "enum": list(Role)},
            "display_name": {"type": "string"}, "locale": _NULLSTR, "time_zone": _NULLSTR,
            "groups": _NAMES, "capacity": {"type": "integer"}, "available": {"type": "boolean"},
            "load": {"type": "integer", "description": "Active conversations held"}},
    },
    "AgentInput": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"},
            "role": {"type": "string", "enum": list(Role)},
            "display_name": {"type": "string", "maxLength": 100},
            "locale": {"type": "string"}, "time_zone": {"type": "string"},
            "groups": _NAMES, "capacity": {"type": "integer", "minimum": 0, "maximum": 1000},
            "available": {"type": "boolean"}},
    },
    "Group": {"type": "object", "required": ["name"],
              "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                             "members": _NAMES}},
    "Field": {
        "type": "object", "required": ["key", "title", "type"],
        "properties": {"key": {"type": "string"}, "title": {"type": "string"},
                       "type": {"type": "string", "enum": list(FieldType)},
                       "options": _NAMES, "required_on_solve": {"type": "boolean"},
                       "groups": _NAMES, "description": {"type": "string"},
                       "source": {"type": "string", "enum": ["config", "api"]}},
    },
    "View": {
        "type": "object", "required": ["id", "name", "shared", "conditions", "count"],
        "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "shared": {"type": "boolean"},
            "owner": _NULLSTR, "conditions": {"type": "object"},
            "sort": {"type": "string", "enum": ["created_desc", "created_asc"]},
            "group_by": {"type": ["string", "null"], "enum": ["status", "assignee", None]},
            "version": {"type": "integer"}, "count": {"type": "integer"},
            "groups": {"type": "array", "items": {"type": "object"}}},
    },
    "ViewInput": {
        "type": "object", "additionalProperties": False,
        "description": "conditions, each a list of values any of which matches: status, "
                       "channel, group (\"\": no group), assignee, tags_all, tags_none, aging "
                       "(ok/yellow/red, a range); and status_below (a status), unassigned "
                       "(bool), fields ({key: value}). Example: {\"group\": [\"\"]}.",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "conditions": {"type": "object"}, "shared": {"type": "boolean"},
            "sort": {"type": "string", "enum": ["created_desc", "created_asc"]},
            "group_by": {"type": ["string", "null"], "enum": ["status", "assignee", None]}},
    },
}

PATHS: dict[str, Any] = {
    "/api/v1/me": {"get": {
        "summary": "The token's person: role, groups, permissions",
        "responses": {"200": _json({"type": "object", "properties": {
            "permissions": {"type": "array", "items": {"type": "string",
                                                        "enum": list(Permission)}}}}),
            **_errors()}}},
    "/api/v1/me/availability": {"put": {
        "summary": "Available for automatic assignment (hands over waiting tickets)",
        "requestBody": _body({"type": "object", "additionalProperties": False,
                              "required": ["available"],
                              "properties": {"available": {"type": "boolean"}}}),
        "responses": {"200": _json(_ref("Agent")), **_errors(409, body=True)}}},
    "/api/v1/agents": {
        "get": {"summary": "People and their loads",
                "responses": {"200": _json({"type": "object", "properties": {
                    "agents": {"type": "array", "items": _ref("Agent")}}}), **_errors()}},
        "post": {"summary": "Add a person (admin); the token is shown once",
                 "requestBody": _body(_ref("AgentInput")),
                 "responses": {"201": _json({"type": "object", "required": ["agent", "token"],
                                             "properties": {"agent": _ref("Agent"),
                                                            "token": {"type": "string"}}}),
                               **_errors(409, body=True)}}},
    "/api/v1/agents/{name}": {
        "get": {"summary": "A person", "parameters": [_NAME],
                "responses": {"200": _json(_ref("Agent")), **_errors(404)}},
        "patch": {"summary": "Change a person (admin)", "parameters": [_NAME],
                  "requestBody": _body(_ref("AgentInput")),
                  "responses": {"200": _json(_ref("Agent")), **_errors(404, body=True)}},
        "delete": {"summary": "Remove a person and their token (admin)", "parameters": [_NAME],
                   "responses": {**_NO_CONTENT, **_errors(404)}}},
    "/api/v1/agents/{name}/token": {"post": {
        "summary": "A new token for a person (admin); the old one stops working",
        "parameters": [_NAME],
        "responses": {"200": _json({"type": "object"}), **_errors(404)}}},
    "/api/v1/groups": {
        "get": {"summary": "Agents' groups and their members",
                "responses": {"200": _json({"type": "object", "properties": {
                    "groups": {"type": "array", "items": _ref("Group")}}}), **_errors()}},
        "post": {"summary": "Add a group (admin)",
                 "requestBody": _body({"type": "object", "additionalProperties": False,
                                       "required": ["name"],
                                       "properties": {"name": {"type": "string"},
                                                      "description": {"type": "string"}}}),
                 "responses": {"201": _json(_ref("Group")), **_errors(409, body=True)}}},
    "/api/v1/groups/{name}": {"delete": {
        "summary": "Remove a group without members (admin)", "parameters": [_NAME],
        "responses": {**_NO_CONTENT, **_errors(404, 409)}}},
    "/api/v1/tickets/{id}/take": {"post": {
        "summary": "Assign an unassigned ticket to oneself", "parameters": [_ID],
        "responses": {"200": _json({"$ref": "#/components/schemas/Ticket"}),
                      **_errors(404, 409, 422)}}},
    "/api/v1/fields": {"get": {
        "summary": "Ticket field definitions (config/ and the admin API's)",
        "responses": {"200": _json({"type": "object", "properties": {
            "fields": {"type": "array", "items": _ref("Field")}}}), **_errors()}}},
    "/api/v1/fields/{key}": {
        "put": {"summary": "Define or change a ticket field (admin)", "parameters": [_KEY],
                "requestBody": _body({"type": "object"}),
                "responses": {"200": _json(_ref("Field")), **_errors(409, body=True)}},
        "delete": {"summary": "Remove a field definition (admin)", "parameters": [_KEY],
                   "responses": {**_NO_CONTENT, **_errors(404, 409)}}},
    "/api/v1/views": {
        "get": {"summary": "The views one can use (shared and one's own), with counts",
                "responses": {"200": _json({"type": "object", "properties": {
                    "views": {"type": "array", "items": _ref("View")}}}), **_errors()}},
        "post": {"summary": "Save a view (personal; shared: managers and admins)",
                 "requestBody": _body(_ref("ViewInput")),
                 "responses": {"201": _json(_ref("View")), **_errors(body=True)}}},
    "/api/v1/views/counts": {"get": {
        "summary": "The count of every usable view",
        "responses": {"200": _json({"type": "object"}), **_errors()}}},
    "/api/v1/views/{id}": {
        "get": {"summary": "A view, its count and its groups' counts", "parameters": [_ID],
                "responses": {"200": _json(_ref("View")), **_errors(404, 422)}},
        "patch": {"summary": "Change a view (its sets are rebuilt)", "parameters": [_ID],
                  "requestBody": _body(_ref("ViewInput")),
                  "responses": {"200": _json(_ref("View")), **_errors(404, body=True)}},
        "delete": {"summary": "Remove a view", "parameters": [_ID],
                   "responses": {**_NO_CONTENT, **_errors(404)}}},
    "/api/v1/views/{id}/tickets": {"get": {
        "summary": "A page of the view's tickets (of one group of a grouped view)",
        "parameters": [_ID,
                       {"name": "group", "in": "query", "schema": {"type": "string"}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                       {"name": "limit", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200}}],
        "responses": {"200": _json({"type": "object", "required": ["tickets", "next_cursor"],
                                    "properties": {
                                        "tickets": {"type": "array", "items": {
                                            "$ref": "#/components/schemas/Ticket"}},
                                        "next_cursor": _NULLSTR,
                                        "count": {"type": "integer"}}}),
                      **_errors(404, 422)}}},
}


def merge(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Add these paths and schemas to the document; every ticket call can now answer 403
    (the role, or a ticket of another group)."""
    for path, item in paths.items():
        if path.startswith("/api/v1/tickets"):
            for operation in item.values():
                operation["responses"].setdefault("403", {"$ref": "#/components/responses/E403"})
    for parameter in paths.get("/api/v1/reports/csat", {}).get("get", {}).get("parameters", []):
        if parameter["name"] == "by":  # reports also group by agents' group and field
            parameter["schema"] = {"type": "string", "pattern":
                                   "^(channel|agent|group|field:[a-z0-9][a-z0-9_.-]{0,63})$"}
    paths.update(PATHS)
    schemas.update(SCHEMAS)
