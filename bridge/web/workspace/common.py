"""What every workspace page shares: the Jinja2 environment, the page guard (session, role,
CSRF), rendering with the security headers, flash messages and redirects."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from bridge.core.teams import Permission, allowed
from bridge.store.tickets import Conflict, NotFound
from bridge.web.access import team_store
from bridge.web.auth import Principal, Role
from bridge.web.bodies import read_form
from bridge.web.errors import ApiError
from bridge.web.session import CSRF_FIELD, check_csrf, csrf_token, load_session, set_cookie
from bridge.web.workspace.charts import duration_text
from bridge.web.workspace.i18n import language, translator

# Whether the signed-in person is available for assignment (the header's toggle; unset for
# a role without it or without a person record).
AVAILABLE_KEY = web.RequestKey("workspace_available", bool)
PageHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
FLASH_COOKIE = "bridge_flash"
# Marks a fragment's answer (render_fragment); bridge/static/workspace.js checks it.
FRAGMENT_HEADER = "X-Workspace-Fragment"
# Pages hold customers' messages: never cached, never framed, scripts only from here.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                "script-src 'self'; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
}




@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bridge", "templates/app"),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["duration"] = duration_text
    return env


def render(request: web.Request, template: str, *, status: int = 200,
           who: Principal | None = None, **context: Any) -> web.Response:
    """A whole page, showing (and so spending) the one-time message left by a redirect,
    when the browser navigates to it: an error answered to a page's script (a live region's
    fetch of a thread the viewer may no longer read) must leave the message to the page."""
    flash = _read_flash(request) if _navigating(request) else None
    response = _rendered(request, template, status, who, flash, context)
    if flash:
        response.del_cookie(FLASH_COOKIE, path="/app")
    return response


def render_fragment(request: web.Request, template: str, *, status: int = 200,
                    who: Principal | None = None, **context: Any) -> web.Response:
    """A part of a page fetched by its script (a live region, a preview). It leaves the
    one-time message alone: a live region refreshed while the browser follows a redirect
    would otherwise spend the message meant for the page being loaded. It is marked as a
    fragment (FRAGMENT_HEADER): the script swaps in nothing else, never a whole page (the
    sign-in page, a refusal)."""
    response = _rendered(request, template, status, who, None, context)
    response.headers[FRAGMENT_HEADER] = "1"
    return response


def _rendered(request: web.Request, template: str, status: int, who: Principal | None,
              flash: dict[str, str] | None, context: dict[str, Any]) -> web.Response:
    lang = language(request)
    body = environment().get_template(template).render(
        _=translator(lang), lang=lang, who=who, csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(request), flash=flash, path=request.path_qs,
        is_admin=who is not None and who.role is Role.ADMIN,
        available=request.get(AVAILABLE_KEY), **context)
    return web.Response(text=body, content_type="text/html", status=status,
                        headers=PAGE_HEADERS)


def _navigating(request: web.Request) -> bool:
    """A browser's navigation, or a client that does not say (no Sec-Fetch-Mode)."""
    return request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"


def _read_flash(request: web.Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return {"kind": value.get("kind", ""), "text": value.get("text", "")[:500]}


def redirect(request: web.Request, location: str, *, notice: str = "",
             error: str = "") -> web.Response:
    """303 to a page of the workspace, with a one-time message shown there."""
    if not location.startswith("/app/") or not location.isprintable():  # never an open
        location = "/app/"  # redirect, nor a header a newline would split
    response = web.Response(status=303, headers={"Location": location, **PAGE_HEADERS})
    if notice or error:
        flash = {"kind": "error" if error else "notice", "text": error or notice}
        encoded = base64.urlsafe_b64encode(json.dumps(flash).encode()).decode()
        set_cookie(request, response, FLASH_COOKIE, encoded, max_age_s=60)
    return response


def error_page(request: web.Request, who: Principal | None, status: int, message: str
               ) -> web.Response:
    """A refusal as a page (the API's answers stay JSON)."""
    return render(request, "error.html", status=status, who=who, status_code=status,
                  message=message)


def sign_in_url(request: web.Request) -> str:
    """The sign-in page, then back to this one (only navigations are sent there: the page
    guard answers a script's fetch 401, so `next` is never a fragment's URL)."""
    return f"/app/sign-in?next={quote(request.path_qs, safe='')}"


def page(*, admin: bool = False, back: Callable[[web.Request], str] | None = None
         ) -> Callable[[PageHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Guard a page: a session (else the sign-in page for GET, 401 otherwise), the admin
    role where asked (403), and the session's CSRF token on every POST (403). A POST whose
    action the ticket's state or the input refuses goes back to `back(request)` with the
    reason shown."""

    def wrap(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            who = await load_session(request)
            if who is None:
                # A script's fetch (a live region, a preview, the live stream) is told, not
                # sent to the sign-in page: it would land there with the fragment's URL as
                # `next`, and rendering that page resets the sign-in form's CSRF cookie
                # under another tab's open sign-in form.
                if request.method == "GET" and _navigating(request):
                    raise web.HTTPSeeOther(sign_in_url(request))
                return error_page(request, None, 401, "Sign in first" if request.method == "POST"
                                  else "Signed out: reload to sign in")
            await _load_availability(request, who)
            try:
                if request.method == "POST":
                    form = await read_form(request)
                    check_csrf(request, str(form.get(CSRF_FIELD, "")))
                if admin and who.role is not Role.ADMIN:
                    raise ApiError(403, "forbidden", "This page is for admins")
            except ApiError as exc:
                return error_page(request, who, exc.status, exc.message)
            if request.method != "POST" or back is None:
                try:
                    return await handler(request, who)
                except ApiError as exc:
                    return error_page(request, who, exc.status, exc.message)
                except NotFound as exc:
                    return error_page(request, who, 404, str(exc) or "Not found")
            try:
                return await handler(request, who)
            except ApiError as exc:
                return redirect(request, back(request), error=exc.message)
            except Conflict as exc:
                return redirect(request, back(request), error=exc.message)
            except NotFound as exc:
                return redirect(request, back(request), error=str(exc) or "not found")

        return guarded

    return wrap


async def _load_availability(request: web.Request, who: Principal) -> None:
    if not allowed(who.role, Permission.AVAILABILITY):
        return
    person = await team_store(request.app).find_person(who.name)
    if person is not None:
        request[AVAILABLE_KEY] = person.available


async def form_text(request: web.Request, name: str) -> str:
    value = (await read_form(request)).get(name, "")
    return value if isinstance(value, str) else ""
