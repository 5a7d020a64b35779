"""Redis Cluster is not supported yet (README): pointed at a Cluster node, every process
refuses to start naming it, and /readyz says so (a PING alone answered "ok" while every
request failed with MOVED)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.app import create_app
from bridge.cli import main as bridge_main
from bridge.store.connection import CLUSTER_UNSUPPORTED, cluster_node_at
from bridge.store.embedded import EmbeddedRedis
from tests.conftest import CONTACT_KEY, make_settings
from workers.__main__ import main as workers_main
from workers.export import main as export_main
from workers.relay import main as relay_main


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis started in cluster mode (no slots assigned: enough to be told apart). A few
    tries: under xdist another worker may take the free port before this Redis binds it,
    and a node that never answered made every test here fail with a ConnectionError."""
    folder: Path = tmp_path_factory.mktemp("cluster")
    for attempt in range(3):
        node = EmbeddedRedis(folder / f"try{attempt}", appendonly=False,
                             options=["--cluster-enabled", "yes"])
        try:
            node.start()
        except RuntimeError:
            node.stop()  # one that did not answer in time is still running
            if attempt == 2:
                raise
            continue
        try:
            yield node.url
        finally:
            node.stop()
        return


def test_a_cluster_node_is_told_from_a_single_redis(cluster_node: str, redis_url: str) -> None:
    assert cluster_node_at(make_settings(cluster_node))
    assert not cluster_node_at(make_settings(redis_url))


@pytest.mark.parametrize(("command", "args"), [
    (bridge_main, ["serve"]), (workers_main, []), (relay_main, []), (export_main, [])],
    ids=["web", "worker", "relay", "export"])
def test_every_process_refuses_a_cluster_node(cluster_node: str, command: Any,
                                              args: list[str]) -> None:
    result = CliRunner().invoke(command, args, env={
        "REDIS_URL": cluster_node, "BRIDGE_CONTACT_KEY": CONTACT_KEY,
        "BRIDGE_ENV": "development"})
    assert result.exit_code == 1, result.output
    assert CLUSTER_UNSUPPORTED in result.output


async def test_readyz_says_a_cluster_node_is_not_supported(aiohttp_client: Any,
                                                           cluster_node: str) -> None:
    client = await aiohttp_client(create_app(make_settings(cluster_node)))
    answer = await client.get("/readyz")
    assert answer.status == 503
    assert (await answer.json())["redis"] == "cluster_not_supported"
