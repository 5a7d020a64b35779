"""RQ entry points, named in bridge.jobs. Thin: each builds its dependencies and delegates.

Payloads are JSON dicts (RQ's JSON serializer); tests/test_contract.py pins the names.
"""

from __future__ import annotations

from typing import Any

from workers.automations import run_due_timer, run_ticket_event
from workers.outbound import run_send_outbound
from workers.sweeper import run_sweep_unsent


def send_outbound(payload: dict[str, Any]) -> dict[str, Any]:
    """Send one recorded outbound event (reply, macro, survey, notice) to its channel."""
    return run_send_outbound(payload)


def on_ticket_event(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate triggers for a ticket event and schedule the automations' timers."""
    return run_ticket_event(payload)


def run_timer(payload: dict[str, Any]) -> dict[str, Any]:
    """A timed automation came due; it does nothing if the ticket changed since it was set."""
    return run_due_timer(payload)


def sweep_unsent(payload: dict[str, Any]) -> dict[str, Any]:
    """Enqueue again the recorded sends that never reached a worker, and list the tickets
    whose opening was interrupted before the index update (workers/sweeper.py)."""
    return run_sweep_unsent(payload)
