"""Rendering admin-edited macro templates safely (DESIGN §7, reliability.md §3).

The sandbox (bounded Jinja2, output cap) is bridge.sandbox; the helper processes that give
each render its time, budget and memory limits are bridge.render_helpers. This module is
the API the rest of the bridge uses: `render_all` for several templates against one
context, `arender_all` from async code (through a thread: the web process passes its own
render executor so rendering never waits in, or fills, the loop's default executor that
webhooks use), the render context and the save-time validation.

The render context (documented for admins in docs/macros.md):

    ticket.id, ticket.status, ticket.tags (list), ticket.assignee, ticket.channel,
    ticket.message_count, ticket.created_at (ISO 8601 UTC), ticket.group,
    ticket.fields (ticket field values: {{ ticket.fields.country | default('') }})
    contact.name, contact.first_name, contact.address (masked: whatsapp:+33•••••••78),
    contact.locale
    agent.name            the agent applying the macro (automations: the assignee or
                          the company name)
    company.name          [general] company_name in config/automations.toml
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.core.macros import Macro
from bridge.core.tickets import Contact, Status, Ticket
from bridge.render_helpers import render_isolated
from bridge.sandbox import (
    DEFAULT_LIMITS,
    Limits,
    MacroEnvironment,
    TemplateErrors,
    TemplateProblem,
    make_environment,
    render_here,
)

__all__ = [
    "DEFAULT_LIMITS", "FIXTURE_TICKET", "Limits", "MacroEnvironment", "RenderResult",
    "RenderRunner", "TemplateErrors", "TemplateProblem", "arender_all", "fixture_contact",
    "fixture_context", "macro_context", "make_environment", "mask_address", "render",
    "render_all", "validate_macro",
]

RenderResult = tuple[dict[str, str], list[TemplateProblem]]
# Runs a blocking render somewhere other than the event loop's thread.
RenderRunner = Callable[[Callable[[], RenderResult]], Awaitable[RenderResult]]


def render_all(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, str], list[TemplateProblem]]:
    """Render several templates (e.g. a macro's locales and variables) against one
    context. Returns the texts that rendered and the problems of those that did not.
    Blocking: call from a thread in async code (`arender_all`)."""
    if not sources:
        return {}, []
    # Oversized sources are refused before a process is started.
    too_large = {k for k, s in sources.items() if len(s.encode()) > limits.source_max}
    problems = [
        TemplateProblem(k, "too_large", f"template is {len(sources[k].encode())} bytes; "
                        f"the limit is {limits.source_max}")
        for k in too_large
    ]
    rest = {k: s for k, s in sources.items() if k not in too_large}
    if not rest:
        return {}, problems
    if limits.isolate:
        texts, more = render_isolated(rest, context, limits)
    else:
        texts, more = render_here(rest, context, limits)
    return texts, problems + more


def render(source: str, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
    """Render one template; raises TemplateProblem."""
    texts, problems = render_all({"template": source}, context, limits)
    if problems:
        raise problems[0]
    return texts["template"]


async def arender_all(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS,
    *, run: RenderRunner | None = None,
) -> RenderResult:
    """`render_all` off the event loop: through `run` (the web process's render executor)
    or, without one, a thread of the loop's default executor (workers, scripts)."""
    job = functools.partial(render_all, sources, context, limits)
    if run is None:
        return await asyncio.to_thread(job)
    return await run(job)


# ------------------------------------------------------------------ context


def mask_address(address: str) -> str:
    """`whatsapp:+33612345678` -> `whatsapp:+33•••••••78`: enough to recognise, not to
    copy. The channel prefix is kept; short values are masked whole."""
    prefix, sep, rest = address.rpartition(":")
    head = prefix + sep
    if len(rest) <= 6:
        return head + "•" * len(rest)
    return head + rest[:3] + "•" * (len(rest) - 5) + rest[-2:]


def _iso(ms: int) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def macro_context(
    *,
    ticket: Ticket,
    contact: Contact | None,
    locale: str,
    agent_name: str,
    company_name: str,
) -> dict[str, Any]:
    """The variables a macro sees (plain data only: never put types or modules here)."""
    name = (contact.name if contact else "").strip()
    return {
        "ticket": {
            "id": ticket.id,
            "status": ticket.status.value,
            "tags": list(ticket.tags),
            "assignee": ticket.assignee,
            "channel": ticket.channel,
            "message_count": ticket.message_count,
            "created_at": _iso(ticket.created_at_ms),
            "group": ticket.group,
            "fields": dict(ticket.field_values),
        },
        "contact": {
            "name": name,
            "first_name": name.split()[0] if name else "",
            "address": mask_address(contact.address) if contact else "",
            "locale": locale,
        },
        "agent": {"name": agent_name},
        "company": {"name": company_name},
    }


FIXTURE_TICKET = Ticket(
    id="12345", contact_id="c0ffee", channel="whatsapp", status=Status.OPEN,
    created_at_ms=1_700_000_000_000, updated_at_ms=1_700_000_000_000,
    tags=("vip", "billing"), assignee="alice", message_count=3,
)


def fixture_contact(locale: str = "en") -> Contact:
    return Contact(id="c0ffee", channel="whatsapp", address="whatsapp:+33612345678",
                   name="Ana Lima", locale=locale)


def fixture_context(
    *, locale: str = "en", company_name: str = "Example Support"
) -> dict[str, Any]:
    """What templates are validated against at save time: every documented variable."""
    return macro_context(ticket=FIXTURE_TICKET, contact=fixture_contact(locale), locale=locale,
                         agent_name="Alice", company_name=company_name)


def validate_macro(
    macro: Macro, *, company_name: str = "Example Support", limits: Limits = DEFAULT_LIMITS
) -> list[TemplateProblem]:
    """Render every template of a macro (each locale's text, each Content variable)
    against the fixture context; the problems name the template, the line and the reason.
    An empty list means the macro may be saved. Blocking (one child process)."""
    sources = macro.templates()
    texts, problems = render_all(sources, fixture_context(company_name=company_name), limits)
    for key, text in texts.items():
        if key.startswith("locale:") and not text:
            problems.append(TemplateProblem(key, "empty",
                                            "renders to an empty message for the sample ticket"))
    order = list(sources)
    return sorted(problems, key=lambda p: order.index(p.key) if p.key in order else -1)
