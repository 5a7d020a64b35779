"""The macro editor: every macro listed, each one's text per locale and its actions, a live
preview of a draft against a chosen ticket, validation errors with their line, the version
history with a diff of each version, and rollback. Admins edit; agents read (and apply
macros from a ticket's page). Saving goes through the same checks as the API
(bridge/web/macros.py): every template rendered in the sandbox before it is stored."""

from __future__ import annotations

import difflib
import json
import time
from typing import Any

from aiohttp import web

from bridge.core.macros import Macro, MacroError, check_name, parse_macro
from bridge.core.teams import Access
from bridge.core.tickets import Contact
from bridge.sending import render_macro
from bridge.store.macros import MacroNotFound
from bridge.store.tickets import NotFound
from bridge.templating import DEFAULT_LIMITS, FIXTURE_TICKET, TemplateErrors, fixture_contact
from bridge.web.access import need
from bridge.web.auth import Principal, Role
from bridge.web.bodies import read_form
from bridge.web.errors import ApiError, not_found, unprocessable
from bridge.web.keys import store_key
from bridge.web.macros import _validate, automation_config, macro_store, render_limits
from bridge.web.rendering import render_gate_key
from bridge.web.ticket_actions import contact_or_none
from bridge.web.workspace.common import page, redirect, render, render_fragment

routes = web.RouteTableDef()


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        return check_name(name)
    except MacroError:
        raise not_found(f"macro {name!r} not found") from None


def _back(request: web.Request) -> str:
    return f"/app/macros/{request.match_info['name']}"


def draft_of(name: str, form: Any) -> Macro:
    """A macro from the editor's fields: title, one text per locale (an emptied text drops
    its locale), a new locale, and the actions as JSON. 422 with the reason otherwise."""
    locales = _draft_locales(form)
    try:
        actions = json.loads(str(form.get("actions", "") or "{}"))
    except json.JSONDecodeError as exc:
        raise unprocessable(f"actions, line {exc.lineno}: not valid JSON ({exc.msg})",
                            "invalid_macro") from None
    except RecursionError:
        raise unprocessable("actions: nested too deep", "invalid_macro") from None
    try:
        return parse_macro(name, {"title": str(form.get("title", "")), "locales": locales,
                                  "actions": actions}, source_limit=DEFAULT_LIMITS.source_max)
    except MacroError as exc:
        raise unprocessable(f"{exc.field}: {exc.message}", "invalid_macro") from None


def _text(value: Any) -> str:
    """A textarea's text as stored: browsers send its line breaks as CRLF, and a save of
    anything else rewrote every locale's text (customers got the CRs)."""
    return str(value).replace("\r\n", "\n")


def _draft_locales(form: Any) -> dict[str, str]:
    locales = {key[len("locale_"):]: _text(value) for key, value in form.items()
               if key.startswith("locale_") and str(value).strip()}
    new_code = str(form.get("new_locale", "")).strip()
    new_text = _text(form.get("new_locale_text", ""))
    if new_code and new_text.strip():
        locales[new_code] = new_text
    return locales


def macro_lines(macro: Macro) -> list[str]:
    """A macro as text, to compare two versions line by line."""
    lines = [f"title = {macro.title}"]
    for locale in sorted(macro.locales):
        lines += [f"[{locale}]", *macro.locales[locale].splitlines()]
    lines += ["[actions]", *json.dumps(macro.actions.to_dict(), indent=2,
                                       sort_keys=True).splitlines()]
    return lines


def diff_lines(old: Macro | None, new: Macro) -> list[tuple[str, str]]:
    """(css class, line) of a unified diff from one version to the next."""
    out = []
    for line in difflib.unified_diff(macro_lines(old) if old else [], macro_lines(new),
                                     lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "diff-add", "-": "diff-del", "@": "diff-hunk"}.get(line[:1], "diff-same")
        out.append((kind, line))
    return out


async def _editor(request: web.Request, who: Principal, macro: Macro | dict[str, Any], *,
                  status: int = 200, problems: list[str] | None = None,
                  actions_text: str | None = None) -> web.Response:
    """The editor of `macro` (a dict: a draft that did not parse, shown as typed)."""
    name = macro["name"] if isinstance(macro, dict) else macro.name
    versions = await macro_store(request.app).versions(name)
    if actions_text is None:
        assert isinstance(macro, Macro)
        actions_text = json.dumps(macro.actions.to_dict(), indent=2, ensure_ascii=False)
    return render(request, "macro.html", who=who, status=status, macro=macro,
                  actions_json=actions_text, versions=versions, problems=problems or [])


