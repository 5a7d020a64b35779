"""Reading request bodies with a deadline, so a client that stalls its body is cut off."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.web.errors import ApiError
from bridge.web.keys import settings_key


async def read_body(request: web.Request) -> bytes:
    """The whole body (413 past client_max_size, 408 when it does not arrive in time)."""
    timeout_s = request.app[settings_key].body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout",
                       f"the body did not arrive within {timeout_s:g} s") from None
