"""Inbound routing: the rules of DESIGN §2 applied to one message in one atomic script call
(route.lua), which also writes the change log entry."""

from __future__ import annotations

import asyncio
import heapq
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from bridge.core.messages import InboundMessage, contact_id_for
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import (
    Status,
)
from bridge.store import keys
from bridge.store.pipelining import AutoPipeline, PipelinedScript
from bridge.store.records import SERVICE_WINDOW_S, _s
from bridge.store.repair import TicketRepair

# Enum(value) goes through EnumType.__call__; a dict is several times cheaper per webhook.
_ACTIONS = {a.value: a for a in Action}


_STATUSES = {s.value: s for s in Status}


# json.dumps(..., ensure_ascii=False) builds an encoder per call; this one is built once.
_JSON_UNESCAPED = json.JSONEncoder(ensure_ascii=False)


# Routing results that prove the call's reserved ticket id was not used.
_ID_UNUSED_ACTIONS = frozenset({Action.APPEND.value, Action.REOPEN.value,
                                Action.CSAT_ANSWER.value})
# Ticket ids a process reserves at a time (TicketIds).
TICKET_ID_BLOCK = 16
MAX_TICKET_ID_BLOCK = 1024  # a refill for many waiting callers reserves at most this many
_ROUTE_SCRIPT = resources.files("bridge.store").joinpath("route.lua").read_text("utf-8")


@dataclass(frozen=True)
class RouteResult:
    action: Action
    ticket_id: str | None
    status: Status | None
    previous_ticket_id: str | None
    close_reason: str | None
    event_id: str | None
    rating: int | None
    contact_id: str

    @property
    def opened_ticket(self) -> bool:
        return self.action in (Action.NEW_TICKET, Action.FOLLOW_UP)


def message_data(msg: InboundMessage) -> dict[str, Any]:
    """The event's extra fields for a customer message (what the thread view shows)."""
    data: dict[str, Any] = {"provider_id": msg.provider_id}
    if msg.media:
        data["media"] = [{"url": m.url, "content_type": m.content_type} for m in msg.media]
    if msg.location:
        data["location"] = {
            "latitude": msg.location.latitude,
            "longitude": msg.location.longitude,
            "address": msg.location.address,
            "label": msg.location.label,
        }
    for name in ("button_payload", "button_text", "replied_to_id", "message_type"):
        value = getattr(msg, name)
        if value:
            data[name] = value
    return data



class TicketIds:
    """Ticket ids reserved by this process from the global sequence, a block at a time
    (INCRBY: one round trip per TICKET_ID_BLOCK new tickets, or per burst of new
    conversations: a refill reserves enough for every caller waiting on it). The smallest
    free id goes first, so one process numbers its tickets in order; across processes an
    id is at most a block (or a burst) out of creation order (the lists sort by id). Ids
    reserved by a process that stops are never used: ticket ids may have gaps."""

    def __init__(self, redis: Redis, *, block: int = TICKET_ID_BLOCK) -> None:
        # The INCRBY shares the index writes' round trips and connections. Sent twice
        # after a lost connection, it reserves a block nobody uses: a gap, never a reuse.
        self._commands = AutoPipeline(redis)
        self.block = block
        self._free: list[int] = []
        self._waiting = 0
        self._refilling: asyncio.Task[None] | None = None

    async def take(self) -> int:
        while not self._free:
            # Callers that find the reserve empty share one refill: one INCRBY, and when
            # Redis does not answer, one failure for all of them at once (a lock would
            # make each wait out its own timeout in turn).
            self._waiting += 1
            try:
                task = self._refilling
                if task is None or task.done():
                    task = self._refilling = asyncio.create_task(self._reserve_block())
                await asyncio.shield(task)
            finally:
                self._waiting -= 1
        return heapq.heappop(self._free)

    async def _reserve_block(self) -> None:
        # Runs an event-loop iteration after the first caller asked: the requests of that
        # iteration are all waiting by now. A block each would be a round trip each, one
        # after the other (64 new conversations at once: four in a row for blocks of 16).
        count = min(max(self.block, self._waiting), MAX_TICKET_ID_BLOCK)
        [reply] = await self._commands.checked([("INCRBY", keys.TICKET_SEQ, count)])
        last = int(reply)
        for tid in range(last - count + 1, last + 1):
            heapq.heappush(self._free, tid)

    def give_back(self, ticket_id: int) -> None:
        heapq.heappush(self._free, ticket_id)


