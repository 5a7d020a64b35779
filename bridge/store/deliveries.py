"""Outbound delivery states: what the workers record around each send, the provider's status
callbacks (forward moves only, parked when they beat the worker), and the unsent-sends
marks the sweep reads."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bridge.core.changes import delivery_fields
from bridge.core.tickets import (
    OUTBOUND_EVENTS,
    Delivery,
    delivery_advances,
)
from bridge.store import keys
from bridge.store.records import NotFound, _s
from bridge.store.scripts import Script
from bridge.store.updates import TicketUpdates

_CLEAR_MARK_SCRIPT = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') > tonumber(ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""



class TicketDeliveries(TicketUpdates):
    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._clear_mark = Script(redis, _CLEAR_MARK_SCRIPT)

    async def _set_delivery(self, cid: str, tid: str, eid: str, state: dict[str, str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.deliveries(cid, tid), eid, json.dumps(state))
            if state.get("state"):
                pipe.xadd(keys.change_log_of(cid), delivery_fields(
                    ticket_id=tid, contact_id=cid, event_id=eid, delivery=state["state"],
                    error_code=state.get("error_code", "")))
            await pipe.execute()

    async def unsent_tickets(self, *, marked_before_ms: int, limit: int = 10_000
                             ) -> list[tuple[str, int]]:
        """(ticket id, oldest mark ms) of the tickets marked as maybe holding an unsent
        outbound event since before that moment, oldest first."""
        raw = await self.redis.zrangebyscore(keys.UNSENT, "-inf", marked_before_ms,
                                             start=0, num=limit, withscores=True)
        return [(_s(tid), int(score)) for tid, score in raw]

    async def undelivered_events(self, ticket_id: str, *, since_ms: int, scan: int = 500
                                 ) -> list[tuple[str, int]]:
        """(event id, ms) of the ticket's outbound events recorded since that moment (at
        most the newest `scan`) that have no delivery state: no worker has picked them up."""
        try:
            cid = await self.contact_of(ticket_id)
        except NotFound:
            return []
        raw = await self.redis.xrevrange(keys.events(cid, ticket_id), "+",
                                         str(max(0, since_ms)), count=scan)
        out_ids = [_s(eid) for eid, f in raw if _s(f.get(b"type")) in OUTBOUND_EVENTS]
        if not out_ids:
            return []
        states = await self.redis.hmget(keys.deliveries(cid, ticket_id), out_ids)
        return [(eid, int(eid.split("-", 1)[0]))
                for eid, state in zip(out_ids, states, strict=True) if state is None][::-1]

    async def clear_unsent(self, ticket_id: str, *, checked_before_ms: int) -> bool:
        """Drop the ticket's mark, unless it was marked at or after that moment (an event
        recorded since may not be in the stream yet)."""
        return bool(await self._clear_mark(keys=[keys.UNSENT, keys.UNSENT_MARKS],
                                           args=[ticket_id, checked_before_ms]))

    async def delivery_state(self, ticket_id: str, event_id: str) -> dict[str, str]:
        cid = await self.contact_of(ticket_id)
        raw = _s(await self.redis.hget(keys.deliveries(cid, ticket_id), event_id))
        return json.loads(raw) if raw else {}

    async def set_delivery(self, ticket_id: str, event_id: str, state: dict[str, str]
                           ) -> None:
        """Worker-side: record a send attempt, its provider id, or its failure. Status
        callbacks parked for that provider id are applied now; like every delivery change
        they reach the change log (the relay acts on a 63016)."""
        cid = await self.contact_of(ticket_id)
        await self._set_delivery(cid, ticket_id, event_id, state)
        sid = state.get("provider_id")
        if not sid:
            return
        await self.redis.set(
            keys.provider_message(sid), f"{cid} {ticket_id} {event_id}", ex=30 * 24 * 3600
        )
        await self._apply_early_statuses(sid)

    async def _apply_early_statuses(self, provider_id: str) -> list[tuple[Delivery, str]]:
        """Apply the callbacks parked for a provider id before it was recorded; returns
        (state, error code) of those that changed the state. Each is removed once applied
        (applying one twice changes nothing; a pop whose reply was lost to a dropped
        connection would lose it)."""
        early = keys.early_status(provider_id)
        parked = await self.redis.lrange(early, 0, -1)
        applied: list[tuple[Delivery, str]] = []
        for raw in parked:
            item = json.loads(_s(raw))
            status = (Delivery(item["state"]), item.get("error_code", ""))
            if await self.record_status_callback(
                    provider_id, status[0], error_code=status[1],
                    error_message=item.get("error_message", "")):
                applied.append(status)
        if parked:
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in parked:
                    pipe.lrem(early, 1, raw)
                await pipe.execute()
        return applied

    async def link_survey_message(self, contact_id: str, ticket_id: str, provider_id: str
                                  ) -> None:
        """Remember the survey's provider id, so a reply to that message counts as the
        answer (only while this ticket's survey is still the outstanding one)."""
        ckey = keys.contact(contact_id)
        if _s(await self.redis.hget(ckey, "survey_ticket")) == ticket_id:
            await self.redis.hset(ckey, "survey_msg", provider_id)

    async def delivery_ref(self, provider_id: str) -> tuple[str, str] | None:
        """(ticket id, event id) of the outbound message a provider id belongs to."""
        ref = _s(await self.redis.get(keys.provider_message(provider_id)))
        if not ref:
            return None
        _, tid, eid = ref.split(" ")
        return tid, eid

    async def record_status_callback(
        self, provider_id: str, delivery: Delivery, *, error_code: str = "",
        error_message: str = "",
    ) -> bool:
        """Apply a provider's delivery status: only forward moves are stored. Returns True
        when the state changed; a repeated or out-of-order callback changes nothing."""
        ref = _s(await self.redis.get(keys.provider_message(provider_id)))
        if not ref:
            # Twilio can call back before the worker has written the sid down: park it for
            # a while; the worker's set_delivery applies it. Unknown sids simply expire.
            early = keys.early_status(provider_id)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(early, json.dumps({"state": delivery.value, "error_code": error_code,
                                              "error_message": error_message}))
                pipe.expire(early, 600)
                await pipe.execute()
            # The sid may have been recorded between our GET and RPUSH: apply it now, and
            # tell the caller if that applied ours (it acts on a 63016).
            if await self.redis.exists(keys.provider_message(provider_id)):
                applied = await self._apply_early_statuses(provider_id)
                return (delivery, error_code) in applied
            return False
        cid, tid, eid = ref.split(" ")
        dkey = keys.deliveries(cid, tid)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(dkey)
                    raw = _s(await pipe.hget(dkey, eid))
                    state: dict[str, str] = json.loads(raw) if raw else {}
                    current = Delivery(state["state"]) if "state" in state else None
                    # A callback about an earlier attempt (the free-form message that a
                    # template replaced after 63016) must not move the current one.
                    stale = state.get("provider_id", provider_id) != provider_id
                    if stale or not delivery_advances(current, delivery):
                        await pipe.reset()
                        return False
                    state.update({"state": delivery.value, "provider_id": provider_id})
                    if error_code:
                        state["error_code"] = error_code
                        state["error_message"] = error_message
                    pipe.multi()
                    pipe.hset(dkey, eid, json.dumps(state))
                    pipe.xadd(keys.change_log_of(cid), delivery_fields(
                        ticket_id=tid, contact_id=cid, event_id=eid, delivery=delivery.value,
                        error_code=error_code))
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
