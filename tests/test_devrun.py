"""`bridge run` (what `make run` starts): embedded Redis, web and worker come up, a simulated
message becomes a ticket and an agent's reply reaches the local outbox; Ctrl-C, SIGTERM or
a closed terminal stops every process, Redis included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge.store.embedded import free_port

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "REDIS_", "BRIDGE_", "PUBLIC_BASE_URL", "PORT"))}
    env.update(BRIDGE_DATA_DIR=str(data_dir), PORT=str(port), PYTHONUNBUFFERED="1")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent has not reaped it yet).
    status = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return status != "Z"


def _redis_pid(port: int) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"redis-server" in cmdline and f":{port}".encode() in cmdline:
                return int(proc.name)
    raise AssertionError(f"no redis-server on port {port}")


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    data_dir = tmp_path / "var"
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "bridge", "run"], cwd=REPO,
                               env=_env(data_dir, port), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "run.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                return process, port, data_dir
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("bridge run did not come up:\n" + (tmp_path / "run.log").read_text())


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_bridge_run_serves_and_every_process_stops_on_a_signal(
        tmp_path: Path, stop_signal: signal.Signals) -> None:
    process, port, data_dir = _start(tmp_path)
    try:
        info = json.loads((data_dir / "run.json").read_text())
        redis_pid = _redis_pid(int(info["redis_url"].rsplit(":", 1)[1].split("/")[0]))
        tokens = json.loads((data_dir / "dev-tokens.json").read_text())
        agent = {"Authorization": "Bearer " + tokens["BRIDGE_AGENT_TOKENS"].split(":", 1)[1]}
        cli_env = _env(data_dir, port)
        simulated = subprocess.run([sys.executable, "-m", "bridge", "simulate", "Bonjour !"],
                                   cwd=REPO, env=cli_env, capture_output=True, text=True,
                                   timeout=60, check=False)
        assert simulated.returncode == 0, simulated.stderr
        base = f"http://127.0.0.1:{port}/api/v1"
        [ticket] = httpx.get(f"{base}/tickets", headers=agent).json()["tickets"]
        assert ticket["status"] == "new"
        reply = httpx.post(f"{base}/tickets/{ticket['id']}/replies", headers=agent,
                           json={"body": "On regarde"})
        assert reply.status_code == 202
        deadline = time.monotonic() + 30
        outbox = ""
        while "On regarde" not in outbox and time.monotonic() < deadline:
            outbox = subprocess.run([sys.executable, "-m", "bridge", "outbox"], cwd=REPO,
                                    env=cli_env, capture_output=True, text=True,
                                    timeout=60, check=False).stdout
            time.sleep(0.3)
        assert "On regarde" in outbox

        children = [int(p) for p in
                    Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        # Redis, web, worker, relay, export sender.
        assert len(children) == 5 and redis_pid in children, (tmp_path / "run.log").read_text()
        # Only `bridge run` gets the signal, as from a process manager or `kill`.
        process.send_signal(stop_signal)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("bridge run did not stop within 60 s; its output:\n"
                        + (tmp_path / "run.log").read_text()[-6000:])
        assert code == 0
        log = (tmp_path / "run.log").read_text()
        assert "stopped" in log
        assert not any(_alive(pid) for pid in children), log  # Redis included
        assert not (data_dir / "run.json").exists()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("victim", ["workers.relay", "redis-server"])
def test_a_process_that_dies_ends_the_run_which_says_which(tmp_path: Path, victim: str
                                                          ) -> None:
    """Redis killed went unnoticed (the others filled their logs with connection errors);
    a child that exited was not named."""
    process, _, data_dir = _start(tmp_path)
    try:
        info = json.loads((data_dir / "run.json").read_text())
        if victim == "redis-server":
            pid = _redis_pid(int(info["redis_url"].rsplit(":", 1)[1].split("/")[0]))
        else:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            [pid] = [int(p) for p in children.split() if victim.encode() in
                     Path(f"/proc/{p}/cmdline").read_bytes()]
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=60) == 1  # not a clean stop: a supervisor can tell
        log = (tmp_path / "run.log").read_text()
        assert f"{victim} (pid {pid}) exited with code -9; stopping the others" in log, log
        assert "stopped" in log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_simulate_outside_the_checkout_says_where_the_token_is(tmp_path: Path) -> None:
    """Run from another folder, it used to make up a signing token of its own there and
    earn a 403 bad_signature; now it says what to do, and writes nothing."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "BRIDGE_", "REDIS_"))}
    done = subprocess.run([sys.executable, "-m", "bridge", "simulate", "Bonjour !"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "BRIDGE_DATA_DIR" in done.stderr and "signing token" in done.stderr
    assert not (tmp_path / "var").exists()
