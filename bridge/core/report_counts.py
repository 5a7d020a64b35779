"""Report counters: what each ticket change adds to the per-hour counters the reports read.

The change log's report consumer (workers/report_counters.py) turns each change into facts
(a ticket was created, changed status, got a public agent reply, a survey, a rating) and
runs them through `step`, which keeps a small state per ticket and says which counters
move. Figures are kept per hour (and per day) and per dimension: a channel ("c:whatsapp")
or an agent ("a:alice"); a report then reads a fixed number of keys per hour of its period,
whatever the number of tickets.

Each dimension's hour holds a fixed layout of signed 32-bit counters: SCALARS first, then
one histogram per TIME_METRICS entry over BUCKETS log-spaced duration buckets (a quarter
octave each: a bucket's values are within 19% of each other, so a quantile read from them
is within about 9% of the exact one).

Definitions follow Zendesk's (README "Reports"): a ticket counts as solved once, at its
latest solve (a reopened and solved-again ticket moves from the first solve's hour to the
second's); full resolution, requester wait (time in new, open, on hold) and agent wait (time
in pending) are measured at that solve; first reply time is creation to the first public
agent reply (a reply, or a macro that sends); a rating counts once per ticket (a new rating
replaces the old one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum

# First replies within this delay count towards the quality index (README).
FIRST_REPLY_TARGET_S = 3600
POSITIVE_RATING = 4  # ratings of 4 and 5 (on 1..5) are "good", Zendesk's good/bad split


class Scalar(IntEnum):
    CREATED = 0
    SOLVED = 1
    REOPENED = 2
    REPLIES = 3
    SURVEYS_SENT = 4
    RATINGS = 5
    POSITIVE = 6
    RATING_1 = 7
    RATING_2 = 8
    RATING_3 = 9
    RATING_4 = 10
    RATING_5 = 11
    FIRST_REPLIES = 12
    FIRST_REPLIES_IN_TARGET = 13
    CLOSED = 14


SCALARS = 16  # room for one more without changing the layout


class TimeMetric(IntEnum):
    FIRST_REPLY = 0
    FULL_RESOLUTION = 1
    REQUESTER_WAIT = 2
    AGENT_WAIT = 3


TIME_METRICS = len(TimeMetric)
BUCKETS_PER_OCTAVE = 4
BUCKETS = 100  # bucket 0: up to 1 s; the last: everything above 2**24.75 s (~318 days)
SLOTS = SCALARS + TIME_METRICS * BUCKETS


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration: 0 for up to 1 s, then i for
    (2**((i-1)/4), 2**(i/4)] seconds."""
    if seconds <= 1:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log2(seconds) * BUCKETS_PER_OCTAVE - 1e-9))


def bucket_value(index: int) -> float:
    """A bucket's representative duration: the geometric middle of its bounds (0 for the
    first bucket: no wait at all, or under a second)."""
    if index == 0:
        return 0.0
    return float(2 ** ((index - 0.5) / BUCKETS_PER_OCTAVE))


def scalar_slot(scalar: Scalar) -> int:
    return int(scalar)


def hist_slot(metric: TimeMetric, bucket: int) -> int:
    return SCALARS + int(metric) * BUCKETS + bucket


def channel_dim(channel: str) -> str:
    return f"c:{channel}"


def agent_dim(agent: str) -> str:
    return f"a:{agent}"


@dataclass(frozen=True)
class Increment:
    """Add `delta` to counter `slot` of dimension `dim` in the hour holding `at_ms`."""

    dim: str
    slot: int
    at_ms: int
    delta: int = 1


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class Created:
    at_ms: int
    channel: str


@dataclass(frozen=True)
class StatusTo:
    at_ms: int
    status: str
    assignee: str = ""  # the ticket's assignee (credited with a solve)


@dataclass(frozen=True)
class PublicReply:
    at_ms: int
    author: str


@dataclass(frozen=True)
class SurveySent:
    at_ms: int