class TicketRouting(TicketRepair):
    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        # One call per webhook: concurrent calls share round trips (see pipelining.py),
        # and the script is reloaded on NOSCRIPT (Redis restarted or SCRIPT FLUSH).
        self._route = PipelinedScript(redis, _ROUTE_SCRIPT)
        self._ticket_ids = TicketIds(redis)

    async def route_inbound(
        self,
        msg: InboundMessage,
        signal: RatingSignal,
        policy: ChannelPolicy,
        *,
        now_ms: int,
    ) -> RouteResult:
        """Apply the routing rules to one message in one atomic script call.

        A new ticket needs a global id, which cannot be allocated inside the contact's slot:
        every call brings one from this process's reserve (TicketIds), which the script uses
        only if it opens a ticket; an unused id goes back to the reserve. A new conversation
        then costs one round trip, like an append.
        """
        cid = self.contact_id(msg)
        new_tid = await self._ticket_ids.take()
        values = await self._route_once(msg, signal, policy, cid, str(new_tid), now_ms)
        # Given back only when this very call routed the message without opening a ticket.
        # Not on an error, nor on `duplicate`: an earlier try of this call whose reply was
        # lost may have opened a ticket under that id (the id is then simply skipped).
        if values[0] in _ID_UNUSED_ACTIONS:
            self._ticket_ids.give_back(new_tid)
        return await self._after_routing(cid, msg.channel.value, values)

    async def _route_once(self, msg: InboundMessage, signal: RatingSignal,
                          policy: ChannelPolicy, cid: str, new_tid: str, now_ms: int
                          ) -> list[str]:
        prefix, contact_key, seen_key, log_key = keys.routing_keys(cid)
        while True:
            raw = await self._route(
                keys=[contact_key, seen_key, log_key],
                args=[
                    prefix,
                    msg.provider_id,
                    now_ms,
                    new_tid,
                    msg.channel.value,
                    msg.contact_address,
                    msg.profile_name,
                    msg.wa_id,
                    msg.external_user_id,
                    msg.summary(),
                    _JSON_UNESCAPED.encode(message_data(msg)),
                    "" if signal.rating is None else signal.rating,
                    signal.payload_ticket_id,
                    signal.replied_to_id,
                    policy.solved_reply.value,
                    policy.max_thread_messages,
                    policy.max_thread_age_s,
                    policy.csat_window_s,
                    self.dedupe_ttl_s,
                    SERVICE_WINDOW_S,
                    cid,
                ],
            )
            values = [_s(v) for v in raw]
            if values[0] != "need_id":
                return values
            # Only when called without an id (the script's own contract).
            new_tid = str(await self._ticket_ids.take())

    async def _after_routing(self, cid: str, channel: str, values: list[str]) -> RouteResult:
        result = RouteResult(
            action=_ACTIONS[values[0]],
            ticket_id=values[1] or None,
            status=_STATUSES[values[2]] if values[2] else None,
            previous_ticket_id=values[3] or None,
            close_reason=values[4] or None,
            event_id=values[5] or None,
            rating=int(values[6]) if values[6] else None,
            contact_id=cid,
        )
        if result.action is Action.DUPLICATE:
            # A provider retries when it got no answer, e.g. the first delivery's process
            # died between the routing script and the index update below: redo that (rare).
            await self._reindex_current(cid)
        elif result.opened_ticket and result.ticket_id:
            # The script wrote the new ticket's indexed fields: status new, no assignee.
            await self._reindex(cid, [result.ticket_id, *filter(None, [result.previous_ticket_id])],
                                known={result.ticket_id: (Status.NEW.value, channel, "")})
        elif result.ticket_id and (
            result.action is Action.REOPEN
            or (result.action is Action.APPEND and len(values) > 7 and values[7])
        ):
            # A plain append changes no indexed field (status, channel, assignee): only
            # pending -> open does, which the script reports.
            await self._reindex(cid, [result.ticket_id])
        return result

    def contact_id(self, msg: InboundMessage) -> str:
        """The keyed id of the message's sender (ValueError without a contact key)."""
        return contact_id_for(self.contact_key, msg.channel, msg.contact_address)


