"""Customer-bound messages that come from macros: applying a macro, sending a CSAT survey.

Shared by the web process (an agent applies a macro) and the workers (triggers and
automations). Each send follows the outbound contract: record ONE outbound event on the
ticket with `TicketStore.update_ticket` (the macro's status / tags / assignee changes go in
the same call), then enqueue `JobQueues.send_outbound(ticket_id, event_id)`; the outbound
worker chooses body, Content or fallback template by the 24-hour window and retries.

Event data written here (what workers/outbound.py and the thread view read):
    kind: "macro" | "automation" | "csat"; macro: name; macro_version; locale;
    content_sid + content_variables (in the window), fallback_content_sid +
    fallback_content_variables (outside it); for surveys: buttons [{id, title}], scores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.changes import Origin
from bridge.core.csat import survey_payload
from bridge.core.macros import SELF_ASSIGNEE, Macro, pick_locale
from bridge.core.outbound import public_message_refusal, session_refusal
from bridge.core.rule_model import AutomationConfig, General
from bridge.core.tickets import Contact, EventType, SessionState, Status, Ticket
from bridge.jobs import JobQueues
from bridge.store.macros import MacroStore
from bridge.store.tickets import Conflict, Idempotency, NotFound, TicketStore
from bridge.templating import (
    DEFAULT_LIMITS,
    Limits,
    RenderRunner,
    TemplateErrors,
    TemplateProblem,
    arender_all,
    macro_context,
)

log = logging.getLogger("bridge.sending")

async def enqueue_send(queues: JobQueues, ticket_id: str, event_id: str) -> bool:
    """Enqueue the send of a recorded outbound event. The event is the source of truth: if
    the enqueue fails (Redis blipped between the two writes, the process is stopping), the
    event is still sent, by the unsent-sends sweep (workers/sweeper.py) within about two
    minutes. Failing the request instead would invite a retry that records a second copy."""
    try:
        await asyncio.to_thread(queues.send_outbound, ticket_id, event_id)
    except Exception:
        log.warning("ticket %s event %s: recorded but not enqueued; the unsent-sends sweep "
                    "will send it", ticket_id, event_id, exc_info=True)
        return False
    return True




@dataclass(frozen=True)
class MacroOutcome:
    ticket: Ticket  # after the change
    event_id: str | None  # the recorded macro event
    sent: bool  # a send was recorded (and enqueued, or left to the unsent-sends sweep)
    status_changed: bool
    session_ended: bool


@dataclass(frozen=True)
class Rendered:
    locale: str
    body: str
    data: dict[str, Any]


def _refuse_closed(ticket: Ticket) -> None:
    if ticket.status is Status.CLOSED:
        raise Conflict("ticket_closed", "the ticket is closed: macros cannot change it")


def _refuse_send(ticket: Ticket) -> None:
    if (refusal := session_refusal(ticket)) is not None:
        raise Conflict(refusal.code, refusal.message)


async def render_macro(
    macro: Macro,
    *,
    ticket: Ticket,
    contact: Contact | None,
    general: General,
    agent_name: str,
    locale: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    run: RenderRunner | None = None,
) -> Rendered:
    """Render a macro's text and template variables for one ticket. `locale` forces a
    variant; otherwise the contact's locale picks it, falling back to the default. `run`
    is where the blocking render runs (the web process's render gate; default: a thread).
    Raises TemplateErrors."""
    wanted = locale or general.locale_for(contact.locale if contact else "",
                                          contact.address if contact else "")
    chosen = pick_locale(macro.locales, wanted, general.default_locale) or wanted
    context = macro_context(ticket=ticket, contact=contact, locale=chosen,
                            agent_name=agent_name, company_name=general.company_name)
    sources: dict[str, str] = {}
    if chosen in macro.locales:
        sources[f"locale:{chosen}"] = macro.locales[chosen]
    for key in ("content_variables", "fallback_content_variables"):
        for var, text in getattr(macro.actions, key).items():
            sources[f"{key}.{var}"] = text
    texts, problems = await arender_all(sources, context, limits, run=run)
    body = texts.get(f"locale:{chosen}", "")
    if not problems and macro.locales and not body and not macro.actions.content_sid:
        problems = [TemplateProblem(f"locale:{chosen}", "empty",
                                    "renders to an empty message")]
    if problems:
        raise TemplateErrors(problems)
    data: dict[str, Any] = {"macro": macro.name, "macro_version": macro.version,
                            "locale": chosen}
    for sid_key, vars_key in (("content_sid", "content_variables"),
                              ("fallback_content_sid", "fallback_content_variables")):
        sid = getattr(macro.actions, sid_key)
        if sid:
            data[sid_key] = sid
            data[vars_key] = {var: texts[f"{vars_key}.{var}"]
                              for var in getattr(macro.actions, vars_key)}
    return Rendered(chosen, body, data)


async def apply_macro(
    *,
    store: TicketStore,
    macros: MacroStore,
    queues: JobQueues,
    general: General,
    ticket_id: str,
    name: str,
    author: str,
    agent_name: str,
    now_ms: int,
    event_type: EventType = EventType.MACRO_APPLIED,
    extra_data: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    idempotency: Idempotency | None = None,
    run: RenderRunner | None = None,
    status_check: Callable[[Ticket, Status | None], None] | None = None,
    macro: Macro | None = None,
) -> MacroOutcome:
    """Render and apply a macro: one recorded event carrying the text, the macro's ticket
    changes in the same update, then the send is enqueued.

    Raises NotFound (ticket), MacroNotFound, Conflict (closed ticket, ended session for a
    macro that sends; `status_check`'s refusals of the macro's status, such as solving
    without the required ticket fields) and TemplateErrors (the text does not render for
    this ticket). `macro`: the version the caller already read and checked (else `name`'s
    current one)."""
    ticket = await store.get_ticket(ticket_id)
    try:
        contact: Contact | None = await store.get_contact(ticket.contact_id)
    except NotFound:
        contact = None
    if macro is None:
        macro = await macros.get(name)
    refuse = _refuse_send if macro.sends else _refuse_closed

    def guard(current: Ticket) -> None:
        refuse(current)
        if status_check is not None:
            status_check(current, macro.actions.status)

    guard(ticket)
    if macro.sends and (refusal := public_message_refusal(
            ticket, contact, now_ms=now_ms,
            has_template=bool(macro.actions.fallback_content_sid),
            template_hint=f"macro {name!r} names none (fallback_content_sid)")):
        raise Conflict(refusal.code, refusal.message)
    rendered = await render_macro(macro, ticket=ticket, contact=contact, general=general,
                                  agent_name=agent_name, limits=limits, run=run)
    actions = macro.actions
    kind = "automation" if event_type is EventType.AUTOMATION else "macro"
    data: dict[str, Any] = {"kind": kind, **rendered.data, **(extra_data or {})}
    assignee = actions.assignee
    if assignee == SELF_ASSIGNEE:
        # "@me" only means something when an agent applies the macro.
        assignee = agent_name if event_type is EventType.MACRO_APPLIED else None
    event: tuple[EventType, str, dict[str, Any]] = (
        (event_type, rendered.body, data) if macro.sends
        else (EventType.TICKET_UPDATED, "", data)
    )
    updated, event_id = await store.update_ticket(
        ticket_id,
        author=author,
        now_ms=now_ms,
        status=actions.status,
        tags=actions.tags_after(ticket.tags),
        assignee=assignee,
        end_session_reason=("agent" if event_type is EventType.MACRO_APPLIED else "automation")
        if actions.end_session else None,
        event=event,
        guard=guard,
        idempotency=idempotency,
        origin=Origin.AGENT if event_type is EventType.MACRO_APPLIED else Origin.AUTOMATION,
    )
    sent = False
    if macro.sends and event_id is not None:
        await enqueue_send(queues, ticket_id, event_id)
        sent = True  # recorded for sending: enqueued now, or by the sweep
    return MacroOutcome(
        ticket=updated,
        event_id=event_id,
        sent=sent,
        status_changed=updated.status is not ticket.status,
        session_ended=actions.end_session and updated.session is SessionState.ENDED,
    )


# ------------------------------------------------------------------ CSAT


@dataclass(frozen=True)
class CsatOutcome:
    event_id: str | None
    skipped: str = ""  # why nothing was sent: already_sent, no_template_outside_window, ...


def csat_buttons(config: AutomationConfig, ticket_id: str, locale: str) -> list[dict[str, str]]:
    titles = config.csat.button_titles
    chosen = pick_locale(titles, locale, config.general.default_locale)
    names = titles[chosen] if chosen else tuple(str(s) for s in config.csat.scores)
    return [{"id": survey_payload(ticket_id, score), "title": title}
            for score, title in zip(config.csat.scores, names, strict=True)]


async def send_csat(
    *,
    store: TicketStore,
    macros: MacroStore,
    queues: JobQueues,
    config: AutomationConfig,
    ticket_id: str,
    now_ms: int,
    reason: str,
    limits: Limits = DEFAULT_LIMITS,
) -> CsatOutcome:
    """Send the satisfaction survey for a ticket, at most once per ticket ever.

    The once-only marker is the ticket's own `csat_sent_at_ms` field, set with HSETNX (it
    lives as long as the ticket; RQ job uniqueness expires with the job). Inside the window
    the survey goes as Content quick replies when `[csat] content_sid` is set (button ids
    `csat:<ticket>:<score>`), else as plain text asking for a 1-5 rating; outside the
    window only as the approved template `[csat] fallback_content_sid`, and not at all
    without one. The contact's `survey_ticket` / `survey_at_ms` fields tell the routing
    that the next rating answers this survey."""
    ticket = await store.get_ticket(ticket_id)
    if ticket.csat_sent_at_ms:
        return CsatOutcome(None, "already_sent")
    contact = await store.get_contact(ticket.contact_id)
    csat = config.csat
    macro = await macros.get(csat.macro)
    content_sid = csat.content_sid or macro.actions.content_sid
    fallback_sid = csat.fallback_content_sid or macro.actions.fallback_content_sid
    refusal = public_message_refusal(ticket, contact, now_ms=now_ms,
                                     has_template=bool(fallback_sid), survey=True)
    if refusal is not None:
        # Surveys are skipped, not errors: say why in the terms the automations report.
        skipped = {"outside_window": "no_template_outside_window"}.get(refusal.code,
                                                                       refusal.code)
        return CsatOutcome(None, skipped)
    rendered = await render_macro(macro, ticket=ticket, contact=contact,
                                  general=config.general,
                                  agent_name=ticket.assignee or config.general.company_name,
                                  limits=limits)
    if not await store.claim_csat(ticket_id, now_ms):
        return CsatOutcome(None, "already_sent")
    data: dict[str, Any] = {
        "kind": "csat",
        "reason": reason,
        **rendered.data,
        "buttons": csat_buttons(config, ticket_id, rendered.locale),
        "scores": list(csat.scores),
    }
    # The Content templates take the ticket id as variable 1 (in the button ids).
    if content_sid:
        data["content_sid"] = content_sid
        data["content_variables"] = {"1": ticket_id, **data.get("content_variables", {})}
    if fallback_sid:
        data["fallback_content_sid"] = fallback_sid
        data["fallback_content_variables"] = {
            "1": ticket_id, **data.get("fallback_content_variables", {})}
    _, event_id = await store.update_ticket(
        ticket_id, author="system", now_ms=now_ms,
        event=(EventType.CSAT_SENT, rendered.body, data),
    )
    assert event_id is not None
    await store.open_survey(ticket_id, now_ms)
    await enqueue_send(queues, ticket_id, event_id)
    return CsatOutcome(event_id)
