"""Reading request bodies with a deadline, so a client that stalls its body is cut off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from bridge.web.errors import ApiError, bad_request, unprocessable
from bridge.web.keys import settings_key

T = TypeVar("T")


async def read_body(request: web.Request) -> bytes:
    """The whole body (413 past client_max_size, 408 when it does not arrive in time)."""
    if request.content.is_eof():
        # The whole body arrived with the headers (the usual webhook): nothing to wait for,
        # so no timer to arm and cancel.
        return await request.read()
    return await _before_deadline(request, request.read())


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """A form's fields (the workspace's POSTs: urlencoded, or multipart from a script's
    FormData) under the same deadline as any body (408); a body aiohttp cannot read as a
    form (multipart without a boundary) is a 400. Read once: aiohttp keeps the fields."""
    try:
        if request.content.is_eof():
            return await request.post()
        return await _before_deadline(request, request.post())
    except ValueError as exc:
        raise bad_request(f"the form could not be read: {str(exc)[:200]}",
                          "malformed") from None


async def _before_deadline(request: web.Request, reading: Awaitable[T]) -> T:
    timeout_s = request.app[settings_key].body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await reading
    except TimeoutError:
        raise ApiError(408, "request_timeout",
                       f"the body did not arrive within {timeout_s:g} s") from None


async def json_object(request: web.Request, allowed: frozenset[str], *,
                      optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object with only the allowed keys. With `optional`, an absent or
    blank body is an empty object."""
    if optional and not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await read_body(request)
    if optional and not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
        # A \ud800 escape decodes to a lone surrogate that can be neither stored nor sent.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise bad_request("body is not valid JSON (UTF-8, no lone surrogates, not too "
                          "deeply nested)", "malformed") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object", "malformed")
    unknown = set(data) - allowed
    if unknown:
        raise unprocessable(f"unknown field(s): {', '.join(sorted(unknown))}")
    return data
