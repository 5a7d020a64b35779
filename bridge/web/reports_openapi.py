"""The OpenAPI paths of the counter-based reports (merged into bridge/web/openapi.py)."""

from __future__ import annotations

from typing import Any

_QUERY = [
    {"name": "since", "in": "query", "schema": {"type": "string"},
     "description": "First day (YYYY-MM-DD, local midnight in tz) or an ISO 8601 time"},
    {"name": "until", "in": "query", "schema": {"type": "string"},
     "description": "End of the period (exclusive); default: the end of today in tz"},
    {"name": "tz", "in": "query", "schema": {"type": "string", "default": "UTC"},
     "description": "IANA time zone of the dates and of the per-day series"},
    {"name": "channel", "in": "query",
     "schema": {"type": "string", "enum": ["whatsapp", "widget"]},
     "description": "Only this channel's figures; `agents` and "
                    "`tickets.unsolved_now_by_status` stay across channels (the answer's "
                    "`across_all_channels` names them)"},
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}},
]

REPORT_PATHS: dict[str, Any] = {
    "/api/v1/reports/overview": {"get": {
        "summary": "Tickets, response times (median, p90), CSAT, agents, quality index over a "
                   "period, from the change log's counters (JSON, or CSV with Accept: "
                   "text/csv or format=csv)",
        "parameters": _QUERY,
        "responses": {
            "200": {"description": "OK", "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}}}},
            "401": {"$ref": "#/components/responses/E401"},
            "422": {"$ref": "#/components/responses/E422"},
            "503": {"$ref": "#/components/responses/E503"},
        }}},
}
