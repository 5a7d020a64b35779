"""A worker's warm stop does not wait out the command channel's 60 s listen.

RQ's teardown unsubscribes, then stops the listening thread. When the thread takes the
unsubscribe reply before its stop flag is cleared, it goes back to waiting up to 60 s for a
subscription; redis-py 8's `stop()` waited for it without a bound, so the worker took a
minute to exit and the supervisor killed it (workers/__main__.py: BoundedUnsubscribe).
The test forces that order: the unsubscribe returns only once the thread has read its reply.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.conftest import make_settings
from workers.__main__ import build_worker

# The listening thread waits up to 60 s; the stop must be over well before.
STOP_BOUND_S = 15.0


@pytest.mark.parametrize("fork", [False, True], ids=["in-process", "forking"])
def test_a_stop_after_the_thread_took_the_unsubscribe_reply_does_not_wait_for_it(
        redis_url: str, sync_redis: redis.Redis, fork: bool) -> None:
    worker = build_worker(sync_redis, fork=fork, settings=make_settings(redis_url))
    worker.subscribe()
    pubsub, listener = worker.pubsub, worker.pubsub_thread
    assert listener is not None and listener.is_alive()
    send_unsubscribe = pubsub.unsubscribe

    def unsubscribe_and_let_the_thread_take_the_reply() -> None:
        send_unsubscribe()
        deadline = time.monotonic() + STOP_BOUND_S
        while pubsub.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)

    pubsub.unsubscribe = unsubscribe_and_let_the_thread_take_the_reply
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(STOP_BOUND_S)
    assert not pubsub.subscribed  # the thread did take the reply: the race was lost
    assert not stopping.is_alive(), "the worker's teardown is waiting for the listener"
    # The listener no longer listens: its connection went back to the pool.
    assert pubsub.connection is None
