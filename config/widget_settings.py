"""The web chat widget's settings (README, "Web chat widget")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from config.errors import SettingsError
from config.values import KEY_MIN_CHARS, Secret, env_choice, env_int


def widget_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The widget's settings (README, "Web chat widget")."""
    keys: dict[str, Secret] = {}
    for item in filter(None, (p.strip() for p in env.get("BRIDGE_WIDGET_JWT_KEYS", "").split(","))):
        kid, sep, key = (part.strip() for part in item.partition(":"))
        if not sep or not kid or len(key) < KEY_MIN_CHARS or kid in keys:
            raise SettingsError(
                "BRIDGE_WIDGET_JWT_KEYS must be kid:secret pairs separated by commas, each key "
                f"id once, secrets of at least {KEY_MIN_CHARS} characters")
        keys[kid] = Secret(key)
    origins = []
    for raw in filter(None, (p.strip() for p in env.get("BRIDGE_WIDGET_ORIGINS", "").split(","))):
        parts = urlsplit(raw)
        if (parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/")
                or parts.query or parts.fragment or "@" in parts.netloc):
            raise SettingsError(f"BRIDGE_WIDGET_ORIGINS: {raw!r} is not an origin such as "
                                "https://shop.example.com")
        netloc = parts.netloc.lower()
        # A browser's Origin never names the scheme's default port: written out, it would
        # match no page of that site.
        default = {"http": ":80", "https": ":443"}[parts.scheme]
        netloc = netloc.removesuffix(default)
        origins.append(f"{parts.scheme}://{netloc}".lower())
    return {
        "secret_previous": Secret(env.get("BRIDGE_SECRET_PREVIOUS", "")),
        "widget_origins": tuple(origins),
        "widget_jwt_keys": keys,
        "widget_token_ttl_s": env_int(env, "BRIDGE_WIDGET_TOKEN_TTL_S", 30 * 24 * 3600,
                                   minimum=60),
        "widget_user_token_ttl_s": env_int(env, "BRIDGE_WIDGET_USER_TOKEN_TTL_S", 12 * 3600,
                                        minimum=60),
        "widget_visitor_messages_per_min": env_int(env, "BRIDGE_WIDGET_VISITOR_RATE", 30,
                                                minimum=1),
        "widget_ip_requests_per_min": env_int(env, "BRIDGE_WIDGET_IP_RATE", 600, minimum=1),
        "widget_trust_forwarded_for": env_choice(env, "BRIDGE_WIDGET_TRUST_FORWARDED_FOR", "0",
                                              ("0", "1")) == "1",
    }
