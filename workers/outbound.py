"""Send one outbound event (agent reply, macro, CSAT survey, automation notice) to the customer.

The job `workers.tasks.send_outbound` runs `OutboundService.send`, which is async (the ticket
store is) and knows nothing about RQ.

What is sent (an event's `data` may name Content API templates; workers.compose builds it):
- inside WhatsApp's 24-hour window: `content_sid` + `content_variables` if given, else the
  body (+ `media_urls`);
- outside it: `fallback_content_sid` + `fallback_content_variables`, or nothing: the send fails
  with `outside_window` before Twilio is called;
- Twilio answers 63016 (outside the window, e.g. clock skew) -> the fallback template at once,
  if there is one. A status callback reporting 63016 (applied when it arrives, or when the
  worker stores the sid if it arrived first) is a change in the change log: the relay
  enqueues the send again (bridge.jobs.template_fallback_job), which sends the template.

Delivery state (TicketStore.set_delivery; the event's `delivery` in the API):
- `sending` + attempts is written *before* each API call;
- success -> `queued` with the provider id (Twilio's create answers queued/accepted; status
  callbacks then move it to sent, delivered, read). The local outbox answers `delivered`;
- failure that provably created no message (HTTP 429/20429, 63018, a connection that
  never opened) -> back to `queued` with the error and the attempt count, and the job runs
  again after a backoff, at most `RetryPolicy.max_attempts` API calls in all, then `failed`;
- ambiguous failure (5xx, read/write timeout, connection dropped after the request was
  written): Twilio may have created the message -> `failed` with `send_unconfirmed` at once,
  never re-sent blindly; an agent checks and re-sends with `bridge retry`;
- permanent failure (other 4xx, 63016 without a template, 21610 opt-out, outside the window)
  -> `failed` with `error_code` and `error_message` at once.

Idempotency: a run that finds the message already accepted (a provider id, or any state past
`sending`) does nothing. A run that finds `sending` and no attempt in flight knows a previous
attempt died during the API call (worker killed, job timeout): Twilio may or may not have
the message, so it does not send again blindly: it fails with `send_unconfirmed`, the ticket
shows it, and `bridge retry` re-sends it if a human decides so. Two runs for one event never
overlap: each holds a short Redis lock while it reads and writes the delivery state.

In RQ terms (`workers.tasks.finish_job`): a sent or skipped message finishes the job; a
transient failure raises SendRetry after telling RQ to run the job again after our backoff; a
final failure raises SendFailed with no RQ retry left, so the job sits in the
FailedJobRegistry with its reason (`bridge failed`, `bridge retry`). Web-chat tickets need no
provider: their replies are marked `sent` (the widget reads the thread).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bridge.channels.twilio import OPTED_OUT, OUTSIDE_WINDOW
from bridge.core.messages import Channel
from bridge.core.tickets import OUTBOUND_EVENTS, Contact, Delivery, Event, EventType
from bridge.store import keys
from bridge.store.claims import new_token
from bridge.store.tickets import NotFound, TicketStore
from workers.compose import VIA_BODY, VIA_FALLBACK, InvalidEvent, compose, fallback_message
from workers.senders import OutboundMessage, Sender, SendError

log = logging.getLogger(__name__)

# Outcome actions.
SENT = "sent"
RETRY = "retry"
FAILED = "failed"
SKIPPED = "skipped"

# The request may have created a message at Twilio: not sent again without a person.
SEND_UNCONFIRMED = "send_unconfirmed"

# States after which a run has nothing to do: the provider has (or had) the message.
_PAST_SENDING = frozenset({Delivery.SENT, Delivery.DELIVERED, Delivery.READ})
_UNSENT = frozenset({Delivery.FAILED, Delivery.UNDELIVERED})

# An attempt holds this lock while its API call may be in flight. It must outlive the
# longest call (10 s read timeout, 3 s connect, a slow answer), and it expires by itself if
# the worker dies. A second run for the same event while it is held backs off.
SEND_LOCK_TTL_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def mask_address(address: str) -> str:
    """Phone numbers stay out of logs: keep the channel and the last two digits."""
    channel, sep, rest = address.rpartition(":")
    if len(rest) <= 4:
        return address
    return f"{channel}{sep}{rest[:3]}…{rest[-2:]}"


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` API calls per message; between them an exponential backoff with
    jitter (so a burst of 429s does not come back all at once), or Twilio's Retry-After if
    longer. The delays need RQ's scheduler (`python -m workers` runs it)."""

    max_attempts: int = 5
    backoff_s: tuple[int, ...] = (2, 10, 30, 90)
    max_delay_s: int = 300
    jitter: float = 0.2

    def delay_s(self, attempts_done: int, retry_after_s: float | None = None,
                rand: Callable[[], float] = random.random) -> int:
        base = self.backoff_s[min(attempts_done, len(self.backoff_s)) - 1] if self.backoff_s else 0
        if retry_after_s:
            base = max(base, math.ceil(retry_after_s))
        base = min(base, self.max_delay_s)
        return int(base + base * self.jitter * rand())


