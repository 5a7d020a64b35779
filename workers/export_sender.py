"""Delivering one endpoint's outbox: in order per ticket, at least once, with retries.

Each step first retries the held tickets that are due (a held ticket's deliveries wait, in
order, behind its failed one), then sends the new entries: the tickets of a batch in
parallel (up to `in_flight` requests), each ticket's deliveries one after the other. A
failure holds its ticket: the failed delivery and the ticket's later ones are parked in
Redis and retried on the backoff schedule, while other tickets go on. Only then is the
watermark saved; a sender that dies before sends the batch again, with the same webhook-ids
(at least once: receivers dedupe by webhook-id).

429 and 5xx answers halve the requests in flight (down to one); deliveries win them
back one at a time. 410 Gone disables the endpoint and stops its sender.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bridge.core.export_events import anonymized_body
from bridge.core.export_policy import (
    Endpoint,
    Outcome,
    outcome_of,
    parse_retry_after,
    retry_delay_s,
)
from bridge.store.export_endpoints import EndpointStore
from bridge.store.export_outbox import Outbox, OutboxItem
from workers.export_http import ExportHttp, RefusedTarget, signed_headers

log = logging.getLogger("workers.export")

MAX_IN_FLIGHT = 32
# Deliveries of one held ticket sent back to back in one step once its retry succeeds.
HELD_BURST = 100


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    status: int | None = None
    error: str = ""
    retry_after_s: float | None = None


@dataclass
class Tally:
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    last_status: int | None = None
    last_error: str = ""

    def add(self, attempt: Attempt) -> None:
        self.last_status = attempt.status
        if attempt.outcome is Outcome.DELIVERED:
            self.delivered += 1
        else:
            self.failed_attempts += 1
            self.last_error = attempt.error


@dataclass
class EndpointSender:
    endpoint: Endpoint
    outbox: Outbox
    endpoints: EndpointStore
    client: ExportHttp
    batch_size: int = 500
    in_flight: int = MAX_IN_FLIGHT
    jitter: Callable[[], float] = random.random
    clock: Callable[[], float] = time.time
    gone: bool = False
    _position: str | None = None
    _tally: Tally = field(default_factory=Tally)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def attempt(self, item: OutboxItem, secrets: list[str]) -> Attempt:
        """One signed POST; the answer classified (never raises for the receiver's faults)."""
        body = anonymized_body(item.body) if self.endpoint.anonymize else item.body
        headers = signed_headers(secrets, item.webhook_id, body)
        try:
            response = await self.client.post(
                self.endpoint.url, content=body.encode(), headers=headers,
                follow_redirects=self.endpoint.follow_redirects)
        except RefusedTarget as exc:
            return Attempt(Outcome.FAILED, error=f"refused: {exc}")
        except httpx.TimeoutException:
            return Attempt(Outcome.FAILED, error="timeout")
        except httpx.HTTPError as exc:
            return Attempt(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}"[:300])
        await response.aclose()
        status = response.status_code
        if response.is_redirect:
            return Attempt(Outcome.FAILED, status, "redirect not followed "
                           f"(to {response.headers.get('location', '?')[:200]})")
        outcome = outcome_of(status)
        error = "" if outcome is Outcome.DELIVERED else f"HTTP {status}"
        return Attempt(outcome, status, error, parse_retry_after(
            response.headers.get("retry-after")) if outcome is Outcome.THROTTLED else None)

    def _pace(self, attempt: Attempt) -> None:
        if attempt.outcome is Outcome.THROTTLED:
            self.in_flight = max(1, self.in_flight // 2)
        elif attempt.outcome is Outcome.DELIVERED and self.in_flight < MAX_IN_FLIGHT:
            self.in_flight += 1

    async def _gone(self) -> None:
        self.gone = True
        log.warning("webhook endpoint %s answered 410 Gone: disabled", self.endpoint.id)
        await self.endpoints.disable(self.endpoint.id, "gone")

    # ---------------------------------------------------------------- held tickets

    async def retry_due(self, secrets: list[str]) -> int:
        """Retry the held tickets whose time has come; how many attempts were made."""
        tickets = await self.outbox.due_tickets(self.now_ms(), count=max(1, self.in_flight))
        counts = await asyncio.gather(*(self._retry_ticket(t, secrets) for t in tickets))
        return sum(counts)

    async def _retry_ticket(self, ticket_id: str, secrets: list[str]) -> int:
        made = 0
        while made < HELD_BURST and not self.gone:
            head = await self.outbox.head(ticket_id)
            if head is None:
                return made
            item, attempts = head
            attempt = await self.attempt(item, secrets)
            made += 1
            self._tally.add(attempt)
            self._pace(attempt)
            if attempt.outcome is Outcome.DELIVERED:
                await self.outbox.settle_head(item, now_ms=self.now_ms())
                continue
            if attempt.outcome is Outcome.GONE:
                await self._gone()
                return made
            attempts += 1
            delay_s = retry_delay_s(attempts, jitter=self.jitter(),
                                    retry_after_s=attempt.retry_after_s,
                                    waited_s=(self.now_ms() - item.queued_ms) / 1000)
            if delay_s is None:
                log.warning("webhook %s to %s failed %d times, given up: %s",
                            item.webhook_id, self.endpoint.id, attempts, attempt.error)
                self._tally.given_up += 1
                await self.outbox.settle_head(item, now_ms=self.now_ms(),
                                              gave_up_error=attempt.error or "failed",
                                              attempts=attempts)
                continue
            await self.outbox.reschedule(ticket_id, due_ms=self.now_ms() + int(delay_s * 1000),
                                         attempts=attempts)
            return made
        return made

    # ---------------------------------------------------------------- new deliveries

    async def send_new(self, *, block_ms: int | None) -> int:
        """Send the next batch of new entries; how many entries it held."""
        if self._position is None:
            self._position = await self.outbox.position()
        items = await self.outbox.read(self._position, count=self.batch_size,
                                       block_ms=block_ms)
        if not items:
            return 0
        # The secrets as they are once the batch came, not before the read waited for it: a
        # secret rotated meanwhile signs it (read before, the first deliveries after a
        # rotation carried the old signature alone, up to block_ms after its 200).
        secrets = await self.endpoints.signing_secrets(self.endpoint.id, now_ms=self.now_ms())
        held = await self.outbox.held_tickets()
        lanes: dict[str, list[OutboxItem]] = {}
        for item in items:
            lanes.setdefault(item.ticket_id, []).append(item)
        gate = asyncio.Semaphore(max(1, self.in_flight))

        async def lane(ticket_id: str, queue: list[OutboxItem]) -> None:
            if ticket_id in held:
                for item in queue:
                    await self.outbox.park(item)
                return
            for index, item in enumerate(queue):
                if self.gone:
                    return
                async with gate:
                    attempt = await self.attempt(item, secrets)
                self._tally.add(attempt)
                self._pace(attempt)
                if attempt.outcome is Outcome.DELIVERED:
                    continue
                if attempt.outcome is Outcome.GONE:
                    await self._gone()
                    return
                delay_s = retry_delay_s(1, jitter=self.jitter(),
                                        retry_after_s=attempt.retry_after_s)
                assert delay_s is not None
                await self.outbox.park(item, due_ms=self.now_ms() + int(delay_s * 1000),
                                       attempts=1)
                for later in queue[index + 1:]:
                    await self.outbox.park(later)
                return

        tasks = [asyncio.ensure_future(lane(t, q)) for t, q in lanes.items()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # The batch is read again from the saved position: no lane may go on sending
            # meanwhile (its ticket's events would go twice at once, out of order).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if self.gone:
            return len(items)  # the watermark stays: what was not settled goes again
        self._position = items[-1].entry_id
        await self.outbox.save_position(self._position)
        return len(items)

    async def flush_tally(self) -> None:
        tally, self._tally = self._tally, Tally()
        if tally.delivered or tally.failed_attempts or tally.given_up:
            await self.outbox.record(
                delivered=tally.delivered, failed_attempts=tally.failed_attempts,
                given_up=tally.given_up, last_status=tally.last_status,
                last_error=tally.last_error, now_ms=self.now_ms())

    async def step(self, *, max_block_ms: int = 1000) -> int:
        """Retries due, then one batch of new entries (waiting up to max_block_ms for one,
        less when a retry falls due sooner); how many deliveries were attempted or parked."""
        secrets = await self.endpoints.signing_secrets(self.endpoint.id, now_ms=self.now_ms())
        done = await self.retry_due(secrets)
        if not self.gone:
            block_ms: int | None = max_block_ms
            next_due = await self.outbox.next_due_ms()
            if done or max_block_ms <= 0:
                block_ms = None
            elif next_due is not None:
                block_ms = max(1, min(max_block_ms, next_due - self.now_ms()))
            done += await self.send_new(block_ms=block_ms)
        await self.flush_tally()
        return done

    def reset(self) -> None:
        """Forget the cached watermark (after a Redis error: read it again)."""
        self._position = None
