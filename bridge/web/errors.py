"""The one error shape of the API: {"error": {"code": str, "message": str}}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bridge.store.tickets import Conflict


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})  # e.g. Retry-After on 429 and 503


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def unprocessable(message: str, code: str = "invalid") -> ApiError:
    return ApiError(422, code, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(code: str, message: str) -> ApiError:
    return ApiError(409, code, message)


def conflict_error(exc: Conflict) -> ApiError:
    """A state the request cannot apply to: 409, except a reused Idempotency-Key (422)."""
    return ApiError(422 if exc.code == "idempotency_key_reused" else 409, exc.code,
                    exc.message)
