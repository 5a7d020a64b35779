"""One read of the change log for the relay process's consumers.

Caught up, the consumers hand on the same entries; each used to read them for itself: the
same XREAD over 256 streams, and the same entries parsed, four times. Now:

- A read still waiting for its answer is joined: a consumer that asks for the same count
  and wait, from the read's starting positions or from positions ahead of them, waits for
  that answer and gets the part it has not handed on yet. Consumers paced by the same
  interval ask at nearly the same moment; before reads in flight were joined, each of
  those found no answer kept yet and sent its own (under closed-loop appends, 548 reads
  served 984 consumer steps, where 4 consumers could have made do with 246).
- A non-empty answer is kept max_age_s, and serves a consumer that asks meanwhile in the
  same way (it may miss what was written since: that comes with its next read, as if it
  had read a moment earlier).

Consumers that read at different moments end at different positions; served from the same
answer they end at the same ones, so after one shared round they read together. An idle
consumer still wakes the moment a change is written (the read it joined wakes then), and
one left behind (its batch failed) reads alone until it has caught up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bridge.store.changelog import Batch, ChangeLog, positions_ahead

# How long a batch read for one consumer serves the others: the consumers pace their reads
# Relay.min_read_interval_s apart but finish their batches at different times.
SHARED_READ_MAX_AGE_S = 0.05


class _ReadAbandoned(Exception):
    """The read a consumer joined was cancelled (its own consumer is stopping)."""


@dataclass
class _Read:
    read_from: dict[int, str]
    count: int
    block_ms: int | None
    answer: asyncio.Future[Batch]

    def ahead(self, positions: dict[int, str], count: int) -> dict[int, tuple[int, int]] | None:
        """Where a consumer standing at `positions` and asking for `count` entries is past
        this read's start (Batch.past drops what it has handed on); None when this read's
        answer may lack entries it needs."""
        if count != self.count:
            return None
        return {} if positions == self.read_from else positions_ahead(self.read_from, positions)


@dataclass
class SharedReads:
    log: ChangeLog
    max_age_s: float = SHARED_READ_MAX_AGE_S
    reads: int = 0  # reads that went to Redis (tests, benchmarks)
    joined: int = 0  # reads that waited for another consumer's read in flight instead
    _in_flight: list[_Read] = field(default_factory=list)
    _recent: list[tuple[float, _Read, Batch]] = field(default_factory=list)

    async def read(self, positions: dict[int, str], *, count: int, block_ms: int | None
                   ) -> Batch:
        now = time.monotonic()
        self._recent = [kept for kept in self._recent if now - kept[0] <= self.max_age_s]
        for _, done, batch in reversed(self._recent):
            ahead = done.ahead(positions, count)
            if ahead is not None and (part := batch.past(ahead)).positions:
                return part
        for pending in self._in_flight:
            # Joined only if it waits as this read would: a read that may not wait must
            # not be held up by one that may.
            if pending.block_ms != block_ms:
                continue
            ahead = pending.ahead(positions, count)
            if ahead is not None:
                self.joined += 1
                try:
                    # Shielded: a joiner that stops waiting leaves the read to the others.
                    batch = await asyncio.shield(pending.answer)
                except _ReadAbandoned:
                    break
                return batch.past(ahead)
        return await self._read(positions, count, block_ms)

    async def _read(self, positions: dict[int, str], count: int, block_ms: int | None
                    ) -> Batch:
        self.reads += 1
        # A copy: the caller's dict moves on once it has handed on.
        pending = _Read(dict(positions), count, block_ms,
                        asyncio.get_running_loop().create_future())
        self._in_flight.append(pending)
        try:
            batch = await self.log.read(pending.read_from, count=count, block_ms=block_ms)
        except BaseException as exc:
            # The joiners fail as this read did; if it was cancelled, they read for
            # themselves.
            pending.answer.set_exception(exc if isinstance(exc, Exception)
                                         else _ReadAbandoned())
            pending.answer.exception()  # retrieved: no warning when nobody joined
            raise
        finally:
            self._in_flight.remove(pending)
        pending.answer.set_result(batch)
        if batch.positions:
            self._recent.append((time.monotonic(), pending, batch))
        return batch
