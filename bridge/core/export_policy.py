"""Webhook export policy (pure): endpoints, safe targets, what an answer means, when to try
again.

Retries follow Standard Webhooks' advice: exponential backoff with jitter over about three
days (RETRY_BASE_S * RETRY_FACTOR ** n, capped at RETRY_CAP_S, each delay drawn within
±JITTER of it); 410 Gone disables the endpoint; 429 and every 5xx also slow the endpoint
down (fewer deliveries in flight, Retry-After honoured): a struggling receiver gets less
load; anything else that is not 2xx (other 4xx, no answer, a redirect: redirects are not
followed unless the endpoint asks) is retried on the schedule.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

RETRY_BASE_S = 5.0
RETRY_FACTOR = 3.0
RETRY_CAP_S = 12 * 3600.0
# The first attempt and 14 retries: 5 s, 15 s, 45 s ... 9 h, then every 12 h: ~3.1 days.
MAX_ATTEMPTS = 15
JITTER = 0.2
# A Retry-After above this is read as this (a receiver cannot park an endpoint for weeks).
MAX_RETRY_AFTER_S = 3600.0

# Cloud metadata services, reachable from inside a VM without any credentials.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
MAX_URL_CHARS = 2048


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A receiver of export events, as admins set it up (its secrets are kept apart)."""

    id: str
    url: str
    events: tuple[str, ...]
    description: str = ""
    enabled: bool = True
    # Leave personal data out of the payloads (aggregators, anonymised dashboards).
    anonymize: bool = False
    follow_redirects: bool = False
    created_at_ms: int = 0
    # Why the bridge disabled it ("gone": the receiver answered 410), "" when an admin did.
    disabled_reason: str = ""


class Outcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"  # 410: the receiver asks us to stop; the endpoint is disabled
    THROTTLED = "throttled"  # 429, 5xx: retry later and send less at once
    FAILED = "failed"  # anything else: retry on the schedule


def outcome_of(status_code: int | None) -> Outcome:
    """What a delivery's answer means (None: no answer: timeout, refused, reset)."""
    if status_code is None:
        return Outcome.FAILED
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    if status_code == 429 or status_code >= 500:
        return Outcome.THROTTLED
    return Outcome.FAILED


def retry_delay_s(attempts: int, *, jitter: float, retry_after_s: float | None = None,
                  waited_s: float = 0.0) -> float | None:
    """Seconds to wait after `attempts` failed attempts before the next one, or None when
    the delivery has used up its attempts, or has waited longer than the whole schedule
    (`waited_s`: since it was queued; a delivery queued behind a failing one of its ticket
    does not get three more days once that one gives up). `jitter` in [0, 1) spreads the
    retries of many deliveries (0.5: the nominal delay); a receiver's Retry-After is
    honoured when longer."""
    if attempts >= MAX_ATTEMPTS or waited_s > total_retry_window_s():
        return None
    nominal = min(RETRY_BASE_S * RETRY_FACTOR ** (attempts - 1), RETRY_CAP_S)
    delay = nominal * (1 - JITTER + 2 * JITTER * min(max(jitter, 0.0), 1.0))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def total_retry_window_s() -> float:
    """The nominal time between the first attempt and the last (README, tests)."""
    return sum(min(RETRY_BASE_S * RETRY_FACTOR ** n, RETRY_CAP_S)
               for n in range(MAX_ATTEMPTS - 1))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for webhooks and ignored)."""
    if not value or not value.strip().isascii() or not value.strip().isdigit():
        return None
    return float(int(value.strip()))


# ------------------------------------------------------------------ safe targets


MAX_DESCRIPTION_CHARS = 500


def description_refusal(description: object) -> str | None:
    """Why an endpoint's description is refused (None: fine); the API and the CLI ask."""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS \
            or "\x00" in description:
        return f"description must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
    return None


