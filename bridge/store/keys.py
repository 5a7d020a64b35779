"""Redis key names.

Contacts are spread over PARTITIONS partitions; every key of one contact carries its
partition's hash tag ({p:NNN}), and so does the partition's change log. A change and its
change log entry are then written in one transaction on one Redis Cluster slot (the
transactional outbox pattern: DESIGN §9), and the relay reads PARTITIONS streams instead
of one per contact. Global indexes live outside the partitions.

PARTITIONS is part of the stored layout: changing it moves every contact's keys.
"""

from __future__ import annotations

import zlib

PREFIX = "bridge"

PARTITIONS = 256


def partition_of(contact_id: str) -> int:
    return zlib.crc32(contact_id.encode()) % PARTITIONS


def partition_tag(partition: int) -> str:
    return f"{{p:{partition:03d}}}"


def contact_prefix(contact_id: str) -> str:
    return _prefix_in(partition_of(contact_id), contact_id)


def _prefix_in(partition: int, contact_id: str) -> str:
    return f"{partition_tag(partition)}:c:{contact_id}"


def change_log(partition: int) -> str:
    """Stream: the partition's ticket changes, written in the transaction of each change."""
    return f"{partition_tag(partition)}:log"


def change_log_of(contact_id: str) -> str:
    return change_log(partition_of(contact_id))


# Glob patterns over every contact's keys (tests, benchmarks, migrations).
EVENT_STREAMS_GLOB = "{p:*}:c:*:t:*:events"
TICKETS_GLOB = "{p:*}:c:*:t:*"  # also matches each ticket's other keys: filter by shape


def ticket_id_of(key: str) -> str:
    """The ticket id in one of a ticket's key names ({p:NNN}:c:<contact>:t:<ticket>...)."""
    return key.split(":")[5]


# SCAN MATCH pattern of every contact hash (`bridge migrate contact-ids`).
CONTACTS_GLOB = "{p:*}:c:*:contact"


# The layout before partitions (and before keyed ids): every key of a contact under the
# hash tag {c:<id>}. Only `bridge migrate contact-ids` reads it, to move such contacts.
def legacy_contact_prefix(contact_id: str) -> str:
    return f"{{c:{contact_id}}}"


LEGACY_CONTACTS_GLOB = "{c:*}:contact"


def routing_keys(contact_id: str) -> tuple[str, str, str, str]:
    """The contact's prefix, contact hash, seen set and change log: what routing a message
    names (the partition computed once, on every webhook)."""
    partition = partition_of(contact_id)
    prefix = _prefix_in(partition, contact_id)
    return prefix, _contact_in(prefix), _seen_in(prefix), change_log(partition)


def contact(contact_id: str) -> str:
    return _contact_in(contact_prefix(contact_id))


def _contact_in(prefix: str) -> str:
    return f"{prefix}:contact"


def seen(contact_id: str) -> str:
    return _seen_in(contact_prefix(contact_id))


def _seen_in(prefix: str) -> str:
    return f"{prefix}:seen"


def ticket(contact_id: str, ticket_id: str) -> str:
    return f"{contact_prefix(contact_id)}:t:{ticket_id}"


def events(contact_id: str, ticket_id: str) -> str:
    return f"{ticket(contact_id, ticket_id)}:events"


def deliveries(contact_id: str, ticket_id: str) -> str:
    """Hash: outbound event id -> JSON delivery state (mutable, unlike the stream)."""
    return f"{ticket(contact_id, ticket_id)}:delivery"


def idempotency(contact_id: str, ticket_id: str, key_id: str) -> str:
    """String: what a client's Idempotency-Key did on this ticket ("pending <op> <fp>" while
    its update runs, then "done <event id> <fp>"), kept a day."""
    return f"{ticket(contact_id, ticket_id)}:idem:{key_id}"


# Global keys (not in a contact's slot).
# Hash "<consumer>:<partition>" -> the id of the last change log entry handed on.
RELAY_POSITIONS = f"{PREFIX}:relay:pos"


def relay_lease(consumer: str) -> str:
    """String: the token of the relay that feeds this consumer (one at a time per consumer,
    which keeps the changes of one ticket in order)."""
    return f"{PREFIX}:relay:lease:{consumer}"



TICKET_SEQ = f"{PREFIX}:seq:ticket"
TICKET_CONTACT = f"{PREFIX}:ticket:contact"  # hash ticket id -> contact id
# Zset contact id -> ms of its latest ticket opening, written with the id allocation (intent
# first): if the process dies between the routing script and the index update, the ticket
# would be unlisted and unknown by id; the sweep (workers/sweeper.py) lists it.
OPENING = f"{PREFIX}:idx:opening"


# Zset ticket id -> ms: tickets that may hold an outbound event no worker has picked up yet
# (the oldest such moment). Written before the event (intent first), cleared by the sweep
# (workers/sweeper.py) once every outbound event of the ticket has a delivery state.
UNSENT = f"{PREFIX}:idx:unsent"
# Hash ticket id -> ms of its latest mark: the sweep leaves marks younger than its grace.
UNSENT_MARKS = f"{PREFIX}:unsent:marks"


def provider_message(provider_id: str) -> str:
    """Outbound provider id (Twilio SM…) -> "contact ticket event" for status callbacks."""
    return f"{PREFIX}:out:{provider_id}"


def early_status(provider_id: str) -> str:
    """List: status callbacks that arrived before a worker recorded this provider id."""
    return f"{PREFIX}:out-early:{provider_id}"


def index(kind: str, value: str = "") -> str:
    """Ticket list indexes: zsets of ticket ids scored by the numeric id (creation order)."""
    return f"{PREFIX}:idx:{kind}:{value}" if value else f"{PREFIX}:idx:{kind}"


def send_lock(contact_id: str, ticket_id: str, event_id: str) -> str:
    """Held by the attempt whose API call may be in flight (in the contact's slot)."""
    return f"{ticket(contact_id, ticket_id)}:sending:{event_id}"


def trigger_marker(rule: str, ticket_id: str, change_id: str) -> str:
    """Claimed by the first run of a trigger rule for one change: at most once."""
    return f"{PREFIX}:trg:{rule}:{ticket_id}:{change_id}"


def timer_marker(timer_job_id: str) -> str:
    """Claimed by the first run of a timer: at most once."""
    return f"{PREFIX}:tmr:{timer_job_id}"


# Surveys by the time they were sent (zset ticket id -> ms): the CSAT report reads it.
CSAT_SENT = f"{PREFIX}:idx:csat_sent"