async def _unparsed(request: web.Request, who: Principal, name: str, form: Any,
                    problem: str) -> web.Response:
    """A draft that is not a macro (its actions are not JSON, a field is refused) comes
    back as typed with the reason, as a template error does: a redirect would lose it."""
    try:
        version = (await macro_store(request.app).get(name)).version
    except MacroNotFound:
        version = 0
    typed = {"name": name, "version": version, "title": str(form.get("title", "")),
             "locales": _draft_locales(form)}
    return await _editor(request, who, typed, status=422, problems=[problem],
                         actions_text=str(form.get("actions", "")))


@routes.get("/app/macros")
@page()
async def macro_list(request: web.Request, who: Principal) -> web.Response:
    return render(request, "macros.html", who=who,
                  macros=await macro_store(request.app).all())


@routes.get("/app/macros/{name}")
@page()
async def macro_page(request: web.Request, who: Principal) -> web.Response:
    try:
        macro = await macro_store(request.app).get(_name(request))
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    return await _editor(request, who, macro)


@routes.post("/app/macros/{name}")
@page(admin=True, back=_back)
async def macro_save(request: web.Request, who: Principal) -> web.Response:
    name = _name(request)
    form = await read_form(request)
    try:
        draft = draft_of(name, form)
    except ApiError as exc:
        return await _unparsed(request, who, name, form, exc.message)
    problems = await _validate(request, draft, who)
    if problems:
        return await _editor(request, who, draft, status=422,
                             problems=[p.describe() for p in problems])
    saved = await macro_store(request.app).save(draft, author=who.name,
                                                now_ms=int(time.time() * 1000))
    return redirect(request, _back(request), notice=f"Saved as version {saved.version}")


@routes.post("/app/macros/{name}/preview")
@page()
async def macro_preview(request: web.Request, who: Principal) -> web.Response:
    """The draft in the editor rendered for a ticket (or a sample one): a fragment."""
    app = request.app
    form = await read_form(request)
    # An agent's editor has its fields disabled: the macro as stored is previewed, whatever
    # the form holds (a draft is a template of one's own: only admins render those).
    editable = who.role is Role.ADMIN and (
        "actions" in form or any(k.startswith("locale_") for k in form))
    try:
        draft = (draft_of(_name(request), form) if editable
                 else await macro_store(app).get(_name(request)))
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    except ApiError as exc:  # a draft that does not parse is shown as such
        return render_fragment(request, "_preview.html", who=who, body="", problems=[exc.message])
    config = automation_config(app)
    ticket_id = str(form.get("ticket_id", "")).strip()
    ticket = FIXTURE_TICKET
    contact: Contact | None = fixture_contact(config.general.default_locale)
    if ticket_id:
        try:
            ticket = await app[store_key].get_ticket(ticket_id)
        except NotFound:
            return render_fragment(request, "_preview.html", who=who, body="",
                                   problems=[f"ticket {ticket_id} not found"])
        need(who, ticket, Access.READ)  # the preview shows the ticket's fields and contact
        contact = await contact_or_none(app[store_key], ticket)
    locale = str(form.get("preview_locale", "")) or None
    try:
        rendered = await render_macro(draft, ticket=ticket, contact=contact,
                                      general=config.general, agent_name=who.name,
                                      locale=locale, limits=render_limits(request),
                                      run=app[render_gate_key].runner(who.name))
    except TemplateErrors as exc:
        return render_fragment(request, "_preview.html", who=who, body="",
                               problems=[p.describe() for p in exc.problems])
    return render_fragment(request, "_preview.html", who=who, body=rendered.body, problems=[])


@routes.get("/app/macros/{name}/versions/{version}")
@page()
async def macro_version(request: web.Request, who: Principal) -> web.Response:
    store = macro_store(request.app)
    name = _name(request)
    raw = request.match_info["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise not_found(f"version {raw[:20]!r} not found")
    version = int(raw)
    try:
        macro = await store.get_version(name, version)
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    previous = None
    if version > 0:
        try:
            previous = await store.get_version(name, version - 1)
        except MacroNotFound:
            previous = None
    return render(request, "macro_version.html", who=who, macro=macro,
                  diff=diff_lines(previous, macro))


@routes.post("/app/macros/{name}/rollback")
@page(admin=True, back=_back)
async def macro_rollback(request: web.Request, who: Principal) -> web.Response:
    name = _name(request)
    raw = str((await read_form(request)).get("version", ""))
    if not raw.isdigit() or len(raw) > 9:
        raise unprocessable("version must be a version number")
    store = macro_store(request.app)
    try:
        old = await store.get_version(name, int(raw))
    except MacroNotFound as exc:
        raise not_found(str(exc)) from None
    problems = await _validate(request, old, who)
    if problems:
        raise unprocessable("; ".join(p.describe() for p in problems), "invalid_template")
    saved = await store.rollback(name, int(raw), author=who.name,
                                 now_ms=int(time.time() * 1000))
    return redirect(request, _back(request),
                    notice=f"Version {raw} restored as version {saved.version}")