@dataclass(frozen=True)
class Rated:
    at_ms: int
    rating: int


Fact = Created | StatusTo | PublicReply | SurveySent | Rated

_REQUESTER_WAITS = frozenset({"new", "open", "hold"})
_UNSOLVED = frozenset({"new", "open", "pending", "hold"})


@dataclass(frozen=True)
class Solve:
    """The solve a ticket is counted under, so a later solve can move it."""

    at_ms: int
    assignee: str
    full_resolution_s: float
    requester_wait_s: float
    agent_wait_s: float


@dataclass(frozen=True)
class TicketFigures:
    """What the report consumer remembers of one ticket."""

    channel: str = ""
    created_ms: int = 0
    status: str = ""  # "" until the opening is counted
    status_since_ms: int = 0
    requester_wait_s: float = 0.0
    agent_wait_s: float = 0.0
    first_reply_ms: int = 0
    reopened: bool = False
    solve: Solve | None = None
    rating: int = 0
    rated_ms: int = 0


def _solve_increments(ticket: TicketFigures, solve: Solve, delta: int) -> list[Increment]:
    dim = channel_dim(ticket.channel)
    out = [Increment(dim, scalar_slot(Scalar.SOLVED), solve.at_ms, delta)]
    for metric, seconds in ((TimeMetric.FULL_RESOLUTION, solve.full_resolution_s),
                            (TimeMetric.REQUESTER_WAIT, solve.requester_wait_s),
                            (TimeMetric.AGENT_WAIT, solve.agent_wait_s)):
        out.append(Increment(dim, hist_slot(metric, bucket_of(seconds)), solve.at_ms, delta))
    if solve.assignee:
        out.append(Increment(agent_dim(solve.assignee), scalar_slot(Scalar.SOLVED),
                             solve.at_ms, delta))
    return out


def _rating_increments(ticket: TicketFigures, rating: int, at_ms: int, delta: int
                       ) -> list[Increment]:
    dim = channel_dim(ticket.channel)
    out = [Increment(dim, scalar_slot(Scalar.RATINGS), at_ms, delta),
           Increment(dim, scalar_slot(Scalar.RATING_1) + rating - 1, at_ms, delta)]
    if rating >= POSITIVE_RATING:
        out.append(Increment(dim, scalar_slot(Scalar.POSITIVE), at_ms, delta))
    return out


def _status_to(ticket: TicketFigures, fact: StatusTo) -> tuple[TicketFigures, list[Increment]]:
    if fact.status == ticket.status:
        return ticket, []
    spent_s = max(0, fact.at_ms - ticket.status_since_ms) / 1000
    requester = ticket.requester_wait_s + (spent_s if ticket.status in _REQUESTER_WAITS else 0)
    agent = ticket.agent_wait_s + (spent_s if ticket.status == "pending" else 0)
    ticket = replace(ticket, requester_wait_s=requester, agent_wait_s=agent,
                     status=fact.status, status_since_ms=fact.at_ms)
    out: list[Increment] = []
    dim = channel_dim(ticket.channel)
    if fact.status == "solved":
        if ticket.solve is not None:
            out += _solve_increments(ticket, ticket.solve, -1)
        solve = Solve(fact.at_ms, fact.assignee, max(0, fact.at_ms - ticket.created_ms) / 1000,
                      requester, agent)
        out += _solve_increments(ticket, solve, 1)
        ticket = replace(ticket, solve=solve)
    elif fact.status in _UNSOLVED and ticket.solve is not None and not ticket.reopened:
        out.append(Increment(dim, scalar_slot(Scalar.REOPENED), fact.at_ms))
        ticket = replace(ticket, reopened=True)
    if fact.status == "closed":
        out.append(Increment(dim, scalar_slot(Scalar.CLOSED), fact.at_ms))
    return ticket, out


