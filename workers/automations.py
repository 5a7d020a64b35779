"""Triggers and timed automations (config/automations.toml) run by the workers.

`workers.tasks.on_ticket_event` -> `handle_ticket_event(deps, payload)`, payload
`{"ticket_id", "trigger", "version", "event_id"}`:
  1. every enabled trigger listening to `trigger` whose conditions hold on the ticket as it
     is now runs its actions, at most once per (trigger, ticket, event): a Redis SET NX
     marker taken before acting, so a retried job never sends a notice twice;
  2. the timers of the automations whose conditions (other than time) hold are set with
     RQ's scheduler (`enqueue_at` on the housekeeping queue).

`workers.tasks.run_timer` -> `handle_due_timer(deps, payload)`, payload
`{"ticket_id", "automation", "version", "anchor_ms", "due_ms"}`: does nothing when the
ticket's moment (`since`: solved / created / updated) is no longer `anchor_ms` (re-solved,
updated again: a newer timer exists) or the conditions stopped holding (reopened,
closed, tag removed); otherwise runs the actions. Comparing the moment rather than the
whole ticket's version lets a solved ticket still close after a CSAT answer or a note
touched it. The job id is `timer-<ticket>-<automation>-<anchor>`, so setting the same
timer twice schedules it once.

Actions: `apply_macro` goes to the live conversation: the ticket itself, or when its
session ended or it was closed, its latest follow-up (the thread-limit notice is sent on
the new ticket the routing opened). Then the ticket changes, then `send_csat`. Changes made
by triggers and automations do not fire triggers again (no loops), but they do set the
timers the new state calls for. A failed action is recorded as an internal note on the
ticket and in the job's result.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from bridge import jobs, people
from bridge.core.changes import Origin
from bridge.core.rule_model import Automation, AutomationConfig, RuleActions
from bridge.core.rule_parsing import load_config
from bridge.core.teams import Actor, Role
from bridge.core.tickets import EventType, SessionState, Status, Ticket
from bridge.jobs import JobQueues
from bridge.sending import apply_macro, send_csat
from bridge.store import keys
from bridge.store.claims import new_token
from bridge.store.macros import MacroNotFound, MacroStore, load_shipped
from bridge.store.teams import TeamStore
from bridge.store.tickets import Conflict, NotFound, TicketStore
from bridge.templating import DEFAULT_LIMITS, Limits, TemplateErrors

log = logging.getLogger("workers.automations")

TRIGGER_MARKER_TTL_S = 7 * 24 * 3600
FOLLOW_UP_HOPS = 5


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Deps:
    store: TicketStore
    macros: MacroStore
    queues: JobQueues
    config: AutomationConfig
    clock: Callable[[], int] = now_ms
    limits: Limits = DEFAULT_LIMITS
    # BRIDGE_AGENT_TOKENS' agents: a rule may assign to them (they have no person record).
    token_agents: frozenset[str] = frozenset()


# A rule's update refused for who or where it assigns: a misconfigured rule, said on the
# ticket (the others, a closed ticket for one, are the ticket's state, not the rule's).
_ASSIGNMENT_REFUSALS = frozenset({"not_a_member", "unknown_agent", "unknown_group"})


@dataclass
class ActionReport:
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


# ------------------------------------------------------------------ worker dependencies


@functools.lru_cache(maxsize=4)
def _config(path: Path) -> AutomationConfig:
    return load_config(path)


def worker_deps(store: TicketStore, aredis: redis.asyncio.Redis, sync_redis: redis.Redis,
                config_dir: Path, *, token_agents: frozenset[str]) -> Deps:
    """The automations' dependencies on a worker's Redis pools (workers.tasks builds them
    once per worker runtime)."""
    return Deps(
        store=store,
        macros=MacroStore(aredis, load_shipped()),
        queues=JobQueues(sync_redis),
        config=_config(config_dir / "automations.toml"),
        token_agents=token_agents,
    )


# ------------------------------------------------------------------ triggers


async def handle_ticket_event(deps: Deps, payload: dict[str, Any]) -> dict[str, Any]:
    ticket_id = str(payload["ticket_id"])
    trigger = str(payload["trigger"])
    event_id = str(payload.get("event_id") or "")
    out: dict[str, Any] = {"ticket_id": ticket_id, "trigger": trigger, "fired": [],
                           "scheduled": [], "errors": []}
    try:
        ticket = await deps.store.get_ticket(ticket_id)
    except NotFound:
        out["skipped"] = "ticket_not_found"
        return out
    now = deps.clock()
    touched = {ticket_id}
    run = new_token()  # this run's claim on each trigger's marker
    for rule in deps.config.triggers_for(trigger):
        if not rule.when.matches(ticket, now):
            continue
        if event_id and not await deps.store.claims.take(
            keys.trigger_marker(rule.name, ticket_id, event_id), run,
            ttl_ms=TRIGGER_MARKER_TTL_S * 1000,
        ):
            continue  # this job ran before (RQ retried it): at most once
        report = await execute(deps, f"trigger:{rule.name}", rule.then, ticket, now,
                               reason=trigger)
        out["fired"].append(rule.name)
        out["errors"] += report.errors
        touched |= report.touched
        ticket = await deps.store.get_ticket(ticket_id)
    for tid in sorted(touched):
        out["scheduled"] += await schedule_timers(deps, await deps.store.get_ticket(tid))
    log.info("ticket %s %s: fired %s, timers %s", ticket_id, trigger, out["fired"],
             out["scheduled"])
    return out


# ------------------------------------------------------------------ timers


async def schedule_timers(deps: Deps, ticket: Ticket) -> list[str]:
    """Set the timer of every automation that may apply to the ticket in its current state.
    Returns the job ids."""
    scheduled: list[str] = []
    for automation in deps.config.automations:
        if not automation.enabled or not automation.should_schedule(ticket):
            continue
        scheduled.append(await schedule_timer(deps, automation, ticket))
    return scheduled


async def schedule_timer(deps: Deps, automation: Automation, ticket: Ticket) -> str:
    anchor = automation.anchor_ms(ticket)
    due = automation.due_ms(ticket)
    assert due is not None
    payload = {"ticket_id": ticket.id, "automation": automation.name,
               "version": ticket.version, "anchor_ms": anchor, "due_ms": due}
    job_id = jobs.job_id("timer", ticket.id, automation.name, str(anchor))
    # RQ keeps a scheduled time in whole seconds, truncated, and its scheduler moves what is
    # due by the current whole second: rounded down, a timer would fire up to a second
    # before its due time. Rounded up, it never fires early.
    at = datetime.fromtimestamp(math.ceil(due / 1000), tz=UTC)
    await asyncio.to_thread(functools.partial(
        deps.queues.enqueue, jobs.QUEUE_HOUSEKEEPING, jobs.RUN_TIMER, payload, job_id=job_id,
        at=at, retry=jobs.CRASH_RETRY))
    return job_id


async def handle_due_timer(deps: Deps, payload: dict[str, Any]) -> dict[str, Any]:
    ticket_id = str(payload["ticket_id"])
    name = str(payload["automation"])
    out: dict[str, Any] = {"ticket_id": ticket_id, "automation": name}
    automation = deps.config.automation(name)
    if automation is None or not automation.enabled:
        out["skipped"] = ["automation_removed"]
        return out
    try:
        ticket = await deps.store.get_ticket(ticket_id)
    except NotFound:
        out["skipped"] = ["ticket_not_found"]
        return out
    anchor = int(payload.get("anchor_ms") or 0)
    if not anchor:  # a timer set without its moment: only the exact version counts
        if ticket.version != int(payload.get("version") or -1):
            out["skipped"] = ["ticket_changed"]
            return out
        anchor = automation.anchor_ms(ticket)
    # The scheduler only enqueues due jobs; a few ms of clock skew between hosts must not
    # make "1 hour after solved" fail its own time condition.
    now = max(deps.clock(), int(payload.get("due_ms") or 0))
    reasons = automation.should_fire(ticket, anchor_ms=anchor, now_ms=now)
    if reasons:
        out["skipped"] = reasons
        if automation.anchor_ms(ticket) != anchor and automation.should_schedule(ticket):
            # The moment moved without a trigger job to set the timer again (a tag or a
            # field changed, for `since = "updated"`): this one sets it for the new moment.
            out["scheduled"] = [await schedule_timer(deps, automation, ticket)]
        return out
    marker = keys.timer_marker(jobs.job_id("timer", ticket_id, name, str(anchor)))
    if not await deps.store.claims.take(marker, new_token(),
                                        ttl_ms=TRIGGER_MARKER_TTL_S * 1000):
        out["skipped"] = ["already_fired"]  # this timer ran before (RQ retried it)
        return out
    report = await execute(deps, f"automation:{name}", automation.then, ticket, now,
                           reason=name)
    out.update(fired=True, done=report.done, errors=report.errors, scheduled=[])
    for tid in sorted(report.touched):
        out["scheduled"] += await schedule_timers(deps, await deps.store.get_ticket(tid))
    log.info("timer %s on ticket %s fired: %s", name, ticket_id, report.done)
    return out


# ------------------------------------------------------------------ actions


async def live_conversation(store: TicketStore, ticket: Ticket) -> Ticket | None:
    """Where a message to the customer can go: the ticket, or when its session ended or
    it was closed, the newest follow-up along the chain (a few hops at most)."""
    current = ticket
    for _ in range(FOLLOW_UP_HOPS):
        if current.status is not Status.CLOSED and current.session is SessionState.ACTIVE:
            return current
        if not current.follow_ups:
            return None
        current = await store.get_ticket(current.follow_ups[-1])
    return None


async def _note(deps: Deps, ticket_id: str, text: str, now: int) -> None:
    try:
        await deps.store.add_event(ticket_id, EventType.NOTE, author="system", body=text,
                                   now_ms=now)
    except Exception:
        log.exception("could not add a note to ticket %s", ticket_id)


# Rules act as an admin would, within what the API allows anyone: the group exists, the
# assignee may hold tickets and is a member of the ticket's group.
_RULES = Actor(name="automation", role=Role.ADMIN)


async def _assignee_after(deps: Deps, actions: RuleActions, current: Ticket) -> str | None:
    """The assignee a rule's update sets, held to the API's rules (bridge.people). A rule
    that only moves the ticket to a group its holder is not in hands it back to that group
    (unassigned, for the assignment to place); a rule whose change the API would refuse
    changes nothing (Conflict, noted on the ticket)."""
    teams = TeamStore(deps.store.redis)
    problem = await people.assignment_problem(
        teams, deps.token_agents, _RULES, current, group=actions.set_group,
        assignee=actions.assign)
    if (problem is not None and problem.code == "not_a_member" and actions.assign is None
            and actions.set_group is not None):
        return ""
    if problem is not None:
        raise Conflict(problem.code, problem.message)
    return actions.assign


async def execute(deps: Deps, author: str, actions: RuleActions, ticket: Ticket, now: int,
                  *, reason: str) -> ActionReport:
    """Run a rule's actions on a ticket: apply_macro, then the changes, then send_csat."""
    report = ActionReport()
    general = deps.config.general
    if actions.apply_macro:
        target = await live_conversation(deps.store, ticket)
        if target is None:
            report.errors.append(f"{author}: no live conversation for macro "
                                 f"{actions.apply_macro!r}")
        else:
            extra: dict[str, Any] = {"rule": author, "reason": reason}
            if target.id != ticket.id:
                extra["source_ticket_id"] = ticket.id
            try:
                outcome = await apply_macro(
                    store=deps.store, macros=deps.macros, queues=deps.queues, general=general,
                    ticket_id=target.id, name=actions.apply_macro, author=author,
                    agent_name=target.assignee or general.company_name, now_ms=now,
                    event_type=EventType.AUTOMATION, extra_data=extra, limits=deps.limits,
                )
                report.done.append(f"apply_macro:{actions.apply_macro}@{target.id}")
                if outcome.status_changed or outcome.session_ended:
                    report.touched.add(target.id)
            except (Conflict, TemplateErrors, MacroNotFound, NotFound) as exc:
                why = exc.message if isinstance(exc, Conflict) else str(exc)
                report.errors.append(f"{author}: macro {actions.apply_macro!r}: {why}")
                await _note(deps, ticket.id, f"{author} could not send macro "
                            f"{actions.apply_macro!r}: {why}", now)
    if actions.changes_ticket:
        current = await deps.store.get_ticket(ticket.id)
        try:
            assignee = await _assignee_after(deps, actions, current)
            updated, _ = await deps.store.update_ticket(
                ticket.id, author=author, now_ms=now, status=actions.set_status,
                tags=actions.tags_after(current.tags), assignee=assignee,
                group=actions.set_group, origin=Origin.AUTOMATION,
            )
            report.done.append("update")
            if updated.status is not current.status:
                report.touched.add(ticket.id)
        except Conflict as exc:
            report.errors.append(f"{author}: {exc.message}")
            if exc.code in _ASSIGNMENT_REFUSALS:
                await _note(deps, ticket.id, f"{author} did not change the ticket: "
                            f"{exc.message}", now)
    if actions.send_csat:
        try:
            csat = await send_csat(store=deps.store, macros=deps.macros, queues=deps.queues,
                                   config=deps.config, ticket_id=ticket.id, now_ms=now,
                                   reason=reason, limits=deps.limits)
            report.done.append(f"send_csat:{csat.skipped or 'sent'}")
        except (Conflict, TemplateErrors, MacroNotFound, NotFound) as exc:
            why = exc.message if isinstance(exc, Conflict) else str(exc)
            report.errors.append(f"{author}: survey: {why}")
            await _note(deps, ticket.id, f"{author} could not send the survey: {why}", now)
    return report
