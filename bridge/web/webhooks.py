"""Provider webhooks: verify, parse, route in one atomic store call, acknowledge.

Order matters: nothing is written before the body is decoded and the signature checked,
so a bad request leaves no trace.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from bridge.channels import twilio
from bridge.core.csat import rating_signal
from bridge.core.routing import Action
from bridge.store.tickets import RouteResult
from bridge.web import metrics
from bridge.web.bodies import read_body
from bridge.web.errors import ApiError
from bridge.web.keys import queues_key, settings_key, store_key

log = logging.getLogger("bridge.webhooks")
routes = web.RouteTableDef()

# Empty TwiML: acknowledge without replying (replies go out from workers).
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def _verified_form(request: web.Request) -> twilio.FormData:
    settings = request.app[settings_key]
    body = await read_body(request)
    try:
        form = twilio.decode_form(body, request.content_type)
    except twilio.InvalidPayload as exc:
        metrics.WEBHOOK_REJECTED.labels("malformed").inc()
        raise ApiError(400, "malformed", str(exc)) from None
    # Twilio signs the public URL it called; behind a TLS-terminating proxy the request
    # we see is http://internal/..., so rebuild it from PUBLIC_BASE_URL + the raw path.
    url = settings.public_base_url + request.raw_path
    if not twilio.signature_valid(
        url=url,
        form=form,
        signature=request.headers.get("X-Twilio-Signature", ""),
        auth_token=str(settings.twilio_auth_token),
    ):
        metrics.WEBHOOK_REJECTED.labels("signature").inc()
        raise ApiError(403, "bad_signature", "X-Twilio-Signature does not match")
    return form


@routes.post("/webhooks/twilio")
async def twilio_inbound(request: web.Request) -> web.Response:
    form = await _verified_form(request)
    now_ms = int(time.time() * 1000)
    try:
        msg = twilio.parse_inbound(form, received_at_ms=now_ms)
    except twilio.InvalidPayload as exc:
        metrics.WEBHOOK_REJECTED.labels("invalid").inc()
        raise ApiError(400, "invalid", str(exc)) from None
    settings = request.app[settings_key]
    signal = rating_signal(
        body=msg.body, button_payload=msg.button_payload, replied_to_id=msg.replied_to_id
    )
    result = await request.app[store_key].route_inbound(
        msg, signal, settings.policy(msg.channel), now_ms=now_ms
    )
    metrics.count_inbound(msg.channel.value, result.action.value)
    # Appends are the bulk of traffic (and counted in metrics): logged at debug only.
    level = logging.DEBUG if result.action in (Action.APPEND, Action.DUPLICATE) else logging.INFO
    log.log(level, "inbound %s contact=%s action=%s ticket=%s", msg.provider_id,
            result.contact_id, result.action.value, result.ticket_id)
    triggers = _triggers(result)
    if triggers:
        await _enqueue_triggers(request.app, triggers, result.event_id or "")
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _triggers(result: RouteResult) -> list[tuple[str, str]]:
    """The ticket events routing caused (new ticket, reopen, thread limit, CSAT answer), as
    (ticket id, trigger) pairs for the workers; none for a plain append."""
    triggers: list[tuple[str, str]] = []
    if result.opened_ticket and result.ticket_id:
        triggers.append((result.ticket_id, "ticket.created"))
        if result.close_reason == "thread_limit" and result.previous_ticket_id:
            triggers.append((result.previous_ticket_id, "ticket.closed_thread_limit"))
    elif result.action is Action.REOPEN and result.ticket_id:
        triggers.append((result.ticket_id, "ticket.reopened"))
    elif result.action is Action.CSAT_ANSWER and result.ticket_id:
        triggers.append((result.ticket_id, "ticket.csat_answered"))
    return triggers


async def _enqueue_triggers(app: web.Application, triggers: list[tuple[str, str]],
                            event_id: str) -> None:
    """The message is already stored: a failure here is logged, not answered 5xx, because a
    provider retry would only be a duplicate."""
    queues = app[queues_key]
    try:
        for ticket_id, trigger in triggers:
            await asyncio.to_thread(queues.ticket_event, ticket_id, trigger, 0, event_id)
    except Exception:
        log.exception("could not enqueue triggers %s", triggers)


# Twilio's "free-form message outside the 24-hour window": the send job, run again for the
# same event, sends the approved template the event names (or records why it cannot). A
# callback parked because it beat the worker is acted on by whoever applies it: this handler
# (record_status_callback says so) or the worker that stores the sid (workers/outbound.py).
FREEFORM_OUTSIDE_WINDOW = "63016"


async def _send_template_instead(app: web.Application, provider_id: str) -> None:
    ref = await app[store_key].delivery_ref(provider_id)
    if ref is None:
        return
    ticket_id, event_id = ref
    try:
        await asyncio.to_thread(app[queues_key].send_fallback, ticket_id, event_id)
    except Exception:
        log.exception("could not enqueue the template fallback for %s", provider_id)


@routes.post("/webhooks/twilio/status")
async def twilio_status(request: web.Request) -> web.Response:
    form = await _verified_form(request)
    try:
        callback = twilio.parse_status(form)
    except twilio.InvalidPayload as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    applied = False
    if callback.delivery is not None:
        applied = await request.app[store_key].record_status_callback(
            callback.provider_id,
            callback.delivery,
            error_code=callback.error_code,
            error_message=callback.error_message,
        )
    if applied and callback.error_code == FREEFORM_OUTSIDE_WINDOW:
        await _send_template_instead(request.app, callback.provider_id)
    metrics.STATUS_CALLBACKS.labels(
        callback.delivery.value if callback.delivery else "other", str(applied).lower()
    ).inc()
    return web.Response(status=204)
