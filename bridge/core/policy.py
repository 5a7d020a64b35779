"""Per-channel policies (loaded from config/bridge.toml by config.settings)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SolvedReply(StrEnum):
    """What a customer's reply to a solved ticket does."""

    REOPEN = "reopen"  # Zendesk's "one-touch ticketing"
    FOLLOW_UP = "follow_up"


@dataclass(frozen=True, kw_only=True)
class ChannelPolicy:
    solved_reply: SolvedReply = SolvedReply.REOPEN
    max_thread_messages: int = 1000
    # 0 disables the age limit.
    max_thread_age_s: int = 0
    aging_yellow_after_s: int = 18 * 3600
    aging_red_after_s: int = 24 * 3600
    # How long a bare rating ("5", "👍") counts as an answer to an outstanding survey.
    csat_window_s: int = 24 * 3600

    def __post_init__(self) -> None:
        if self.max_thread_messages < 1:
            raise ValueError("max_thread_messages must be at least 1")
        if self.max_thread_age_s < 0:
            raise ValueError("max_thread_age_s must be 0 (off) or positive")
        if not 0 < self.aging_yellow_after_s <= self.aging_red_after_s:
            raise ValueError(
                "aging_yellow_after_s and aging_red_after_s must satisfy 0 < yellow <= red"
            )
        if self.csat_window_s < 0:
            raise ValueError("csat_window_s must not be negative")
