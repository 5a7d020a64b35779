"""The error every settings reader raises (environment and files alike)."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""
