"""Macro API: read, edit (admin), preview, validate, version history, rollback (applying
one to a ticket is bridge/web/macro_apply.py's).

    GET  /api/v1/macros                       {"macros": [macro]}
    GET  /api/v1/macros/{name}                macro
    PUT  /api/v1/macros/{name}                admin; {"title", "locales", "actions"} -> macro
                                              (the new version)
    POST /api/v1/macros/{name}/preview        {"ticket_id"?, "locale"?, draft?} -> rendered
    POST /api/v1/macros/{name}/validate       {draft?} -> {"valid": true} or 422
    POST /api/v1/macros/{name}/rollback       admin; {"version": n} -> macro
    GET  /api/v1/macros/{name}/versions       {"name", "current", "versions": [...]}

A draft is the PUT body (title / locales / actions): preview and validate check an edit
before it is saved. A template that fails answers 422 with code "invalid_template", a
message naming the template, line and reason, and the list in "problems".

Rendering is bounded (README "Macro rendering limits", web/rendering.py): too many locales is 422
"too_many_variants"; a spent request budget 422 "render_budget_exceeded" (the templates not
reached under "unchecked"); a full render gate 503 "busy" or 429 "too_many_renders".

The app may put a MacroStore under `macros_key` and the rules under `automations_key`;
otherwise they are built from the Redis client and `config_dir/automations.toml`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.core.macros import (
    SELF_ASSIGNEE,
    Macro,
    MacroError,
    check_name,
    check_variants,
    parse_macro,
)
from bridge.core.rule_model import AutomationConfig
from bridge.core.rule_parsing import load_config
from bridge.core.teams import Access, Permission, allowed
from bridge.sending import render_macro
from bridge.store.macros import MacroNotFound, MacroStore, load_shipped
from bridge.store.tickets import NotFound
from bridge.templating import (
    DEFAULT_LIMITS,
    FIXTURE_TICKET,
    Limits,
    TemplateErrors,
    TemplateProblem,
    fixture_contact,
    validate_macro,
)
from bridge.web.access import assignable, need
from bridge.web.auth import Principal, principal, require_admin
from bridge.web.bodies import json_object
from bridge.web.errors import ApiError, not_found, unprocessable
from bridge.web.keys import redis_key, settings_key, store_key
from bridge.web.rendering import render_gate_key
from bridge.web.serialize import iso

log = logging.getLogger("bridge.macros")

macros_key = web.AppKey("macros", MacroStore)
automations_key = web.AppKey("automations", AutomationConfig)

_DRAFT_FIELDS = frozenset({"title", "locales", "actions"})


def now_ms() -> int:
    return int(time.time() * 1000)


@functools.cache
def shipped_macros() -> dict[str, Macro]:
    """bridge/templates/macros/*.toml, read once per process (`bridge check` validates them)."""
    return load_shipped()


@functools.lru_cache(maxsize=8)
def _config(path: Path) -> AutomationConfig:
    return load_config(path)


def automation_config(app: web.Application) -> AutomationConfig:
    found = app.get(automations_key)
    if found is not None:
        return found
    return _config(app[settings_key].config_dir / "automations.toml")


def macro_store(app: web.Application) -> MacroStore:
    found = app.get(macros_key)
    if found is not None:
        return found
    return MacroStore(app[redis_key], shipped_macros())


# ------------------------------------------------------------------ shapes


def macro_json(macro: Macro) -> dict[str, Any]:
    return {
        "name": macro.name,
        "title": macro.title,
        "version": macro.version,
        "locales": dict(macro.locales),
        "actions": macro.actions.to_dict(),
        "sends": macro.sends,
        "updated_at": iso(macro.updated_at_ms),
        "updated_by": macro.updated_by or None,
        "note": macro.note or None,
    }


def invalid_template(problems: list[TemplateProblem]) -> web.Response:
    """422: `invalid_template` when every template was checked, else
    `render_budget_exceeded` with the templates not checked under "unchecked" (the macro
    as a whole takes too long to render: it cannot be saved as it is)."""
    unchecked = [p.key for p in problems if p.kind == "budget"]
    found = [p for p in problems if p.kind != "budget"]
    error: dict[str, Any] = {"code": "invalid_template",
                             "message": "; ".join(p.describe() for p in problems),
                             "problems": [p.to_dict() for p in problems]}
    if unchecked:
        error["code"] = "render_budget_exceeded"
        error["message"] = (
            "the render budget for this request was spent before every template was "
            f"checked; not checked: {', '.join(unchecked)}"
            + "".join(f"; {p.describe()}" for p in found))
        error["unchecked"] = unchecked
    return web.json_response({"error": error}, status=422)


def _invalid_macro(exc: MacroError) -> ApiError:
    return unprocessable(f"{exc.field}: {exc.message}", "invalid_macro")


async def _json(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The JSON object body; an empty body is an empty object."""
    return await json_object(request, allowed, optional=True)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        return check_name(name)
    except MacroError:
        raise not_found(f"macro {name!r} not found") from None


async def _current(request: web.Request, name: str) -> Macro:
    try:
        return await macro_store(request.app).get(name)
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None


def _check_variants(request: web.Request, macro: Macro) -> Macro:
    try:
        check_variants(macro, request.app[settings_key].max_variants_per_macro)
    except MacroError as exc:
        raise unprocessable(f"{exc.field}: {exc.message}", "too_many_variants") from None
    return macro


async def _over_current(request: web.Request, name: str, draft: dict[str, Any]
                        ) -> dict[str, Any]:
    """A draft over the saved macro: a field left out (title, locales, actions) is the
    current version's, so what is previewed, validated and saved is one macro. An update of
    the actions alone saved a macro with no text before (the customer then got nothing,
    silently); "locales": {} or "actions": {} clears them."""
    with contextlib.suppress(MacroNotFound, MacroError):  # a new macro: nothing to keep
        return {**(await macro_store(request.app).get(name)).to_dict(), **draft}
    return draft


async def _draft(request: web.Request, who: Principal, name: str, data: dict[str, Any]
                 ) -> Macro | None:
    """The draft in the body, if any, over the saved macro. Only those who may edit macros
    send one: a draft is a template of the sender's own, which rendered against a ticket
    reads whatever the template names, and holds the render threads as long as it likes."""
    draft = {k: v for k, v in data.items() if k in _DRAFT_FIELDS}
    if not draft:
        return None
    if not allowed(who.role, Permission.MACROS_EDIT):
        raise ApiError(403, "forbidden", "only admins render drafts; send no title, locales "
                                         "or actions to preview the macro as saved")
    try:
        macro = parse_macro(name, await _over_current(request, name, draft),
                            source_limit=DEFAULT_LIMITS.source_max)
    except MacroError as exc:
        raise _invalid_macro(exc) from None
    return _check_variants(request, macro)


def render_limits(request: web.Request) -> Limits:
    """One request's render limits: the defaults with the configured total budget."""
    budget_s = request.app[settings_key].render_request_budget_s
    return replace(DEFAULT_LIMITS, budget_s=budget_s)


async def _check_assignee(request: web.Request, macro: Macro) -> None:
    """A macro that assigns names someone a ticket may be assigned to, as a PATCH must
    (or unassigns, or names the applying agent)."""
    assignee = macro.actions.assignee
    if assignee and assignee != SELF_ASSIGNEE and await assignable(request.app, assignee) is None:
        raise unprocessable(
            f"actions.assignee: {assignee[:64]!r} is not someone a ticket may be assigned to "
            f"(an agent of GET /api/v1/agents, not read-only); \"\" unassigns, "
            f"{SELF_ASSIGNEE!r} is the agent who applies the macro", "invalid_macro")


async def _validate(request: web.Request, macro: Macro, who: Principal) -> list[TemplateProblem]:
    """Every template of the macro, rendered on the render gate as `who` (429/503 when
    full); refuses a macro over the variant cap or assigning to no agent first."""
    _check_variants(request, macro)
    await _check_assignee(request, macro)
    company = automation_config(request.app).general.company_name
    job = functools.partial(validate_macro, macro, company_name=company,
                            limits=render_limits(request))
    return await request.app[render_gate_key].run(job, user=who.name)


# ------------------------------------------------------------------ handlers


async def list_macros(request: web.Request) -> web.Response:
    principal(request)
    macros = await macro_store(request.app).all()
    return web.json_response({"macros": [macro_json(m) for m in macros]})


async def get_macro(request: web.Request) -> web.Response:
    principal(request)
    return web.json_response(macro_json(await _current(request, _name(request))))


async def put_macro(request: web.Request) -> web.Response:
    who = require_admin(request)
    name = request.match_info["name"]
    data = await _json(request, _DRAFT_FIELDS)
    if "locales" not in data and "actions" not in data:
        raise unprocessable("send locales and/or actions", "invalid_macro")
    try:
        macro = parse_macro(name, await _over_current(request, name, data),
                            source_limit=DEFAULT_LIMITS.source_max)
    except MacroError as exc:
        raise _invalid_macro(exc) from None
    problems = await _validate(request, macro, who)
    if problems:
        return invalid_template(problems)
    saved = await macro_store(request.app).save(macro, author=who.name, now_ms=now_ms())
    log.info("macro %s saved as version %d by %s", name, saved.version, who.name)
    return web.json_response(macro_json(saved))


async def preview_macro(request: web.Request) -> web.Response:
    who = principal(request)
    name = _name(request)
    request.app[render_gate_key].check(who.name)  # a refusal costs no body parsing
    data = await _json(request, _DRAFT_FIELDS | {"ticket_id", "locale"})
    macro = await _draft(request, who, name, data) or await _current(request, name)
    config = automation_config(request.app)
    locale = data.get("locale")
    if locale is not None and not isinstance(locale, str):
        raise unprocessable("locale must be a string such as en or fr")
    ticket_id = data.get("ticket_id")
    if ticket_id is None:
        ticket = FIXTURE_TICKET
        contact = fixture_contact(locale or config.general.default_locale)
    else:
        if not isinstance(ticket_id, str | int) or isinstance(ticket_id, bool):
            raise unprocessable("ticket_id must be a ticket id")
        store = request.app[store_key]
        try:
            ticket = await store.get_ticket(str(ticket_id))
        except NotFound:
            raise not_found(f"ticket {ticket_id} not found") from None
        need(who, ticket, Access.READ)  # a preview shows the ticket's fields and contact
        try:
            contact = await store.get_contact(ticket.contact_id)
        except NotFound:
            contact = None
    try:
        rendered = await render_macro(macro, ticket=ticket, contact=contact,
                                      general=config.general, agent_name=who.name,
                                      locale=locale, limits=render_limits(request),
                                      run=request.app[render_gate_key].runner(who.name))
    except TemplateErrors as exc:
        return invalid_template(exc.problems)
    return web.json_response({
        "macro": macro.name,
        "version": macro.version,
        "locale": rendered.locale,
        "body": rendered.body,
        "content_variables": rendered.data.get("content_variables"),
        "fallback_content_variables": rendered.data.get("fallback_content_variables"),
        "actions": macro.actions.to_dict(),
        "sends": macro.sends,
    })


async def validate_macro_handler(request: web.Request) -> web.Response:
    who = principal(request)
    name = request.match_info["name"]
    try:
        check_name(name)
    except MacroError as exc:
        raise _invalid_macro(exc) from None
    request.app[render_gate_key].check(who.name)  # a refusal costs no body parsing
    data = await _json(request, _DRAFT_FIELDS)
    macro = await _draft(request, who, name, data)
    if macro is None:
        try:
            macro = await macro_store(request.app).get(name)
        except MacroNotFound:
            # Validation is about a text: with no draft and no stored macro there is none.
            raise unprocessable(f"macro {name!r} does not exist: send a draft (locales, "
                                "actions) to validate a new one", "invalid_macro") from None
    problems = await _validate(request, macro, who)
    if problems:
        return invalid_template(problems)
    return web.json_response({"valid": True, "macro": name, "problems": []})


async def rollback_macro(request: web.Request) -> web.Response:
    who = require_admin(request)
    name = _name(request)
    data = await _json(request, frozenset({"version"}))
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise unprocessable("version must be a version number (0 is the shipped default)")
    store = macro_store(request.app)
    try:
        old = await store.get_version(name, version)
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    problems = await _validate(request, old, who)
    if problems:
        return invalid_template(problems)
    saved = await store.rollback(name, version, author=who.name, now_ms=now_ms())
    log.info("macro %s rolled back to version %d by %s (now version %d)", name, version,
             who.name, saved.version)
    return web.json_response(macro_json(saved))


async def list_versions(request: web.Request) -> web.Response:
    principal(request)
    name = _name(request)
    try:
        versions = await macro_store(request.app).versions(name)
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    return web.json_response({
        "name": name,
        "current": versions[0].version,
        "versions": [
            {"version": v.version, "updated_at": iso(v.updated_at_ms),
             "updated_by": v.updated_by or None, "note": v.note or None}
            for v in versions
        ],
    })


routes: list[web.RouteDef] = [
    web.get("/api/v1/macros", list_macros),
    web.get("/api/v1/macros/{name}", get_macro),
    web.put("/api/v1/macros/{name}", put_macro),
    web.post("/api/v1/macros/{name}/preview", preview_macro),
    web.post("/api/v1/macros/{name}/validate", validate_macro_handler),
    web.post("/api/v1/macros/{name}/rollback", rollback_macro),
    web.get("/api/v1/macros/{name}/versions", list_versions),
]