@dataclass(frozen=True)
class SendOutcome:
    ticket_id: str
    event_id: str
    action: str
    state: str = ""
    provider_id: str = ""
    error_code: str = ""
    error_message: str = ""
    attempts: int = 0
    via: str = ""
    retry_in_s: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}


class OutboundService:
    def __init__(
        self,
        store: TicketStore,
        sender: Sender,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], int] = now_ms,
        lock_ttl_ms: int = SEND_LOCK_TTL_MS,
    ) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.lock_ttl_ms = lock_ttl_ms

    async def send(self, ticket_id: str, event_id: str, *, found_late: bool = False
                   ) -> SendOutcome:
        """Send the event once. `found_late`: the unsent-sends sweep found it hours after it
        was recorded, never enqueued; unless someone re-drove it since, it fails visibly
        (`not_enqueued`) instead of reaching the customer by surprise."""
        try:
            event = await self.store.get_event(ticket_id, event_id)
            ticket = await self.store.get_ticket(ticket_id)
            contact = await self.store.get_contact(ticket.contact_id)
        except NotFound as exc:
            # Nothing to record the failure on; the job fails so `bridge failed` shows it.
            return SendOutcome(ticket_id, event_id, FAILED, error_code="not_found",
                               error_message=str(exc))
        if event.type not in OUTBOUND_EVENTS:
            return SendOutcome(ticket_id, event_id, FAILED, error_code="not_outbound",
                               error_message=f"{event.type.value} events are not sent")
        lock_key = self._lock_key(contact, ticket_id, event_id)
        token = new_token()
        # Everything below reads and writes the delivery state under this lock, so two runs
        # for one event (a duplicate job, `bridge retry` during a send) never interleave.
        if not await self.store.claims.take(lock_key, token, ttl_ms=self.lock_ttl_ms):
            busy_ms = await self.store.claims.remaining_ms(lock_key)
            return self._retry_later(ticket_id, event_id, busy_ms)
        try:
            return await self._send_locked(event, contact, found_late)
        finally:
            await self.store.claims.release(lock_key, token)

    async def _send_locked(self, event: Event, contact: Contact, found_late: bool = False
                           ) -> SendOutcome:
        ticket_id, event_id = event.ticket_id, event.id
        state = await self.store.delivery_state(ticket_id, event_id)
        if found_late and not state:
            age_min = (self.clock() - event.at_ms) // 60_000
            return await self._fail(
                contact, ticket_id, event_id, state, NOT_ENQUEUED,
                f"recorded {age_min} min ago but never enqueued (found by the unsent-sends "
                "sweep): not sent this late; re-send with `bridge retry` if it still applies",
            )
        current = Delivery(state["state"]) if state.get("state") else Delivery.QUEUED
        fallback_only = False
        if current in _UNSENT:
            if (state.get("error_code") == OUTSIDE_WINDOW and state.get("via") != VIA_FALLBACK
                    and event.data.get("fallback_content_sid")):
                # A status callback said 63016 for the free-form message: send the template.
                fallback_only = True
            else:
                return self._skipped(ticket_id, event_id, state)
        elif current in _PAST_SENDING or state.get("provider_id"):
            return self._skipped(ticket_id, event_id, state)
        elif current is Delivery.SENDING:
            # We hold the lock, so no attempt is in flight: the last one died mid-call.
            return await self._fail(
                contact, ticket_id, event_id, state, SEND_UNCONFIRMED,
                "the previous attempt stopped during the call to the provider (worker stopped "
                "or timed out): the message may or may not have reached the customer, so it "
                "was not sent again; check with the customer or re-send with `bridge retry`",
            )

        if contact.opted_out:
            return await self._fail(contact, ticket_id, event_id, state, "opted_out",
                                    "the customer opted out of messages (Twilio 21610)")
        if contact.channel != Channel.WHATSAPP:
            # Web chat: the thread is the delivery (the widget reads it and is pushed it).
            record = {"state": Delivery.SENT.value, "via": VIA_BODY,
                      "attempts": str(int(state.get("attempts") or 0) + 1)}
            await self.store.set_delivery(ticket_id, event_id, record)
            return SendOutcome(ticket_id, event_id, SENT, state=Delivery.SENT.value,
                               attempts=int(record["attempts"]), via=VIA_BODY)
        try:
            message, via = compose(event, contact, at_ms=self.clock(),
                                   fallback_only=fallback_only)
        except InvalidEvent as exc:
            return await self._fail(contact, ticket_id, event_id, state, "invalid_event",
                                    str(exc))
        except SendError as exc:
            return await self._fail(contact, ticket_id, event_id, state, exc.code, exc.message)
        if not contact.address:
            return await self._fail(contact, ticket_id, event_id, state, "no_address",
                                    "the contact has no channel address")
        return await self._attempt(event, contact, message, via, state)

    # ---------------------------------------------------------------- one send, with fallback

    async def _attempt(self, event: Event, contact: Contact, message: OutboundMessage,
                       via: str, state: dict[str, str]) -> SendOutcome:
        tid, eid = event.ticket_id, event.id
        attempts = int(state.get("attempts") or 0)
        while True:
            attempts += 1
            record = {"state": Delivery.SENDING.value, "attempts": str(attempts), "via": via,
                      "attempt_at_ms": str(self.clock())}
            # Recorded before the call: a later run that finds "sending" knows this attempt
            # died mid-call and does not send blindly again.
            await self.store.set_delivery(tid, eid, record)
            try:
                result = await self.sender.send(message)
            except SendError as err:
                if err.code == OUTSIDE_WINDOW and via != VIA_FALLBACK:
                    fallback = fallback_message(event, contact)
                    if fallback is not None:
                        log.info("ticket %s event %s: 63016, sending the template instead",
                                 tid, eid)
                        message, via = fallback, VIA_FALLBACK
                        continue
                    err = SendError(err.code, f"{err.message} (outside the 24-hour window and "
                                    "no approved template to fall back on)",
                                    transient=False, http_status=err.http_status)
                if err.code == OPTED_OUT:
                    # Remembered on the contact: the API refuses replies from now on.
                    await self.store.mark_opted_out(contact.id)
                carried = {"attempts": str(attempts), "via": via}
                if err.ambiguous:
                    # A 5xx or a timeout after the request left: Twilio may have created the
                    # message, and its API has no idempotency key nor a lookup that proves
                    # it did not (README, "A send is recorded before the API call"). A person
                    # decides; the provider's code stays in the message.
                    return await self._fail(
                        contact, tid, eid, carried, SEND_UNCONFIRMED,
                        f"{err.code}: {err.message}: the request reached Twilio, which may "
                        "have created the message, so it was not sent again; check with the "
                        "customer or re-send with `bridge retry`")
                if err.transient and attempts < self.policy.max_attempts:
                    return await self._schedule_retry(contact, tid, eid, err, attempts, via)
                reason = err.message
                if err.transient:
                    reason = f"{reason} (gave up after {attempts} attempts)"
                return await self._fail(contact, tid, eid, carried, err.code, reason)
            record = {"state": result.delivery.value, "provider_id": result.provider_id,
                      "attempts": str(attempts), "via": via, "sent_at_ms": str(self.clock())}
            # A 63016 callback that beat us here (parked until the sid is stored) is applied
            # now; its change log entry makes the relay enqueue the template fallback.
            await self.store.set_delivery(tid, eid, record)
            if event.type is EventType.CSAT_SENT and result.provider_id:
                await self.store.link_survey_message(contact.id, tid, result.provider_id)
            log.info("ticket %s event %s: %s to %s as %s (%s, attempt %d)", tid, eid,
                     result.provider_id, mask_address(contact.address), via,
                     result.provider_status, attempts)
            return SendOutcome(tid, eid, SENT, state=result.delivery.value,
                               provider_id=result.provider_id, attempts=attempts, via=via)

    async def _schedule_retry(self, contact: Contact, tid: str, eid: str, err: SendError,
                              attempts: int, via: str) -> SendOutcome:
        delay = self.policy.delay_s(attempts, err.retry_after_s)
        message = (f"{err.message} (attempt {attempts} of {self.policy.max_attempts}, "
                   f"retrying in {delay}s)")
        record = {"state": Delivery.QUEUED.value, "attempts": str(attempts), "via": via,
                  "error_code": err.code, "error_message": message,
                  "retry_at_ms": str(self.clock() + delay * 1000)}
        await self.store.set_delivery(tid, eid, record)
        log.warning("ticket %s event %s to %s: %s", tid, eid, mask_address(contact.address),
                    f"{err.code}: {message}")
        return SendOutcome(tid, eid, RETRY, state=Delivery.QUEUED.value, error_code=err.code,
                           error_message=message, attempts=attempts, via=via, retry_in_s=delay)

    async def _fail(self, contact: Contact, tid: str, eid: str, state: Mapping[str, str],
                    code: str, message: str) -> SendOutcome:
        record = {"state": Delivery.FAILED.value, "error_code": code, "error_message": message,
                  "attempts": state.get("attempts") or "0", "failed_at_ms": str(self.clock())}
        if state.get("via"):
            record["via"] = state["via"]
        await self.store.set_delivery(tid, eid, record)
        log.warning("ticket %s event %s to %s failed: %s: %s", tid, eid,
                    mask_address(contact.address), code, message)
        return SendOutcome(tid, eid, FAILED, state=Delivery.FAILED.value, error_code=code,
                           error_message=message, attempts=int(record["attempts"]),
                           via=record.get("via", ""))

    @staticmethod
    def _skipped(tid: str, eid: str, state: Mapping[str, str]) -> SendOutcome:
        log.info("ticket %s event %s: already %s, nothing to do", tid, eid, state.get("state"))
        return SendOutcome(tid, eid, SKIPPED, state=state.get("state", ""),
                           provider_id=state.get("provider_id", ""),
                           error_code=state.get("error_code", ""),
                           attempts=int(state.get("attempts") or 0))

    @staticmethod
    def _retry_later(tid: str, eid: str, busy_ms: int) -> SendOutcome:
        # Another run holds the event (a duplicate job, or `bridge retry` during a send):
        # look again once its lock has gone. Not counted as an attempt.
        log.info("ticket %s event %s: another attempt is in flight", tid, eid)
        return SendOutcome(tid, eid, RETRY, error_code="in_flight",
                           error_message="another attempt for this message is in flight",
                           retry_in_s=max(1, math.ceil(busy_ms / 1000)))

    @staticmethod
    def _lock_key(contact: Contact, tid: str, eid: str) -> str:
        return keys.send_lock(contact.id, tid, eid)


# The sweep found a send that was never enqueued, too old to go out unannounced.
NOT_ENQUEUED = "not_enqueued"
