"""/app/operations (admins): what /metrics shows, for a person. Queue depths by state and
overdue timers, registered workers, each change-log consumer's lag, failed jobs with a
retry button (the `bridge failed` / `bridge retry` logic), and the newest messages of the
local outbox."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from bridge.failed_jobs import failed_jobs, requeue_failed
from bridge.jobs import WORKERS_KEY
from bridge.store.changelog import CONSUMERS, ChangeLog
from bridge.store.monitoring import QUEUE_STATES, read_queues
from bridge.store.outbox import Outbox
from bridge.web.auth import Principal
from bridge.web.errors import unprocessable
from bridge.web.keys import queues_key, redis_key, settings_key, sync_redis_key
from bridge.web.serialize import iso
from bridge.web.workspace.common import form_text, page, redirect, render

routes = web.RouteTableDef()

OVERDUE_S = 30
FAILED_SHOWN = 50


def _back(request: web.Request) -> str:
    return "/app/operations"


async def readings(app: web.Application) -> dict[str, Any]:
    queues, workers = await read_queues(
        app[redis_key], app[queues_key].key_names(),
        overdue_before_s=time.time() - OVERDUE_S, workers_key=WORKERS_KEY)
    change_log = ChangeLog(app[redis_key])
    lags = [(name, await change_log.lag(name)) for name in CONSUMERS]
    failed = await asyncio.to_thread(failed_jobs, app[sync_redis_key])
    outbox = await Outbox(app[redis_key]).latest(20)
    return {
        "queues": queues, "states": QUEUE_STATES, "workers": workers, "lags": lags,
        "failed": [{"id": j.id, "job": j.func.rsplit(".", 1)[-1], "target": j.target,
                    "failed_at": j.failed_at.isoformat() if j.failed_at else "–",
                    "error": j.error} for j in failed[:FAILED_SHOWN]],
        "failed_total": len(failed),
        "outbox": [{"at": iso(e.at_ms), "to": e.to, "ticket_id": e.ticket_id,
                    "text": e.summary()} for e in outbox],
    }


@routes.get("/app/operations")
@page(admin=True)
async def operations(request: web.Request, who: Principal) -> web.Response:
    return render(request, "operations.html", who=who, **await readings(request.app))


@routes.post("/app/operations/retry")
@page(admin=True, back=_back)
async def retry(request: web.Request, who: Principal) -> web.Response:
    job_id = await form_text(request, "job_id")
    if not job_id or len(job_id) > 200:
        raise unprocessable("job_id must name a failed job")
    settings = request.app[settings_key]
    done, missing = await asyncio.to_thread(
        requeue_failed, request.app[sync_redis_key], settings.redis_url, settings, [job_id])
    if missing:
        raise unprocessable(f"{job_id} is not among the failed jobs (retried already?)")
    return redirect(request, _back(request), notice=f"Requeued {', '.join(done)}")
