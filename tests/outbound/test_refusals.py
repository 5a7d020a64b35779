"""The send job's permanent failures: Twilio's refusals (400s, 63016 outside the window and
its template fallback, 21610 opted out) and what it refuses before calling."""

from __future__ import annotations

import json

import respx

from bridge.core.tickets import Delivery, EventType
from bridge.store import keys
from bridge.store.tickets import TicketStore
from tests.outbound.support import (
    BUTTONS,
    HOUR,
    MESSAGES,
    NOW,
    TEMPLATE,
    created,
    form,
    reply,
    service,
    twilio_error,
)
from workers.outbound import FAILED, SENT, SKIPPED
from workers.senders import TwilioSender

# ------------------------------------------------------------------------------ permanent


async def test_400_fails_at_once_with_its_code(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(
        return_value=twilio_error(400, 21211, "Invalid 'To' Phone Number"))
    tid, eid = await reply(store)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code, outcome.attempts) == (FAILED, "21211", 1)
    assert "Invalid 'To' Phone Number" in outcome.error_message
    assert route.call_count == 1
    event = await store.get_event(tid, eid)
    assert (event.delivery, event.error_code) == (Delivery.FAILED, "21211")
    assert "Invalid 'To'" in event.error_message


async def test_63016_falls_back_to_the_approved_template(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[
        twilio_error(400, 63016, "outside the allowed window"), created("SM" + "3" * 32)])
    tid, eid = await reply(store, "Your order shipped", {
        "fallback_content_sid": TEMPLATE, "fallback_content_variables": {"1": "#1234"}})
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.via, outcome.attempts) == (SENT, "fallback", 2)
    first, second = (form(c.request) for c in route.calls)
    assert first["Body"] == ["Your order shipped"]
    assert second["ContentSid"] == [TEMPLATE] and "Body" not in second
    assert json.loads(second["ContentVariables"][0]) == {"1": "#1234"}
    assert (await store.delivery_state(tid, eid))["provider_id"] == "SM" + "3" * 32


async def test_63016_without_a_template_fails(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=twilio_error(400, 63016, "outside window"))
    tid, eid = await reply(store)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "63016")
    assert "no approved template" in outcome.error_message
    assert route.call_count == 1


async def test_63016_from_a_status_callback_then_rerun_sends_the_template(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(side_effect=[created("SM" + "4" * 32),
                                                 created("SM" + "5" * 32)])
    tid, eid = await reply(store, "Hello", {"fallback_content_sid": TEMPLATE})
    svc = service(store, sender)
    assert (await svc.send(tid, eid)).action == SENT
    # Twilio accepted the free-form message, then reported 63016 asynchronously.
    assert await store.record_status_callback("SM" + "4" * 32, Delivery.FAILED,
                                              error_code="63016", error_message="window")
    outcome = await svc.send(tid, eid)
    assert (outcome.action, outcome.via, outcome.provider_id) == (SENT, "fallback",
                                                                  "SM" + "5" * 32)
    assert form(route.calls.last.request)["ContentSid"] == [TEMPLATE]
    # The template is sent once: a third run has nothing to do.
    assert (await svc.send(tid, eid)).action == SKIPPED
    assert route.call_count == 2


async def test_outside_the_window_sends_the_template_or_refuses_before_calling(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    late = service(store, sender, at=NOW + 25 * HOUR)
    tid, with_template = await reply(store, "Are you there?",
                                     {"fallback_content_sid": TEMPLATE})
    _, without = await store.update_ticket(tid, author="alice", now_ms=NOW + 2000,
                                           event=(EventType.AGENT_REPLY, "Still there?", {}))
    assert without

    sent = await late.send(tid, with_template)
    refused = await late.send(tid, without)

    assert (sent.action, sent.via) == (SENT, "fallback")
    assert form(route.calls.last.request)["ContentSid"] == [TEMPLATE]
    assert (refused.action, refused.error_code) == (FAILED, "outside_window")
    assert "24 hours" in refused.error_message
    assert route.call_count == 1  # the refused one never reached Twilio


async def test_21610_marks_the_contact_opted_out(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(
        return_value=twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    tid, eid = await reply(store)
    svc = service(store, sender)
    outcome = await svc.send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "21610")
    ticket = await store.get_ticket(tid)
    assert (await store.get_contact(ticket.contact_id)).opted_out
    assert await store.redis.hget(keys.contact(ticket.contact_id), "opted_out") == b"1"
    # The next message to that contact fails without calling Twilio.
    _, next_eid = await store.update_ticket(tid, author="alice", now_ms=NOW + 5000,
                                            event=(EventType.AGENT_REPLY, "Hello?", {}))
    assert next_eid
    again = await svc.send(tid, next_eid)
    assert (again.action, again.error_code) == (FAILED, "opted_out")
    assert route.call_count == 1


async def test_bad_event_data_fails_without_calling(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "x", {"content_sid": BUTTONS,
                                        "content_variables": {"1": {"nested": True}}})
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "invalid_event")
    _, empty = await store.update_ticket(tid, author="alice", now_ms=NOW + 3000,
                                         event=(EventType.AGENT_REPLY, "", {}))
    assert empty
    assert (await service(store, sender).send(tid, empty)).error_code == "invalid_event"
    assert route.call_count == 0


async def test_events_that_are_not_outbound_are_refused(
    store: TicketStore, sender: TwilioSender, api: respx.MockRouter
) -> None:
    route = api.post(MESSAGES).mock(return_value=created())
    tid, eid = await reply(store, "internal", etype=EventType.NOTE)
    outcome = await service(store, sender).send(tid, eid)
    assert (outcome.action, outcome.error_code) == (FAILED, "not_outbound")
    missing = await service(store, sender).send(tid, "1-0")
    assert (missing.action, missing.error_code) == (FAILED, "not_found")
    assert route.call_count == 0
