"""The widget's static side: the script a site embeds, and the demo page.

The script is built once per process: widget.js with widget.css put in (one request, no
stylesheet to allow in the site's CSP), gzipped once; answered with an ETag and a short
cache lifetime so a new release reaches pages within minutes.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from bridge.web.keys import settings_key

routes = web.RouteTableDef()
SCRIPT_PATH = "/widget/v1/widget.js"
_CSS_SLOT = '"__WIDGET_CSS__"'
# The demo is the bridge's own page: the strictest policy it can live with.
DEMO_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def _static(name: str) -> str:
    # Package data of `bridge` (pyproject.toml), beside the workspace's bridge/static/.
    return (resources.files("bridge") / "static" / "widget" / name).read_text("utf-8")


@dataclass(frozen=True)
class Script:
    body: bytes
    gzipped: bytes
    etag: str


def build_script() -> Script:
    source = _static("widget.js")
    if _CSS_SLOT not in source:
        raise RuntimeError("widget.js lost its CSS slot")
    body = source.replace(_CSS_SLOT, json.dumps(_static("widget.css")), 1).encode()
    return Script(body, gzip.compress(body, compresslevel=9, mtime=0),
                  '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


script_key = web.AppKey("widget_script", Script)


@routes.get(SCRIPT_PATH)
async def widget_script(request: web.Request) -> web.Response:
    script = request.app[script_key]
    headers = {"Cache-Control": "public, max-age=300", "ETag": script.etag,
               "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding",
               # Sites load it cross-origin; CORP lets pages with COEP embed it too.
               "Cross-Origin-Resource-Policy": "cross-origin"}
    if request.headers.get("If-None-Match") == script.etag:
        return web.Response(status=304, headers=headers)
    response = web.Response(content_type="text/javascript", charset="utf-8", headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.body = script.gzipped
        response.headers["Content-Encoding"] = "gzip"
    else:
        response.body = script.body
    return response


@routes.get("/widget/demo")
async def demo(request: web.Request) -> web.Response:
    base = html.escape(request.app[settings_key].public_base_url)
    page = _static("demo.html").replace("__BASE__", base)
    return web.Response(text=page, content_type="text/html", headers={
        "Content-Security-Policy": DEMO_CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer"})


@routes.get("/widget/demo.css")
async def demo_css(request: web.Request) -> web.Response:
    return web.Response(text=_static("demo.css"), content_type="text/css",
                        headers={"X-Content-Type-Options": "nosniff"})


def setup(app: web.Application) -> None:
    app[script_key] = build_script()
    app.add_routes(routes)
