"""The ticket store on Redis: routing, agent actions, threads and ticket lists."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bridge.core.messages import InboundMessage, contact_id_for
from bridge.core.policy import ChannelPolicy
from bridge.core.routing import Action, RatingSignal
from bridge.core.tickets import (
    OUTBOUND_EVENTS,
    Contact,
    Delivery,
    Event,
    EventType,
    SessionState,
    Status,
    Ticket,
    TransitionError,
    check_transition,
    delivery_advances,
    normalize_tags,
)
from bridge.store import keys
from bridge.store.pipelining import PipelinedScript

# WhatsApp's customer-service window.
SERVICE_WINDOW_S = 24 * 3600
MAX_PAGE = 200
# The ticket fields the list indexes are built from.
_INDEXED = ("status", "channel", "assignee")
# Enum(value) goes through EnumType.__call__; a dict is several times cheaper per webhook.
_ACTIONS = {a.value: a for a in Action}
_STATUSES = {s.value: s for s in Status}
# json.dumps(..., ensure_ascii=False) builds an encoder per call; this one is built once.
_JSON_UNESCAPED = json.JSONEncoder(ensure_ascii=False)
# Unsent-send marks (keys.UNSENT): the zset keeps the oldest moment (NX), where the sweep
# starts looking; the hash keeps the latest, so that the sweep never clears a mark younger
# than its grace period (the event behind it may still be on its way to the stream).
_MARK_SCRIPT = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""
_CLEAR_MARK_SCRIPT = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') > tonumber(ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
# Drop the members whose score is still at most ARGV[1] (a newer mark stays).
_FORGET_OLDER_SCRIPT = """
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""
_ROUTE_SCRIPT = resources.files("bridge.store").joinpath("route.lua").read_text("utf-8")


class NotFound(LookupError):
    pass


# How long a client's Idempotency-Key is remembered (Stripe keeps them 24 hours too).
IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Idempotency:
    """A client's key for one change (`key_id`: a digest of the key, safe in a Redis key
    name) and a digest of the request it came with: the same key with another request is
    refused rather than answered with the first one's result."""

    key_id: str
    fingerprint: str


class Replayed(Exception):
    """update_ticket found the change of its Idempotency-Key already made: nothing was
    written; `event_id` is what the earlier request recorded ("" for no event)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


class Conflict(Exception):
    """The request is valid but the ticket's state refuses it (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _decode_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


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


