"""twilio-python over httpx: one pooled connection per worker process, a configurable base URL,
and no hidden retries.

twilio-python's own clients are `requests` (sync) and aiohttp (async); neither can be mocked
with respx, and their retry knobs either skip 429 or blindly re-POST on 5xx (see
twilio/http/http_client.py and async_http_client.py in twilio-python). The send job owns the
retry policy instead, so this client makes exactly one HTTP request per call.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

# twilio-python builds every REST URL on this host; TWILIO_API_URL replaces it.
TWILIO_API_HOST = "api.twilio.com"
DEFAULT_TIMEOUT_S = 10.0
# Connecting is cheap to retry (nothing was sent yet), so fail it fast.
CONNECT_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verified TLS context per process tree. Building one loads the CA bundle (~40 ms);
    the worker builds it before forking so each job's child inherits it."""
    return httpx.create_ssl_context()


class HttpxTwilioHttpClient(HttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """A synchronous `twilio.http.HttpClient` on `httpx.Client`.

    `base_url` (TWILIO_API_URL) replaces scheme and host of URLs twilio-python builds on
    api.twilio.com, keeping their path, so a stub server can stand in for Twilio. Other
    Twilio hosts are left alone: the bridge only calls the Messages API.
    """

    def __init__(
        self,
        base_url: str = "https://" + TWILIO_API_HOST,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(logger=log, is_async=False, timeout=timeout)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(
            verify=tls_context(),
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            # Redirects are never followed for a POST that creates a message.
            follow_redirects=False,
        )
        # The last answer, for what TwilioRestException drops (the Retry-After header).
        self.last_response: Response | None = None

    def rewrite(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.hostname != TWILIO_API_HOST:
            return uri
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.base_url + tail

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self.last_response = None
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        # httpx encodes list values (MediaUrl) as repeated form fields, as Twilio expects.
        answer = self._client.request(
            method.upper(),
            self.rewrite(uri),
            params=dict(params) if params else None,  # type: ignore[arg-type]
            data=dict(data) if data else None,
            headers=dict(headers) if headers else None,
            auth=auth,
            follow_redirects=allow_redirects,
            **extra,
        )
        self.last_response = Response(answer.status_code, answer.text, answer.headers)
        return self.last_response

    def close(self) -> None:
        self._client.close()


def twilio_client(
    account_sid: str, auth_token: str, *, base_url: str, timeout: float = DEFAULT_TIMEOUT_S,
    http: httpx.Client | None = None,
) -> tuple[Client, HttpxTwilioHttpClient]:
    """A REST client and its HTTP client (kept for `last_response` and `close()`)."""
    http_client = HttpxTwilioHttpClient(base_url, timeout=timeout, client=http)
    client = Client(account_sid, auth_token, http_client=http_client)
    # twilio-python reads TWILIO_EDGE / TWILIO_REGION from the environment by itself; they
    # would rewrite the host behind TWILIO_API_URL's back. Settings are the only source.
    client.edge = None
    client.region = None
    return client, http_client
