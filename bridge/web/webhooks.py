"""Provider webhooks: verify, parse, route in one atomic store call, acknowledge.

The routing call also records the change in the change log; what follows from it (trigger
rules, the template fallback after a 63016 status) is the relay's to hand on
(workers/relay.py): nothing on a webhook's path waits for RQ.

Order matters: nothing is written before the body is decoded and the signature checked,
so a bad request leaves no trace.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from bridge.channels import twilio
from bridge.core.csat import rating_signal
from bridge.core.routing import Action
from bridge.web import metrics
from bridge.web.bodies import read_body
from bridge.web.errors import ApiError
from bridge.web.keys import settings_key, store_key

log = logging.getLogger("bridge.webhooks")
routes = web.RouteTableDef()

_ROUTINE = frozenset({Action.APPEND, Action.DUPLICATE, Action.NEW_TICKET})

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
    # Appends, duplicates and new tickets are the bulk of traffic, counted in metrics
    # (bridge_inbound_messages_total by action): logged at debug only. One line per new
    # ticket at info cost 10% of the web process's CPU under new conversations (py-spy).
    level = logging.DEBUG if result.action in _ROUTINE else logging.INFO
    log.log(level, "inbound %s contact=%s action=%s ticket=%s", msg.provider_id,
            result.contact_id, result.action.value, result.ticket_id)
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


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
    metrics.STATUS_CALLBACKS.labels(
        callback.delivery.value if callback.delivery else "other", str(applied).lower()
    ).inc()
    return web.Response(status=204)