class TicketStore:
    """All ticket state lives here; web and worker processes share it through Redis."""

    def __init__(self, redis: Redis, *, contact_key: bytes = b"",
                 dedupe_ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis = redis
        # Only routing needs it (a contact's id from its address); readers get ids from
        # tickets and URLs.
        self.contact_key = contact_key
        self.dedupe_ttl_s = dedupe_ttl_s
        # One call per webhook: concurrent calls share round trips (see pipelining.py),
        # and the script is reloaded on NOSCRIPT (Redis restarted or SCRIPT FLUSH).
        self._route = PipelinedScript(redis, _ROUTE_SCRIPT)
        self._mark = redis.register_script(_MARK_SCRIPT)
        self._clear_mark = redis.register_script(_CLEAR_MARK_SCRIPT)
        self._forget_older = redis.register_script(_FORGET_OLDER_SCRIPT)

    # ---------------------------------------------------------------- inbound routing

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
        the script answers `need_id` without writing, we INCR the global sequence and run it
        again. A concurrent message may have opened the ticket meanwhile; that id is then
        left unused (ticket ids may have gaps).
        """
        cid = self.contact_id(msg)
        new_tid = ""
        while True:
            raw = await self._route(
                keys=[keys.contact(cid), keys.seen(cid)],
                args=[
                    keys.contact_prefix(cid),
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
                break
            new_tid = await self._allocate_ticket_id(cid, now_ms)
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
            await self._reindex(cid, [result.ticket_id, *filter(None, [result.previous_ticket_id])])
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

    async def _allocate_ticket_id(self, cid: str, now_ms: int) -> str:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(keys.TICKET_SEQ)
            # Intent first, in the same round trip: should this process die between the
            # routing script and the index update, the sweep lists the ticket.
            pipe.zadd(keys.OPENING, {cid: now_ms})
            ticket_id, _ = await pipe.execute()
        return str(ticket_id)

    async def contacts_opening(self, *, before_ms: int, limit: int = 1000) -> list[str]:
        """Contacts that opened a ticket before that moment and were not checked since,
        oldest first."""
        raw = await self.redis.zrangebyscore(keys.OPENING, "-inf", before_ms, start=0,
                                             num=limit)
        return [_s(cid) for cid in raw]

    async def list_if_unlisted(self, contact_ids: list[str]) -> list[str]:
        """Index each contact's current ticket (and the one it follows up) if the ticket
        list does not know it: its opening's index update never ran. Returns the ids
        listed now. Three round trips for the whole batch when nothing is missing."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in contact_ids:
                pipe.hget(keys.contact(cid), "cur")
            currents = [(cid, _s(cur)) for cid, cur in zip(contact_ids, await pipe.execute(),
                                                           strict=True) if cur]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, tid in currents:
                pipe.hget(keys.ticket(cid, tid), "follow_up_of")
            previous = [_s(p) for p in await pipe.execute()]
        tickets = [(cid, tid) for cid, tid in currents]
        tickets += [(cid, prev) for (cid, _), prev in zip(currents, previous, strict=True)
                    if prev]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, tid in tickets:
                pipe.zscore(keys.index("all"), tid)
            scores = await pipe.execute()
        missing: dict[str, list[str]] = {}
        for (cid, tid), score in zip(tickets, scores, strict=True):
            if score is None:
                missing.setdefault(cid, []).append(tid)
        for cid, tids in missing.items():
            await self._reindex(cid, tids)
        return [tid for tids in missing.values() for tid in tids]

    async def forget_openings(self, contact_ids: list[str], *, checked_before_ms: int) -> int:
        """Drop the contacts' opening marks, unless one opened a ticket since."""
        if not contact_ids:
            return 0
        return int(await self._forget_older(keys=[keys.OPENING],
                                            args=[checked_before_ms, *contact_ids]))

    # ---------------------------------------------------------------- reads

    async def contact_of(self, ticket_id: str) -> str:
        cid = _s(await self.redis.hget(keys.TICKET_CONTACT, ticket_id))
        if not cid:
            raise NotFound(f"ticket {ticket_id} not found")
        return cid

    async def get_ticket(self, ticket_id: str) -> Ticket:
        cid = await self.contact_of(ticket_id)
        raw = await self.redis.hgetall(keys.ticket(cid, ticket_id))
        if not raw:
            raise NotFound(f"ticket {ticket_id} not found")
        return Ticket.from_fields(_decode_map(raw))

    async def get_contact(self, contact_id: str) -> Contact:
        f = _decode_map(await self.redis.hgetall(keys.contact(contact_id)))
        if not f:
            raise NotFound(f"contact {contact_id} not found")
        return Contact(
            id=contact_id,
            channel=f.get("channel", ""),
            address=f.get("address", ""),
            name=f.get("name", ""),
            wa_id=f.get("wa_id", ""),
            external_user_id=f.get("external_user_id", ""),
            locale=f.get("locale", ""),
            window_until_ms=int(f.get("window_until_ms") or 0),
            opted_out=f.get("opted_out") == "1",
        )

    async def get_tickets(self, ticket_ids: list[str]) -> list[Ticket]:
        if not ticket_ids:
            return []
        cids = await self.redis.hmget(keys.TICKET_CONTACT, ticket_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            found = [(tid, _s(c)) for tid, c in zip(ticket_ids, cids, strict=True) if c]
            for tid, cid in found:
                pipe.hgetall(keys.ticket(cid, tid))
            rows = await pipe.execute()
        return [Ticket.from_fields(_decode_map(r)) for r in rows if r]

    async def list_tickets(
        self,
        *,
        status: Status | None = None,
        channel: str = "",
        assignee: str = "",
        contact_id: str = "",
        cursor: int | None = None,
        limit: int = 50,
    ) -> tuple[list[Ticket], int | None]:
        """Newest tickets first, in pages. The cursor is the last ticket id of the previous
        page. One filter costs O(page); several are read from the most selective index and
        the rest are checked on the loaded tickets."""
        filters: list[str] = []
        if status:
            filters.append(keys.index("status", status.value))
        if channel:
            filters.append(keys.index("channel", channel))
        if assignee:
            filters.append(keys.index("assignee", assignee))
        if contact_id:
            filters.append(keys.index("contact", contact_id))
        if not filters:
            filters.append(keys.index("all"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for f in filters:
                pipe.zcard(f)
            sizes = await pipe.execute()
        source = filters[sizes.index(min(sizes))]
        page: list[Ticket] = []
        upper: str = f"({cursor}" if cursor is not None else "+inf"
        # One match beyond the page says whether there is a next one: counting the source
        # index instead would hand out a cursor to an empty page when the entries left
        # there fail the other filters.
        batch = max(limit + 1, 20)
        while len(page) <= limit:
            ids = [_s(i) for i in await self.redis.zrevrangebyscore(
                source, upper, "-inf", start=0, num=batch)]
            if not ids:
                break
            for t in await self.get_tickets(ids):
                if (
                    (status is None or t.status is status)
                    and (not channel or t.channel == channel)
                    and (not assignee or t.assignee == assignee)
                    and (not contact_id or t.contact_id == contact_id)
                ):
                    page.append(t)
                    if len(page) > limit:
                        break
            if len(ids) < batch:
                break
            upper = f"({ids[-1]}"
        has_more = len(page) > limit > 0
        page = page[:limit]
        return page, (int(page[-1].id) if has_more else None)

    async def events(
        self, ticket_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[Event], str | None]:
        """A page of the thread, newest first; the cursor is the last event id returned."""
        cid = await self.contact_of(ticket_id)
        upper = f"({cursor}" if cursor else "+"
        raw = await self.redis.xrevrange(keys.events(cid, ticket_id), upper, "-", count=limit + 1)
        more = len(raw) > limit
        raw = raw[:limit]
        out_ids = [_s(eid) for eid, f in raw if _s(f.get(b"type")) in OUTBOUND_EVENTS]
        states: dict[str, dict[str, str]] = {}
        if out_ids:
            vals = await self.redis.hmget(keys.deliveries(cid, ticket_id), out_ids)
            states = {eid: json.loads(_s(v)) for eid, v in zip(out_ids, vals, strict=True) if v}
        events = [self._event(ticket_id, _s(eid), _decode_map(f), states) for eid, f in raw]
        return events, (events[-1].id if more and events else None)

    @staticmethod
    def _event(ticket_id: str, eid: str, f: dict[str, str],
               states: dict[str, dict[str, str]]) -> Event:
        state = states.get(eid)
        etype = EventType(f["type"])
        if state is None and etype in OUTBOUND_EVENTS:
            # No worker has touched it yet.
            state = {"state": Delivery.QUEUED.value}
        return Event(
            id=eid,
            ticket_id=ticket_id,
            type=etype,
            at_ms=int(f["at_ms"]),
            author=f.get("author", ""),
            body=f.get("body", ""),
            data=json.loads(f.get("data") or "{}"),
            delivery=Delivery(state["state"]) if state else None,
            error_code=state.get("error_code", "") if state else "",
            error_message=state.get("error_message", "") if state else "",
        )

    async def get_event(self, ticket_id: str, event_id: str) -> Event:
        cid = await self.contact_of(ticket_id)
        raw = await self.redis.xrange(keys.events(cid, ticket_id), event_id, event_id)
        if not raw:
            raise NotFound(f"event {event_id} not found")
        state = _s(await self.redis.hget(keys.deliveries(cid, ticket_id), event_id))
        states = {event_id: json.loads(state)} if state else {}
        return self._event(ticket_id, event_id, _decode_map(raw[0][1]), states)

    # ---------------------------------------------------------------- agent actions

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
        event: tuple[EventType, str, dict[str, Any]] | None = None,
        guard: Callable[[Ticket], None] | None = None,
        idempotency: Idempotency | None = None,
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
        """
        cid = await self.contact_of(ticket_id)
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
                    results = await pipe.execute()
                    event_id = _s(results[eid_index]) if eid_index is not None else None
                    break
                except WatchError:
                    continue
        if idempotency:
            await self.redis.set(ikey, f"done {event_id or '-'} {idempotency.fingerprint}",
                                 ex=IDEMPOTENCY_TTL_S)
        ticket = await self.get_ticket(ticket_id)
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
        attempt's token), the version, the change's event and the caller's. Returns the
        position of the reply holding the id of the event to return (the caller's, else
        the change's), None without either."""
        pipe.hset(tkey, mapping={**changes, "updated_at_ms": str(now_ms), "op": op})
        pipe.hincrby(tkey, "version", 1)
        index = None
        if change is not None:
            etype, data = change
            pipe.xadd(ekey, self._fields(etype, author, "", data, now_ms, op=op))
            index = len(pipe.command_stack) - 1
        if event is not None:
            etype, body, data = event
            pipe.xadd(ekey, self._fields(etype, author, body, data, now_ms, op=op))
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
        """The id of the last event an update_ticket attempt wrote (among the newest)."""
        for eid, fields in await self.redis.xrevrange(ekey, "+", "-", count=scan):
            if _s(fields.get(b"op")) == op:
                return _s(eid)
        return None

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

    # ---------------------------------------------------------------- outbound delivery

    async def _set_delivery(self, cid: str, tid: str, eid: str, state: dict[str, str]) -> None:
        await self.redis.hset(keys.deliveries(cid, tid), eid, json.dumps(state))

    # ---------------------------------------------------------------- unsent sends

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

    async def set_delivery(self, ticket_id: str, event_id: str, state: dict[str, str]) -> None:
        """Worker-side: record a send attempt, its provider id, or its failure."""
        cid = await self.contact_of(ticket_id)
        await self._set_delivery(cid, ticket_id, event_id, state)
        sid = state.get("provider_id")
        if sid:
            await self.redis.set(
                keys.provider_message(sid), f"{cid} {ticket_id} {event_id}", ex=30 * 24 * 3600
            )
            await self._apply_early_statuses(sid)

    async def _apply_early_statuses(self, provider_id: str) -> None:
        """Apply the callbacks parked for a provider id before it was recorded. Each is
        removed once applied (applying one twice changes nothing; a pop whose reply was
        lost to a dropped connection would lose it)."""
        early = keys.early_status(provider_id)
        parked = await self.redis.lrange(early, 0, -1)
        for raw in parked:
            item = json.loads(_s(raw))
            await self.record_status_callback(
                provider_id, Delivery(item["state"]), error_code=item.get("error_code", ""),
                error_message=item.get("error_message", ""))
        if parked:
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in parked:
                    pipe.lrem(early, 1, raw)
                await pipe.execute()

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
            # The sid may have been recorded between our GET and RPUSH: apply it now.
            if await self.redis.exists(keys.provider_message(provider_id)):
                await self._apply_early_statuses(provider_id)
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
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    # ---------------------------------------------------------------- indexes

    async def _reindex_current(self, cid: str) -> None:
        """Reindex the contact's current ticket and the one it follows up, if any."""
        current = _s(await self.redis.hget(keys.contact(cid), "cur"))
        if not current:
            return
        previous = _s(await self.redis.hget(keys.ticket(cid, current), "follow_up_of"))
        await self._reindex(cid, [current, *filter(None, [previous])])

    async def _reindex(
        self, cid: str, ticket_ids: list[str], *, stale_assignees: dict[str, str] | None = None
    ) -> None:
        """Bring the global list indexes in line with the tickets' current fields.

        Idempotent; runs after each change (outside the contact's slot, so not in the
        routing script). A crash between the two leaves a ticket unlisted until the
        provider's retry of that message (see route_inbound), the ticket's next change or
        `bridge reindex`. Two concurrent changes could write
        their index entries in the opposite order: each pass re-reads the ticket's fields
        afterwards and redoes the tickets whose indexed fields changed meanwhile, so the
        last pass wins.
        """
        pending = list(ticket_ids)
        stale = dict(stale_assignees or {})
        for _ in range(10):
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid in pending:
                    pipe.hmget(keys.ticket(cid, tid), *_INDEXED)
                rows = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid, old_assignee in stale.items():
                    if old_assignee:
                        pipe.zrem(keys.index("assignee", old_assignee), tid)
                for tid, (status, channel, assignee) in zip(pending, rows, strict=True):
                    score = {tid: int(tid)}
                    pipe.hset(keys.TICKET_CONTACT, tid, cid)
                    pipe.zadd(keys.index("all"), score)
                    pipe.zadd(keys.index("contact", cid), score)
                    pipe.zadd(keys.index("channel", _s(channel)), score)
                    for s in Status:
                        if s.value == _s(status):
                            pipe.zadd(keys.index("status", s.value), score)
                        else:
                            pipe.zrem(keys.index("status", s.value), tid)
                    if _s(assignee):
                        pipe.zadd(keys.index("assignee", _s(assignee)), score)
                for tid in pending:
                    pipe.hmget(keys.ticket(cid, tid), *_INDEXED)
                results = await pipe.execute()
            fields_after = results[-len(pending):]
            pending = [tid for tid, row, after in zip(pending, rows, fields_after, strict=True)
                       if list(map(_s, row)) != list(map(_s, after))]
            stale = {}
            if not pending:
                return

    async def reindex_all(self) -> int:
        """Rebuild every index from the tickets themselves (`bridge reindex`)."""
        count = 0
        async for key in self.redis.scan_iter(match="{c:*}:t:*", count=1000):
            name = _s(key)
            parts = name.split(":")
            if len(parts) != 4:
                continue
            cid, tid = parts[1].rstrip("}"), parts[3]
            await self._reindex(cid, [tid])
            count += 1
        return count
