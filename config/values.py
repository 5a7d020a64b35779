"""Reading one setting's value from the environment: numbers, choices, URLs, keys. A value
that cannot be used is a SettingsError naming the variable (config/settings.py reads them
all at once; config/widget_settings.py the widget's)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from config.errors import SettingsError


class Secret:
    """A string that never shows in repr or logs; call str() at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


KEY_MIN_CHARS = 32



def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = (f"between {minimum} and {maximum}" if maximum is not None
                 else f"at least {minimum}")
        raise SettingsError(f"{name} must be {bound}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "") or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def redis_url_value(raw: str) -> str:
    if raw and urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
    return raw


def base_url_value(raw: str, *, name: str = "PUBLIC_BASE_URL") -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http(s) URL such as https://bridge.example.com")
    return raw.rstrip("/")


def agent_tokens_value(raw: str) -> dict[str, Secret]:
    tokens: dict[str, Secret] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, token = (part.strip() for part in item.partition(":"))
        if not sep or not name or len(token) < 8:
            raise SettingsError(
                "BRIDGE_AGENT_TOKENS must be name:token pairs separated by commas, "
                "tokens of at least 8 characters"
            )
        if name in tokens:
            raise SettingsError(f"BRIDGE_AGENT_TOKENS: agent {name!r} is listed twice")
        tokens[name] = Secret(token)
    return tokens
