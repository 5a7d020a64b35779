"""The TOML files of BRIDGE_CONFIG_DIR that Settings reads at start (bridge.toml: channel
policies; teams.toml: roles' groups and ticket fields), checked and turned into values.
config/settings.py reads the environment; this module reads the files it names."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bridge.core.messages import Channel
from bridge.core.policy import ChannelPolicy, SolvedReply
from bridge.core.teams import parse_team_config
from bridge.core.ticket_fields import parse_definition
from config.errors import SettingsError


def load_policies(path: Path) -> dict[Channel, ChannelPolicy]:
    """Per-channel policies from bridge.toml: a [defaults] table and one table per channel."""
    if not path.exists():
        raise SettingsError(f"BRIDGE_CONFIG_DIR: {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    defaults = data.get("defaults", {})
    channels = data.get("channels", {})
    if not isinstance(defaults, dict):
        raise SettingsError(f"{path}: defaults must be a table ([defaults])")
    if not isinstance(channels, dict):
        raise SettingsError(f"{path}: channels must be tables ([channels.<name>])")
    unknown = set(channels) - {c.value for c in Channel}
    if unknown:
        raise SettingsError(f"{path}: unknown channel(s) {sorted(unknown)}")
    for name, table in channels.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: channels.{name} must be a table ([channels.{name}])")
    return {
        channel: _policy(path, channel.value, {**defaults, **channels.get(channel.value, {})})
        for channel in Channel
    }


def load_teams(path: Path) -> dict[str, Any]:
    """The `teams` and `config_fields` settings from teams.toml (optional file)."""
    if not path.exists():
        return {}
    try:
        teams = parse_team_config(tomllib.loads(path.read_text(encoding="utf-8")))
        fields = tuple(parse_definition(table) for table in teams.field_tables)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    if len({f.key for f in fields}) != len(fields):
        raise SettingsError(f"{path}: two [[fields]] share a key")
    return {"teams": teams, "config_fields": fields}


_POLICY_FIELDS = {
    "solved_reply": str,
    "max_thread_messages": int,
    "max_thread_age_s": int,
    "aging_yellow_after_s": int,
    "aging_red_after_s": int,
    "csat_window_s": int,
}


def _policy(path: Path, where: str, table: dict[str, Any]) -> ChannelPolicy:
    for key, value in table.items():
        expected = _POLICY_FIELDS.get(key)
        if expected is None:
            raise SettingsError(f"{path} [{where}]: unknown setting {key!r}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise SettingsError(f"{path} [{where}]: {key} must be a {expected.__name__}")
    if "solved_reply" in table:
        choices = [r.value for r in SolvedReply]
        if table["solved_reply"] not in choices:
            raise SettingsError(f"{path} [{where}]: solved_reply must be one of {choices}, "
                                f"got {table['solved_reply']!r}")
        table = {**table, "solved_reply": SolvedReply(table["solved_reply"])}
    try:
        return ChannelPolicy(**table)
    except ValueError as exc:
        raise SettingsError(f"{path} [{where}]: {exc}") from exc
