"""What `bridge run` keeps on disk and its embedded Redis (security review, issue 8, finding 4):
var/ 0700 and secret files 0600 from their creation, a password on the embedded Redis."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.devrun import dev_tokens
from bridge.store.embedded import EmbeddedRedis


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """umask 0, and no chmod allowed: a mode that is right only because of the umask or a
    chmod after creation fails."""
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("created with the wrong mode, then chmod-ed")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_dev_tokens_creates_a_private_folder_and_file(tmp_path: Path,
                                                      permissive_umask: None) -> None:
    data_dir = tmp_path / "nested" / "var"
    tokens = dev_tokens(data_dir)
    assert mode(data_dir) == 0o700 and mode(data_dir.parent) == 0o700
    assert mode(data_dir / "dev-tokens.json") == 0o600
    assert len(tokens["BRIDGE_CONTACT_KEY"]) >= 32 and tokens["EMBEDDED_REDIS_PASSWORD"]
    assert dev_tokens(data_dir) == tokens  # kept across runs


def test_write_private_creates_0600(tmp_path: Path, permissive_umask: None) -> None:
    from bridge.devrun import write_private  # what `bridge run` writes run.json with

    write_private(tmp_path / "run.json", json.dumps({"redis_url": "redis://:pw@x:1/0"}))
    assert mode(tmp_path / "run.json") == 0o600


def test_an_older_tokens_file_gains_the_new_secrets_and_keeps_its_values(
        tmp_path: Path) -> None:
    path = tmp_path / "dev-tokens.json"
    path.write_text(json.dumps({"BRIDGE_ADMIN_TOKEN": "adm_old"}))
    tokens = dev_tokens(tmp_path)
    assert tokens["BRIDGE_ADMIN_TOKEN"] == "adm_old"
    assert tokens["BRIDGE_CONTACT_KEY"] and tokens["EMBEDDED_REDIS_PASSWORD"]
    assert json.loads(path.read_text()) == tokens


def test_the_embedded_redis_refuses_a_client_without_its_password(
        tmp_path: Path, permissive_umask: None) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        assert mode(tmp_path / "redis") == 0o700
        anonymous = redis.Redis(host="127.0.0.1", port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("x", "1")
        anonymous.close()
        wrong = redis.Redis(host="127.0.0.1", port=server.port, password="guess")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        # The URL it hands to the bridge's processes carries the password.
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
        password = redis.connection.parse_url(server.url)["password"]
        # Not in its command line, which every local user can read (`ps`).
        assert server.process is not None
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline


def test_the_embedded_redis_takes_a_given_password(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False, password="pw-" + "x" * 20
                       ) as server:
        assert redis.connection.parse_url(server.url)["password"] == "pw-" + "x" * 20
