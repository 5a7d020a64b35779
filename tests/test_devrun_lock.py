"""`bridge run`'s hold on its data dir: a second run on the same folder is refused (it would
start a second redis-server on the same AOF and take over run.json), and a run removes
run.json at exit only if it wrote it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bridge.devrun import lock_data_dir, remove_run_info, run_all
from config.settings import Settings


def test_a_second_lock_on_a_data_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    fd = lock_data_dir(data_dir)
    try:
        (data_dir / "run.json").write_text(json.dumps({"pid": 4242, "port": 8181}))
        # flock is per open file: a second open in this process conflicts like a second
        # process would; and a real second process too.
        with pytest.raises(click.ClickException) as refused:
            lock_data_dir(data_dir)
        assert "pid 4242" in refused.value.message
        assert "http://127.0.0.1:8181" in refused.value.message
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from bridge.devrun import lock_data_dir; lock_data_dir(Path(sys.argv[1]))",
             str(data_dir)], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).resolve().parents[1])
        assert other.returncode != 0 and "pid 4242" in other.stderr
    finally:
        os.close(fd)
    os.close(lock_data_dir(data_dir))  # free again once the holder let go


def test_run_all_refuses_a_data_dir_in_use_before_starting_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    fd = lock_data_dir(data_dir)
    try:
        with pytest.raises(click.ClickException, match="in use by another `bridge run`"):
            run_all(Settings.from_env({"BRIDGE_DATA_DIR": str(data_dir),
                                       "BRIDGE_ENV": "development"}), {})
        assert not (data_dir / "redis").exists()  # no second redis-server
        assert not (data_dir / "run.json").exists()
    finally:
        os.close(fd)


def test_run_json_is_removed_only_by_the_run_that_wrote_it(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"pid": 1111, "redis_url": "redis://x"}))
    assert not remove_run_info(tmp_path, 2222)
    assert (tmp_path / "run.json").exists()
    assert remove_run_info(tmp_path, 1111)
    assert not (tmp_path / "run.json").exists()
    assert not remove_run_info(tmp_path, 1111)  # gone already: nothing to do