def step(ticket: TicketFigures, fact: Fact) -> tuple[TicketFigures, list[Increment]]:
    """Pure: one fact about a ticket -> its new figures and the counters that move."""
    if isinstance(fact, Created):
        if ticket.status:  # handed on again: counted already
            return ticket, []
        fresh = TicketFigures(channel=fact.channel, created_ms=fact.at_ms, status="new",
                              status_since_ms=fact.at_ms)
        return fresh, [Increment(channel_dim(fact.channel), scalar_slot(Scalar.CREATED),
                                 fact.at_ms)]
    if not ticket.status:
        return ticket, []  # created before the counters began: not counted
    dim = channel_dim(ticket.channel)
    if isinstance(fact, StatusTo):
        return _status_to(ticket, fact)
    if isinstance(fact, PublicReply):
        out = [Increment(dim, scalar_slot(Scalar.REPLIES), fact.at_ms)]
        if fact.author:
            out.append(Increment(agent_dim(fact.author), scalar_slot(Scalar.REPLIES),
                                 fact.at_ms))
        if not ticket.first_reply_ms:
            waited_s = max(0, fact.at_ms - ticket.created_ms) / 1000
            slot = hist_slot(TimeMetric.FIRST_REPLY, bucket_of(waited_s))
            dims = [dim, *([agent_dim(fact.author)] if fact.author else [])]
            for d in dims:
                out.append(Increment(d, slot, fact.at_ms))
                out.append(Increment(d, scalar_slot(Scalar.FIRST_REPLIES), fact.at_ms))
                if waited_s <= FIRST_REPLY_TARGET_S:
                    out.append(Increment(d, scalar_slot(Scalar.FIRST_REPLIES_IN_TARGET),
                                         fact.at_ms))
            ticket = replace(ticket, first_reply_ms=fact.at_ms)
        return ticket, out
    if isinstance(fact, SurveySent):
        return ticket, [Increment(dim, scalar_slot(Scalar.SURVEYS_SENT), fact.at_ms)]
    if not 1 <= fact.rating <= 5 or fact.rating == ticket.rating:
        return ticket, []
    out = []
    if ticket.rating:
        out += _rating_increments(ticket, ticket.rating, ticket.rated_ms, -1)
    out += _rating_increments(ticket, fact.rating, fact.at_ms, 1)
    return replace(ticket, rating=fact.rating, rated_ms=fact.at_ms), out


# ---------------------------------------------------------------- stored form


def figures_to_fields(ticket: TicketFigures) -> dict[str, str]:
    """The flat string fields the store keeps a ticket's figures in."""
    fields = {"ch": ticket.channel, "cr": str(ticket.created_ms), "st": ticket.status,
              "ss": str(ticket.status_since_ms), "rw": repr(ticket.requester_wait_s),
              "aw": repr(ticket.agent_wait_s), "fr": str(ticket.first_reply_ms),
              "ro": "1" if ticket.reopened else "0", "rt": str(ticket.rating),
              "rm": str(ticket.rated_ms)}
    if ticket.solve is not None:
        s = ticket.solve
        fields["sv"] = " ".join((str(s.at_ms), repr(s.full_resolution_s),
                                 repr(s.requester_wait_s), repr(s.agent_wait_s), s.assignee))
    return fields


def figures_from_fields(fields: dict[str, str]) -> TicketFigures:
    if not fields.get("st"):
        return TicketFigures()
    solve = None
    if fields.get("sv"):
        at, full, req, agent, *who = fields["sv"].split(" ", 4)
        solve = Solve(int(at), who[0] if who else "", float(full), float(req), float(agent))
    return TicketFigures(
        channel=fields.get("ch", ""), created_ms=int(fields["cr"]),
        status=fields.get("st", ""), status_since_ms=int(fields.get("ss") or 0),
        requester_wait_s=float(fields.get("rw") or 0), agent_wait_s=float(fields.get("aw") or 0),
        first_reply_ms=int(fields.get("fr") or 0), reopened=fields.get("ro") == "1",
        solve=solve, rating=int(fields.get("rt") or 0), rated_ms=int(fields.get("rm") or 0))
