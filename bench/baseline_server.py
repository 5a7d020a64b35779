"""The ingest baseline: a bare aiohttp handler that only parses the same form and answers
empty TwiML. Run as `python -m bench.baseline_server --port N` (one process, like the
bridge's web process); GET /healthz answers when it is up."""

from __future__ import annotations

import argparse

from aiohttp import web

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def inbound(request: web.Request) -> web.Response:
    await request.post()
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/webhooks/twilio", inbound)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
