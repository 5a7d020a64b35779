"""Changing a ticket as an agent, macro or automation: one optimistic transaction that also
records the change's events and change log entry; Idempotency-Key replays; CSAT and
opt-out marks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bridge.core.changes import Origin, update_fields
from bridge.core.tickets import (
    OUTBOUND_EVENTS,
    Event,
    EventType,
    SessionState,
    Status,
    Ticket,
    TransitionError,
    check_transition,
    normalize_tags,
)
from bridge.store import keys
from bridge.store.records import (
    IDEMPOTENCY_TTL_S,
    Conflict,
    Idempotency,
    NotFound,
    Replayed,
    _decode_map,
    _s,
)
from bridge.store.routing import TicketRouting
from bridge.store.scripts import Script

# Unsent-send marks (keys.UNSENT): the zset keeps the oldest moment (NX), where the sweep
# starts looking; the hash keeps the latest, so that the sweep never clears a mark younger
# than its grace period (the event behind it may still be on its way to the stream).
_MARK_SCRIPT = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""



def _team_changes(current: Ticket, group: str | None, field_values: dict[str, Any] | None,
                  changes: dict[str, str], data: dict[str, Any]) -> None:
    """The group and field changes of an update (bridge/core/teams.py, ticket_fields.py)."""
    if (group is not None or field_values) and current.status is Status.CLOSED:
        raise Conflict("ticket_closed", "a closed ticket cannot change")
    if group is not None and group != current.group:
        changes["group"] = group
        data["group"] = group
    if field_values:
        after = {**current.field_values, **field_values}
        after = {k: v for k, v in after.items() if v is not None}
        if after != dict(current.field_values):
            changes["fields"] = json.dumps(after, ensure_ascii=False, sort_keys=True)
            data["fields"] = {k: after.get(k) for k in field_values}


class TicketUpdates(TicketRouting):
    def __init__(self, redis: Redis, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self._mark = Script(redis, _MARK_SCRIPT)

    async def update_ticket(
        self,
        ticket_id: str,
        *,
        author: str,
        now_ms: int,
        status: Status | None = None,
        assignee: str | None = None,
        tags: list[str] | None = None,
        end_session_reason: str | None = None,
        group: str | None = None,
        field_values: dict[str, Any] | None = None,
        contact_id: str = "",
        event: tuple[EventType, str, dict[str, Any]] | None = None,
        guard: Callable[[Ticket], None] | None = None,
        idempotency: Idempotency | None = None,
        origin: Origin = Origin.SYSTEM,
    ) -> tuple[Ticket, str | None]:
        """Change a ticket as an agent, macro or automation: one optimistic transaction.

        The pure rules in bridge.core.tickets decide what is allowed; WATCH makes the
        check and the write atomic against concurrent routing. Returns the new ticket and
        the id of the event recorded for the change (None when nothing changed).
        `guard` runs on the current ticket inside the transaction and may raise Conflict
        (for example: no public reply once the session has ended). With `idempotency`, a
        change already made under the same key is not made again: Replayed carries the
        event id it recorded (Conflict `idempotency_key_reused` when the key came with
        another request, `idempotency_key_in_progress` while the first one runs).
        The change log entry (bridge/core/changes.py) is written in the same transaction;
        `origin` says who made the change (only agents' changes fire triggers).
        `group` moves the ticket to an agents' group ("" : none); `field_values` is a patch
        of ticket field values, already checked (None clears a field). `contact_id`, when
        the caller knows it (a change log reader), spares the lookup by ticket id.
        """
        cid = contact_id or await self.contact_of(ticket_id)
        tkey, ekey = keys.ticket(cid, ticket_id), keys.events(cid, ticket_id)
        ikey = keys.idempotency(cid, ticket_id, idempotency.key_id) if idempotency else ""
        norm_tags = normalize_tags(tags) if tags is not None else None
        if event is not None and event[0] in OUTBOUND_EVENTS:
            # Intent first: if the caller dies or cannot enqueue the send after the event
            # is recorded, the sweep finds the ticket here.
            await self._mark(keys=[keys.UNSENT, keys.UNSENT_MARKS], args=[ticket_id, now_ms])
        # redis-py turns a connection lost during EXEC into a WatchError, as if the ticket
        # had changed: the transaction may have been applied all the same. Each attempt
        # writes this token on the ticket and its events, so a retry can tell.
        op = uuid.uuid4().hex
        event_id: str | None = None
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(tkey, *filter(None, [ikey]))
                    raw = await pipe.hgetall(tkey)
                    if not raw:
                        raise NotFound(f"ticket {ticket_id} not found")
                    fields = _decode_map(raw)
                    if fields.get("op") == op:  # our EXEC ran; only its reply was lost
                        await pipe.reset()  # (`current` is still what it changed)
                        event_id = await self._event_of_op(ekey, op)
                        break
                    current = Ticket.from_fields(fields)
                    if ikey:
                        held = _s(await pipe.get(ikey))
                        if held:  # this key's change was made (or is being made)
                            await pipe.reset()
                            assert idempotency is not None
                            raise Replayed(await self._replayed(ekey, held, idempotency)
                                           or "")
                    if guard is not None:
                        guard(current)
                    changes, change_data = self._changes(
                        current, status, assignee, norm_tags, end_session_reason, now_ms
                    )
                    _team_changes(current, group, field_values, changes, change_data)
                    if not changes and event is None:
                        await pipe.reset()
                        return current, None
                    pipe.multi()
                    if idempotency:
                        pipe.set(ikey, f"pending {op} {idempotency.fingerprint}",
                                 ex=IDEMPOTENCY_TTL_S)
                    change_type = (EventType.SESSION_ENDED if end_session_reason
                                   else EventType.STATUS_CHANGED if "status" in changes
                                   else EventType.TICKET_UPDATED)
                    eid_index = self._queue_update(
                        pipe, tkey, ekey, changes=changes, op=op, author=author,
                        now_ms=now_ms, change=(change_type, change_data) if change_data
                        else None, event=event)
                    recorded = ((event[0].value,) if event is not None else ()) + (
                        (change_type.value,) if change_data else ())
                    pipe.xadd(keys.change_log_of(cid), update_fields(
                        ticket_id=ticket_id, contact_id=cid, origin=origin,
                        version=current.version + 1, status_from=current.status.value,
                        status_to=changes.get("status", current.status.value),
                        session_ended="session" in changes, op=op, event_types=recorded,
                        assignee=changes.get("assignee"), tags_changed="tags" in changes,
                        holder=changes.get("assignee", current.assignee) or ""))
                    results = await pipe.execute()
                    event_id = _s(results[eid_index]) if eid_index is not None else None
                    break
                except WatchError:
                    continue
        if idempotency:
            await self.redis.set(ikey, f"done {event_id or '-'} {idempotency.fingerprint}",
                                 ex=IDEMPOTENCY_TTL_S)
        [ticket] = await self.tickets_in([(cid, ticket_id)])
        stale = {ticket_id: current.assignee} if current.assignee != ticket.assignee else {}
        await self._reindex(cid, [ticket_id], stale_assignees=stale)
        return ticket, event_id

    @staticmethod
    def _changes(
        current: Ticket,
        status: Status | None,
        assignee: str | None,
        tags: tuple[str, ...] | None,
        end_session_reason: str | None,
        now_ms: int,
    ) -> tuple[dict[str, str], dict[str, Any]]:
        changes: dict[str, str] = {}
        data: dict[str, Any] = {}
        if current.status is Status.CLOSED and (
            status, assignee, tags, end_session_reason
        ) != (None, None, None, None):
            raise Conflict("ticket_closed", "a closed ticket cannot change")
        if status is not None and status is not current.status:
            try:
                check_transition(current.status, status)
            except TransitionError as exc:
                raise Conflict(exc.code, exc.message) from exc
            changes["status"] = status.value
            data.update({"from": current.status.value, "to": status.value})
            if status is Status.SOLVED:
                changes["solved_at_ms"] = str(now_ms)
            if status is Status.CLOSED:
                changes["closed_at_ms"] = str(now_ms)
        if assignee is not None and assignee != current.assignee:
            changes["assignee"] = assignee
            data["assignee"] = assignee
        if tags is not None and tags != current.tags:
            changes["tags"] = json.dumps(list(tags))
            data["tags"] = list(tags)
        if end_session_reason is not None:
            if current.session is SessionState.ENDED:
                raise Conflict("session_ended", "the messaging session has already ended")
            changes["session"] = SessionState.ENDED.value
            changes["session_ended_reason"] = end_session_reason
            data["reason"] = end_session_reason
        return changes, data

    def _queue_update(
        self, pipe: Any, tkey: str, ekey: str, *, changes: dict[str, str], op: str,
        author: str, now_ms: int, change: tuple[EventType, dict[str, Any]] | None,
        event: tuple[EventType, str, dict[str, Any]] | None,
    ) -> int | None:
        """Queue a ticket update's writes in the transaction: its fields (with the
        attempt's token), the version, the caller's event and the change's. Returns the
        position of the reply holding the id of the event to return (the caller's, else
        the change's), None without either.

        The caller's event goes first: a macro's text is what it does before the changes it
        makes (a closing message, then the session's end; a reply, then solved), and the
        thread, the widget and the export show them in that order."""
        pipe.hset(tkey, mapping={**changes, "updated_at_ms": str(now_ms), "op": op})
        pipe.hincrby(tkey, "version", 1)
        index = None
        if event is not None:
            etype, body, data = event
            pipe.xadd(ekey, self._fields(etype, author, body, data, now_ms, op=op))
            index = len(pipe.command_stack) - 1
        if change is not None:
            etype, data = change
            pipe.xadd(ekey, self._fields(etype, author, "", data, now_ms, op=op))
            if index is None:
                index = len(pipe.command_stack) - 1
        return index

    @staticmethod
    def _fields(etype: EventType, author: str, body: str, data: dict[str, Any],
                now_ms: int, *, op: str = "") -> dict[str, str]:
        fields = {
            "type": etype.value,
            "at_ms": str(now_ms),
            "author": author,
            "body": body,
            "data": json.dumps(data, ensure_ascii=False),
        }
        if op:
            fields["op"] = op
        return fields

    async def replay(self, ticket_id: str, idempotency: Idempotency) -> str | None:
        """What an earlier request with this Idempotency-Key did on the ticket: None when
        there was none, else the id of the event it recorded ("" for none). Raises
        Conflict (see update_ticket) and NotFound."""
        cid = await self.contact_of(ticket_id)
        held = _s(await self.redis.get(keys.idempotency(cid, ticket_id, idempotency.key_id)))
        if not held:
            return None
        found = await self._replayed(keys.events(cid, ticket_id), held, idempotency)
        return found or ""

    async def _replayed(self, ekey: str, held: str, idempotency: Idempotency) -> str | None:
        """The event id an earlier request with this Idempotency-Key recorded."""
        state, ref, fingerprint = held.split(" ", 2)
        if fingerprint != idempotency.fingerprint:
            raise Conflict("idempotency_key_reused",
                           "this Idempotency-Key was used with another request: use a new "
                           "key for a new request")
        if state == "done":
            return None if ref == "-" else ref
        found = await self._event_of_op(ekey, ref, scan=500)
        if found is None:
            raise Conflict("idempotency_key_in_progress",
                           "a request with this Idempotency-Key is still being processed: "
                           "retry in a moment")
        return found

    async def _event_of_op(self, ekey: str, op: str, *, scan: int = 50) -> str | None:
        """The id of the event an update_ticket attempt handed back (among the newest):
        the first it wrote (the caller's event when it had one; _queue_update's order)."""
        found = None
        for eid, fields in await self.redis.xrevrange(ekey, "+", "-", count=scan):
            if _s(fields.get(b"op")) == op:
                found = _s(eid)
            elif found is not None:  # one attempt's events are next to each other
                break
        return found

    async def add_event(
        self, ticket_id: str, etype: EventType, *, author: str, body: str = "",
        data: dict[str, Any] | None = None, now_ms: int,
    ) -> Event:
        """Append an event that changes nothing else (a note, an automation firing)."""
        _, eid = await self.update_ticket(
            ticket_id, author=author, now_ms=now_ms, event=(etype, body, data or {})
        )
        assert eid is not None
        return await self.get_event(ticket_id, eid)

    async def claim_csat(self, ticket_id: str, now_ms: int) -> bool:
        """Mark the ticket's survey as sent, once per ticket ever (HSETNX on the ticket,
        which lives as long as the ticket): False when it was sent before."""
        cid = await self.contact_of(ticket_id)
        return bool(await self.redis.hsetnx(keys.ticket(cid, ticket_id), "csat_sent_at_ms",
                                            now_ms))

    async def open_survey(self, ticket_id: str, now_ms: int) -> None:
        """The contact's next rating answers this ticket's survey. The survey's provider id
        is not known yet: a stale one from an earlier survey must not match replies."""
        cid = await self.contact_of(ticket_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.contact(cid), mapping={"survey_ticket": ticket_id,
                                                  "survey_at_ms": str(now_ms)})
            pipe.hdel(keys.contact(cid), "survey_msg")
            await pipe.execute()
        await self.redis.zadd(keys.CSAT_SENT, {ticket_id: now_ms})

    async def surveyed_between(self, since_ms: int, until_ms: int) -> list[str]:
        """Ids of the tickets whose survey was sent in [since, until)."""
        raw = await self.redis.zrangebyscore(keys.CSAT_SENT, since_ms, f"({until_ms}")
        return [_s(i) for i in raw]

    async def mark_opted_out(self, contact_id: str) -> None:
        """The customer asked for no more messages (Twilio 21610): replies are refused."""
        await self.redis.hset(keys.contact(contact_id), "opted_out", "1")
