"""The ticket store on Redis: one object for the web process and the workers, built in
layers, one job per module (each layer extends the one before it):

    records     errors, idempotency types, the Redis client      (StoreBase)
    reads       tickets, contacts, lists, threads                 (TicketReads)
    indexes     the global list indexes                           (TicketIndexes)
    repair      openings cut off before their index update        (TicketRepair)
    routing     inbound messages, one atomic script               (TicketRouting)
    updates     agents', macros' and automations' changes         (TicketUpdates)
    deliveries  outbound delivery states and status callbacks     (TicketDeliveries)

Every change writes its change log entry in the same atomic step (bridge/store/changelog.py).
"""

from __future__ import annotations

from bridge.store.deliveries import TicketDeliveries
from bridge.store.records import (
    IDEMPOTENCY_TTL_S,
    MAX_PAGE,
    SERVICE_WINDOW_S,
    Conflict,
    Idempotency,
    NotFound,
    Replayed,
)
from bridge.store.routing import RouteResult, message_data

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "MAX_PAGE",
    "SERVICE_WINDOW_S",
    "Conflict",
    "Idempotency",
    "NotFound",
    "Replayed",
    "RouteResult",
    "TicketStore",
    "message_data",
]


class TicketStore(TicketDeliveries):
    """All ticket state lives here; web and worker processes share it through Redis."""
