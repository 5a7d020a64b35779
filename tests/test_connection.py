"""Redis clients from settings: TLS options for managed Redis, fail-fast pools for the web
process, clients that ride out a Redis restart (and a dropped connection) for the workers."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection

from bridge.store.connection import (
    FAIL_FAST,
    RIDE_OUT,
    RetryPolicy,
    async_redis,
    sync_redis,
)
from bridge.store.embedded import EmbeddedRedis
from tests.conftest import make_settings


async def test_rediss_url_with_self_signed_certificates() -> None:
    settings = make_settings("rediss://:secret@redis.example.com:6380/0",
                             redis_ssl_cert_reqs="none")
    client = async_redis(settings)
    pool = client.connection_pool
    assert issubclass(pool.connection_class, redis.asyncio.SSLConnection)  # still TLS
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    await client.aclose()
    sync_client = sync_redis(settings)
    assert sync_client.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
    sync_client.close()


async def test_plain_url_has_no_tls_options() -> None:
    client = async_redis(make_settings("redis://127.0.0.1:6379/0"))
    assert "ssl_cert_reqs" not in client.connection_pool.connection_kwargs
    assert client.connection_pool.max_connections == 64
    await client.aclose()


async def test_a_unix_socket_url_keeps_its_connection_class() -> None:
    client = async_redis(make_settings("unix:///tmp/redis.sock?db=0"))
    assert issubclass(client.connection_pool.connection_class,
                      redis.asyncio.UnixDomainSocketConnection)
    await client.aclose()


# ------------------------------------------------------------------ command packing

_COMMANDS: list[tuple[object, ...]] = [
    ("SET", "k", "v"), ("SET", "k", 1.5), ("SET", "k", 1e-5), ("SET", "k", 0.1 + 0.2),
    ("SET", "k", 10**20), ("INCRBY", "k", -3), ("SET", "clé", "été ✓"),
    ("SET", b"k", b"\x00\xff"), ("CLIENT SETNAME", "x"), ("SET", "k", memoryview(b"ab")),
    ("SET", "k", bytearray(b"ab")), ("XREAD", "COUNT", 100, "STREAMS", "a", "b", "0-0", "$"),
    (b"GET", "k"), (b"CLIENT SETNAME", b"x"),
]


@pytest.mark.parametrize("command", _COMMANDS)
async def test_commands_are_packed_in_c_to_the_same_bytes(command: tuple[object, ...]) -> None:
    client = async_redis(make_settings("redis://127.0.0.1:6379/0"))
    ours = client.connection_pool.make_connection()
    redis_pys = redis.asyncio.Connection()
    assert type(ours) is not redis.asyncio.Connection
    assert b"".join(ours.pack_command(*command)) == b"".join(
        redis_pys.pack_command(*command))
    await client.aclose()


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
async def test_a_value_redis_cannot_take_is_a_data_error_before_any_io(
        redis_url: str, sync_redis: redis.Redis, value: object) -> None:
    client = async_redis(make_settings(redis_url))
    with pytest.raises(redis.DataError):
        await client.set("packing-probe", value)  # type: ignore[arg-type]
    assert sync_redis.exists("packing-probe") == 0
    await client.aclose()


async def test_the_c_packed_client_round_trips_values(redis_url: str) -> None:
    client = async_redis(make_settings(redis_url))
    await client.hset("packing-hash", mapping={"f": "été ✓", "n": 7, "x": 0.5})
    assert await client.hgetall("packing-hash") == {
        b"f": "été ✓".encode(), b"n": b"7", b"x": b"0.5"}
    pipe = client.pipeline(transaction=True)
    pipe.incrby("packing-n", 2).incrbyfloat("packing-n", 0.25)
    assert await pipe.execute() == [2, 2.25]
    await client.aclose()


# ------------------------------------------------------------------ retry policies


def _kill_then_restart_after(server: EmbeddedRedis, down_s: float) -> threading.Thread:
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    restart = threading.Thread(target=lambda: (time.sleep(down_s), server.start()))
    restart.start()
    return restart


def test_the_policies_wait_as_documented() -> None:
    assert FAIL_FAST.total_wait_s() < 0.2
    assert 20 <= RIDE_OUT.total_wait_s() <= 30


@pytest.mark.parametrize(("policy", "error", "tries"), [
    (FAIL_FAST, redis.ConnectionError, 2),
    (FAIL_FAST, redis.TimeoutError, 1),  # a stuck Redis: one socket timeout, then 503
    (RetryPolicy(retries=3, base_s=0, cap_s=0, on_timeout=True), redis.TimeoutError, 4),
    (RetryPolicy(retries=3, base_s=0, cap_s=0, on_timeout=True), redis.ConnectionError, 4),
])
def test_which_errors_are_tried_again(policy: RetryPolicy, error: type[Exception],
                                      tries: int) -> None:
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise error("no")

    with pytest.raises(error):
        policy.sync().call_with_retry(failing, lambda _: None)
    assert len(calls) == tries


async def test_ride_out_clients_survive_a_redis_restart(aof_redis: EmbeddedRedis
                                                        ) -> None:
    settings = make_settings(aof_redis.url)
    aclient = async_redis(settings, retry=RIDE_OUT)
    client = sync_redis(settings, retry=RIDE_OUT)
    try:
        await aclient.set("before", "1")
        client.ping()
        restart = _kill_then_restart_after(aof_redis, down_s=1.0)
        await aclient.set("during", "1")  # waits for the server, then succeeds
        assert client.set("during-sync", "1")
        restart.join()
        assert await aclient.mget("before", "during", "during-sync") == [b"1", b"1", b"1"]
    finally:
        await aclient.aclose()
        client.close()


async def test_fail_fast_clients_give_up_while_redis_is_down(
    aof_redis: EmbeddedRedis,
) -> None:
    settings = make_settings(aof_redis.url)
    aclient = async_redis(settings)
    client = sync_redis(settings)
    try:
        await aclient.ping()
        client.ping()
        restart = _kill_then_restart_after(aof_redis, down_s=1.0)
        with pytest.raises(redis.ConnectionError):
            await aclient.set("during", "1")
        with pytest.raises(redis.ConnectionError):
            client.set("during-sync", "1")
        restart.join()
        # ...and work again once it is back, without being rebuilt.
        assert await aclient.set("after", "1")
        assert await aclient.exists("during", "during-sync") == 0
    finally:
        await aclient.aclose()
        client.close()


@pytest.mark.parametrize("implementation", ["bridge", "redis-py"])
def test_a_connection_closed_again_while_the_pool_checks_it_is_ridden_out(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, implementation: str) -> None:
    """A pooled connection the server closed is reconnected by redis-py's pool check,
    outside the command's retry; when the new connection is closed too before the check
    reads it, redis-py's own pool raised to the caller (RQ's worker loop then quit)."""
    client = sync_redis(make_settings(redis_url), retry=RIDE_OUT) \
        if implementation == "bridge" else redis.Redis.from_url(redis_url, retry=RIDE_OUT.sync())
    admin = redis.Redis.from_url(redis_url)
    client.connection_pool.connection_kwargs["client_name"] = "victim"
    client.ping()  # one connection waits in the pool
    connect = redis.connection.Connection.connect
    kills_left = [2]  # after the pooled connection's (no-op) connect, after its reconnect

    def connect_then_closed_by_the_server(self: redis.connection.Connection) -> None:
        connect(self)
        if self.client_name == "victim" and kills_left[0]:
            kills_left[0] -= 1
            admin.client_kill_filter(_type="normal", skipme=True)

    monkeypatch.setattr(redis.connection.Connection, "connect",
                        connect_then_closed_by_the_server)
    try:
        if implementation == "bridge":
            assert client.set("scripts:e", "z") is True
            assert admin.get("scripts:e") == b"z"
            assert kills_left == [0]
        else:
            with pytest.raises(redis.exceptions.ConnectionError):
                client.set("scripts:e", "z")
    finally:
        client.close()
        admin.close()


@pytest.mark.parametrize("implementation", ["bridge", "redis-py"])
async def test_an_asyncio_connection_closed_again_while_the_pool_checks_it_is_ridden_out(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, implementation: str) -> None:
    """The same check in the asyncio pool (jobs, the relay and the web's pooled calls).
    An asyncio socket shows its end only once the loop has read it, so the check is made
    to find the pooled connection and its replacement closed, as a loaded machine does."""
    client = async_redis(make_settings(redis_url), retry=RIDE_OUT) \
        if implementation == "bridge" \
        else redis.asyncio.Redis.from_url(redis_url, retry=RIDE_OUT.asyncio())
    await client.ping()
    can_read = redis.asyncio.connection.Connection.can_read
    closed_left = [2]

    async def closed_by_the_server(self: redis.asyncio.connection.Connection,
                                   *args: float) -> bool:
        if closed_left[0]:
            closed_left[0] -= 1
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return await can_read(self, *args)

    monkeypatch.setattr(redis.asyncio.connection.Connection, "can_read", closed_by_the_server)
    try:
        if implementation == "bridge":
            assert await client.set("scripts:f", "w") is True
            assert await client.get("scripts:f") == b"w"
            assert closed_left == [0]
        else:
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.set("scripts:f", "w")
    finally:
        await client.aclose()


def test_a_redis_that_is_down_is_not_waited_for_twice_over(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The pool's extra tries are for a connection made and found closed at once; a
    connect that failed has had the client's retries (a worker would otherwise wait out
    ~25 s per try when Redis is down, and a stop would hang: tests/test_devrun.py)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(retries=2, base_s=0, cap_s=0, on_timeout=False)
    client = sync_redis(make_settings(f"redis://127.0.0.1:{port}/0"), retry=policy)
    attempts: list[int] = []
    connect = redis.connection.Connection._connect

    def counted(self: redis.connection.Connection) -> object:
        attempts.append(1)
        return connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", counted)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()
    assert len(attempts) == policy.retries + 1
