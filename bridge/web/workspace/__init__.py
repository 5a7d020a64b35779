"""The agent and admin workspace under /app/: server-rendered pages (Jinja2 templates in
bridge/templates/app/, one stylesheet and one small script in bridge/static/), cookie
sessions with CSRF (bridge/web/session.py). Pages are split by subject, one module each."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from bridge.web.workspace import (
    live,
    macros_page,
    operations,
    reports_page,
    signin,
    teams_page,
    ticket_page,
    tickets,
)


def _static_dir() -> Path:
    folder = resources.files("bridge") / "static"
    assert isinstance(folder, Path), "bridge/static must be files on disk"
    return folder


routes: list[web.AbstractRouteDef] = [
    *signin.routes, *tickets.routes, *ticket_page.routes, *reports_page.routes,
    *macros_page.routes, *operations.routes, *teams_page.routes,
    web.static("/app/static", _static_dir()),
]


def setup(app: web.Application) -> None:
    """The pages' routes, and the live streams' state (ended when the process stops)."""
    app.add_routes(routes)
    live.setup(app)
