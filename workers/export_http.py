"""HTTP for the webhook export: signed requests (Standard Webhooks) through a transport that
only connects to public addresses.

The guard (an httpx transport, so it sees every request, each redirect hop included) resolves
the host itself, checks every address it resolves to (bridge.core.export_policy
.address_refusal) and connects to the address it checked: the URL's host is replaced by that
address, the Host header and TLS's server name (SNI, and so the certificate check) keep the
name. A DNS answer that changes between the check and the connection (DNS rebinding) cannot
send the request elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
import httpx
from standardwebhooks.webhooks import Webhook

from bridge.core.export_policy import address_refusal

# Resolved and checked addresses are reused this long (a delivery burst resolves once).
RESOLVE_CACHE_S = 30.0


class RefusedTarget(Exception):
    """The URL or the address it resolves to is not allowed (SSRF guard)."""


def signature_header(secrets: list[str], webhook_id: str, timestamp_s: int, body: str) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256>` per valid secret, space-separated
    (the previous secret signs too during a rotation's grace period)."""
    stamp = datetime.fromtimestamp(timestamp_s, tz=UTC)
    return " ".join(_webhook(s).sign(webhook_id, stamp, body) for s in secrets)


_WEBHOOKS: dict[str, Webhook] = {}


def _webhook(secret: str) -> Webhook:
    found = _WEBHOOKS.get(secret)
    if found is None:
        if len(_WEBHOOKS) > 1000:
            _WEBHOOKS.clear()
        found = _WEBHOOKS[secret] = Webhook(secret)
    return found


def signed_headers(secrets: list[str], webhook_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, timestamped now (receivers refuse
    timestamps more than a few minutes off, so a retry is signed afresh)."""
    timestamp_s = int(time.time())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature_header(secrets, webhook_id, timestamp_s, body),
            "content-type": "application/json", "user-agent": "helpdesk-bridge-webhooks/1"}


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for a host name."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedTransport(httpx.AsyncBaseTransport):
    """Refuses non-https URLs (unless allow_http) and non-public addresses (unless
    allow_private; metadata addresses always); connects to the checked address."""

    def __init__(self, *, allow_http: bool, allow_private: bool,
                 inner: httpx.AsyncBaseTransport | None = None,
                 resolve: Resolver | None = None) -> None:
        self.resolve = resolve or resolve_host
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.inner = inner or AiohttpTransport()
        self._resolved: dict[tuple[str, int], tuple[float, str]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in (("https", "http") if self.allow_http else ("https",)):
            raise RefusedTarget(f"{url.scheme}:// is not allowed (https only)")
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self.checked_address(host, port)
        if address != host:
            request.url = url.copy_with(host=address)
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to: a literal is checked as is; a name is resolved and
        every address it resolves to must pass (one bad answer refuses the host)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            refusal = address_refusal(host, allow_private=self.allow_private)
            if refusal:
                raise RefusedTarget(refusal)
            return host
        cached = self._resolved.get((host, port))
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            addresses = await self.resolve(host, port)
        except OSError as exc:
            raise RefusedTarget(f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise RefusedTarget(f"{host} does not resolve")
        for address in addresses:
            refusal = address_refusal(address, allow_private=self.allow_private)
            if refusal:
                raise RefusedTarget(f"{host} resolves to {refusal}")
        self._resolved[(host, port)] = (time.monotonic() + RESOLVE_CACHE_S, addresses[0])
        return addresses[0]

    async def aclose(self) -> None:
        await self.inner.aclose()


# Request headers aiohttp writes itself from the body and the connection.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
# Receivers' answers are not used beyond their status: read this much at most.
MAX_ANSWER_BYTES = 64 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends the guard's checked requests with aiohttp's client. Why not httpx's own pool:
    under concurrency it spends ~2 ms of CPU per request (httpcore re-examines every pooled
    connection for each request), which caps a sender near 300-600 deliveries/s on this
    2-core machine; aiohttp's client does several thousand (bench/export.py). httpx stays
    the interface: the guard is an httpx transport, and tests put httpx's own transport
    under it, which respx intercepts."""

    def __init__(self, *, connections: int = 100, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.connections = connections
        # None: the system's trust store (tests pass one that trusts their own certificate).
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, use_dns_cache=False),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(total=limits.get("read"), connect=limits.get("connect"))
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if k.lower() not in _HOP_HEADERS]
        sni = request.extensions.get("sni_hostname")
        try:
            async with self._client().request(
                    request.method, str(request.url), data=await request.aread(),
                    headers=headers, allow_redirects=False, timeout=timeout,
                    ssl=self.ssl_context if self.ssl_context is not None else True,
                    server_hostname=sni if isinstance(sni, str) else None) as answer:
                content = await answer.content.read(MAX_ANSWER_BYTES)
                return httpx.Response(answer.status, headers=answer.raw_headers,
                                      content=content, request=request)
        except TimeoutError:
            raise httpx.TimeoutException("timed out", request=request) from None
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


MAX_REDIRECTS = 3
# Redirects that keep the method and the body (a 301/302/303 would turn a POST into a GET).
_FOLLOWED = frozenset({307, 308})


class ExportHttp:
    """The sender's HTTP: one POST through the guard, redirects followed only when asked
    (307/308, at most MAX_REDIRECTS, each hop through the guard again).

    It hands httpx requests straight to the guarded transport rather than through
    httpx.AsyncClient, whose per-request work (URL merging, cookie jars, auth and redirect
    layers) a webhook sender does not need and which cost as much CPU as the request itself.
    There is no cookie jar and no proxy from the environment (it would bypass the guard)."""

    def __init__(self, transport: GuardedTransport, *, timeout_s: float) -> None:
        self.transport = transport
        self.timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s,
                        "pool": timeout_s}

    async def post(self, url: str, *, content: bytes, headers: dict[str, str] | None = None,
                   follow_redirects: bool = False) -> httpx.Response:
        target = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            request = httpx.Request("POST", target, content=content, headers=headers,
                                    extensions={"timeout": self.timeout})
            response = await self.transport.handle_async_request(request)
            location = response.headers.get("location")
            if not (follow_redirects and response.status_code in _FOLLOWED and location):
                return response
            await response.aclose()
            target = target.join(location)
        raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    async def aclose(self) -> None:
        await self.transport.aclose()


def export_client(*, allow_http: bool, allow_private: bool, timeout_s: float,
                  inner: httpx.AsyncBaseTransport | None = None,
                  resolve: Resolver | None = None) -> ExportHttp:
    """The sender's HTTP: guarded, no redirects unless a request asks."""
    return ExportHttp(GuardedTransport(allow_http=allow_http, allow_private=allow_private,
                                       inner=inner, resolve=resolve), timeout_s=timeout_s)
