"""Sign-in and sign-out of the workspace (cookie sessions: bridge/web/session.py)."""

from __future__ import annotations

import re

from aiohttp import web

from bridge.web.auth import Principal
from bridge.web.errors import ApiError
from bridge.web.session import (
    SESSION,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGNIN_CSRF_COOKIE,
    check_signin_csrf,
    new_signin_csrf,
    set_cookie,
    sign_in,
    sign_out,
)
from bridge.web.workspace.common import form_text, page, redirect, render
from bridge.web.workspace.i18n import LANG_COOKIE, LANGUAGES

routes = web.RouteTableDef()

# What new_signin_csrf makes (token_urlsafe(24): 32 characters).
SIGNIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def _next(raw: str) -> str:
    """Where to go after sign-in: a workspace page only (never another site), and a path a
    Location header can carry (no control character, no space)."""
    if not raw.startswith("/app/") or raw.startswith("/app//"):
        return "/app/"
    return raw if raw.isprintable() and " " not in raw else "/app/"


def _sign_in_page(request: web.Request, *, error: str = "", status: int = 200,
                  next_page: str | None = None) -> web.Response:
    # The browser's token is kept while it looks like one of ours: a sign-in page opened
    # in a second tab must not make the first one's form fail.
    token = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not SIGNIN_TOKEN.fullmatch(token):
        token = new_signin_csrf()
    response = render(request, "sign_in.html", status=status, signin_csrf=token, error=error,
                      next=_next(request.query.get("next", "") if next_page is None
                                 else next_page))
    set_cookie(request, response, SIGNIN_CSRF_COOKIE, token, max_age_s=3600)
    return response


@routes.get("/app")
async def app_root(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/app/")


@routes.get("/app/sign-in")
async def sign_in_form(request: web.Request) -> web.Response:
    return _sign_in_page(request)


@routes.post("/app/sign-in")
async def sign_in_post(request: web.Request) -> web.Response:
    next_page = await form_text(request, "next")
    try:
        check_signin_csrf(request, await form_text(request, "csrf_token"))
    except ApiError:  # an expired form, or cookies refused: the form again, not JSON
        return _sign_in_page(request, error="The sign-in form had expired: sign in again",
                             status=403, next_page=next_page)
    try:
        await sign_in(request, await form_text(request, "token"))
    except ApiError:
        return _sign_in_page(request, error="Unknown token", status=401, next_page=next_page)
    response = redirect(request, _next(next_page))
    set_cookie(request, response, SESSION_COOKIE, request[SESSION].session_id,
               max_age_s=SESSION_TTL_S)
    # The double-submit cookie stays: another tab's open sign-in form still carries it (it
    # proves only that the form was this site's; the session is what signs in).
    return response


@routes.post("/app/sign-out")
@page()
async def sign_out_post(request: web.Request, who: Principal) -> web.Response:
    await sign_out(request)
    response = redirect(request, "/app/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/app")
    return response


@routes.get("/app/lang/{lang}")
async def switch_language(request: web.Request) -> web.Response:
    """The language switch: a plain link, so it changes nothing but a display preference."""
    lang = request.match_info["lang"]
    response = redirect(request, _next(request.query.get("next", "")))
    if lang in LANGUAGES:
        set_cookie(request, response, LANG_COOKIE, lang, max_age_s=365 * 86400)
    return response