def since_ms(raw: object) -> int | None:
    """An ISO 8601 time (with its offset or Z; UTC without) as epoch milliseconds, times
    before 1970 as 0 (everything); None when it is no such time."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return max(int(stamp.timestamp() * 1000), 0)
    except (ValueError, OverflowError, OSError):
        return None


def url_refusal(url: object, *, allow_http: bool) -> str | None:
    """Why this URL cannot be an endpoint (None: it can). https only, unless `allow_http`
    (development); no credentials in it; a host name or address."""
    if not isinstance(url, str) or not url:
        return "url must be a non-empty string"
    if len(url) > MAX_URL_CHARS:
        return f"url is longer than {MAX_URL_CHARS} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url) or not url.isascii():
        return "url must be ASCII without spaces or control characters (encode it)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "url is not a valid URL"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        return ("url must start with https:// (http:// only in development)" if not allow_http
                else "url must start with http:// or https://")
    if not parts.hostname:
        return "url must name a host"
    if parts.username or parts.password:
        return "url must not carry credentials (the signature authenticates the bridge)"
    if port == 0:
        return "url has an invalid port"
    if parts.fragment:
        return "url must not have a fragment"
    return None


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why the bridge must not connect to this resolved address (None: it may): loopback,
    private, link-local, reserved, multicast, unspecified and cloud metadata addresses are
    refused, so that an endpoint cannot make the bridge reach its own network (SSRF).
    `allow_private` (BRIDGE_EXPORT_ALLOW_PRIVATE, development and tests) lets a local
    receiver through, but never the metadata service."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if allow_private:
        return None
    # Most specific first: 0.0.0.0 and 240.0.0.0/4 are also "private" to ipaddress.
    for flag, what in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                       ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                       ("is_reserved", "reserved"), ("is_private", "private"),
                       # fec0::/10: deprecated, but routed inside some networks still, and
                       # neither private nor reserved to ipaddress.
                       ("is_site_local", "site-local")):
        if getattr(ip, flag, False):
            return f"{ip} is a {what} address"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.sixtofour or ip.teredo):
        return f"{ip} tunnels to an IPv4 address"
    if not ip.is_global:  # shared address space (100.64/10) and the like
        return f"{ip} is not a public address"
    return None


def target_refusal(url: object, *, allow_http: bool, allow_private: bool) -> str | None:
    """What an admin's URL is refused for before anything is sent: url_refusal, and a
    host that is an address or a localhost name failing address_refusal. Other names are
    checked after resolution, at every delivery."""
    refusal = url_refusal(url, allow_http=allow_http)
    if refusal:
        return refusal
    host = (urlsplit(str(url)).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None if allow_private else "localhost is a loopback address"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        legacy = legacy_ipv4(host)
        if legacy is None:
            return None
        # The resolver reads it as that address: refused as that address would be.
        refusal = address_refusal(legacy, allow_private=allow_private)
        return f"{host} is {legacy}: {refusal}" if refusal else None
    # allow_private lets a local receiver through, never the metadata service.
    return address_refusal(host, allow_private=allow_private)


_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]+")
_OCTAL_PART = re.compile(r"0[0-7]*")
_DECIMAL_PART = re.compile(r"[1-9][0-9]*")


def legacy_ipv4(host: str) -> str | None:
    """The IPv4 address a resolver (inet_aton) reads in a host name written the old ways:
    one to four parts, each decimal, 0x-hexadecimal or 0-octal ("2130706433", "0x7f000001",
    "127.1", "0177.0.0.1" are all 127.0.0.1). None: not such a name. Without this, those
    spellings of a loopback or private address pass the check at set-up (and are only
    refused at delivery, after resolution)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if _HEX_PART.fullmatch(part):
            values.append(int(part[2:], 16))
        elif _OCTAL_PART.fullmatch(part):
            values.append(int(part, 8))
        elif _DECIMAL_PART.fullmatch(part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for n, value in enumerate(head):
        number += value << (8 * (3 - n))
    return str(ipaddress.IPv4Address(number))
