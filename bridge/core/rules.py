"""Triggers and automations as data (config/automations.toml): one import for both halves.

The rule values and their checks on a ticket are bridge.core.rule_model; reading and
checking the rule file is bridge.core.rule_parsing (it imports the model, never the
reverse). This module only re-exports them, so `bridge.core.rules` keeps every name.
"""

from __future__ import annotations

from bridge.core.rule_model import (
    Automation,
    AutomationConfig,
    Conditions,
    CsatConfig,
    General,
    RuleActions,
    Since,
    Trigger,
)
from bridge.core.rule_parsing import (
    BUTTON_TITLE_MAX,
    MAX_BUTTONS,
    TRIGGER_NAMES,
    RuleError,
    load_config,
    parse_actions,
    parse_automation,
    parse_conditions,
    parse_config,
    parse_csat,
    parse_general,
    parse_trigger,
)

__all__ = [
    "BUTTON_TITLE_MAX",
    "MAX_BUTTONS",
    "TRIGGER_NAMES",
    "Automation",
    "AutomationConfig",
    "Conditions",
    "CsatConfig",
    "General",
    "RuleActions",
    "RuleError",
    "Since",
    "Trigger",
    "load_config",
    "parse_actions",
    "parse_automation",
    "parse_conditions",
    "parse_config",
    "parse_csat",
    "parse_general",
    "parse_trigger",
]
