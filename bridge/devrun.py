"""`bridge run`: the whole bridge on a laptop (embedded Redis, web, worker with scheduler).

Development tokens, the contact key and the embedded Redis's password are generated once
and kept in <data_dir>/dev-tokens.json so they stay the same across runs; <data_dir>/run.json
tells the other CLI commands where Redis is (its URL carries the password). The folder is
created 0700 and both files 0600 from the start: never readable by others, not even briefly.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, cast
from urllib.parse import urlsplit

import click

from bridge.store.embedded import EmbeddedRedis, make_private_dir
from config.settings import Settings

# Kept in dev-tokens.json with the tokens but not a setting: only `bridge run` uses it.
REDIS_PASSWORD = "EMBEDDED_REDIS_PASSWORD"


def write_private(path: Path, text: str) -> None:
    """Write a file created 0600 (O_CREAT's mode, so no chmod afterwards and no window
    where another user can open it); an existing file is truncated and keeps its mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def dev_tokens(data_dir: Path) -> dict[str, str]:
    path = data_dir / "dev-tokens.json"
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = _new_tokens(tokens)
    if missing:
        # A file from an older version gains the new secrets; the others stay.
        tokens = {**missing, **tokens}
        make_private_dir(data_dir)
        write_private(path, json.dumps(tokens, indent=2))
    return tokens


def _new_tokens(have: dict[str, str]) -> dict[str, str]:
    generate: dict[str, Callable[[], str]] = {
        # As long as production asks (32 characters), so they can be copied there.
        "BRIDGE_ADMIN_TOKEN": lambda: "adm_" + secrets.token_urlsafe(24),
        "BRIDGE_AGENT_TOKENS": lambda: "alice:agt_" + secrets.token_urlsafe(24),
        "BRIDGE_SECRET": lambda: secrets.token_urlsafe(32),
        # Only signs and verifies simulated webhooks; with no TWILIO_ACCOUNT_SID nothing is
        # sent to Twilio (outbound goes to the local outbox).
        "TWILIO_AUTH_TOKEN": lambda: secrets.token_hex(16),
        "BRIDGE_CONTACT_KEY": lambda: secrets.token_hex(32),
        REDIS_PASSWORD: lambda: secrets.token_urlsafe(24),
    }
    return {name: make() for name, make in generate.items() if name not in have}


def runtime_info(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL, else the embedded Redis of a running `bridge run`."""
    url = settings.redis_url or str(runtime_info(settings.data_dir).get("redis_url", ""))
    if not url:
        raise click.ClickException(
            "no Redis: set REDIS_URL, or start the bridge with `make run` / `bridge run` first"
        )
    return url


def running_bridge(settings: Settings, redis_url: str | None) -> dict[str, Any]:
    """The run.json of the `bridge run` a command acts on when given no Redis of its own
    ({} when it has one): the command then allows what that bridge allows, such as an
    http:// or a private webhook endpoint, rather than what its own shell would."""
    if redis_url or settings.redis_url:
        return {}
    return runtime_info(settings.data_dir)



LOCK_FILE = ".lock"


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir for this process's life (an flock on <data_dir>/.lock, released by
    the kernel however the process ends); the lock's file descriptor. A second `bridge run`
    on the same folder would start a second redis-server on the same AOF and take over
    run.json: it is refused, naming the run that holds the folder."""
    make_private_dir(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        info = runtime_info(data_dir)
        where = f", http://127.0.0.1:{info['port']}" if "port" in info else ""
        raise click.ClickException(
            f"{data_dir} is in use by another `bridge run` (pid {info.get('pid', holder)}"
            f"{where}): stop it first, or give this one its own BRIDGE_DATA_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def remove_run_info(data_dir: Path, pid: int) -> bool:
    """Remove run.json if it is the one run `pid` wrote (another run's stays)."""
    path = data_dir / "run.json"
    try:
        ours = bool(json.loads(path.read_text()).get("pid") == pid)
    except (OSError, ValueError):
        return False
    if ours:
        path.unlink(missing_ok=True)
    return ours


def run_all(settings: Settings, env: dict[str, str]) -> None:
    data_dir = settings.data_dir
    lock = lock_data_dir(data_dir)
    try:
        _run_locked(settings, env)
    finally:
        os.close(lock)


def _run_locked(settings: Settings, env: dict[str, str]) -> None:
    data_dir = settings.data_dir
    redis_server: EmbeddedRedis | None = None
    child_env = dict(env)
    # Values the user did not set are generated for development.
    tokens = dev_tokens(data_dir)
    redis_password = tokens.pop(REDIS_PASSWORD)
    for name, value in tokens.items():
        child_env.setdefault(name, value)
    if not settings.redis_url:
        redis_server = EmbeddedRedis(data_dir / "redis", password=redis_password).start()
        child_env["REDIS_URL"] = redis_server.url
    children: list[subprocess.Popen[bytes]] = []
    failed = False  # a process ended on its own (not stopped by a signal)
    # A closed terminal (SIGHUP) or a process manager (SIGTERM) stops everything as Ctrl-C
    # does; by default they would end this process alone and leave Redis running. SIGINT
    # gets the handler too: a process started in the background by a non-interactive
    # shell (`make run &` in a script, a CI job) inherits it ignored, and Python then
    # leaves it ignored, so `kill -INT` did nothing (tests/test_devrun.py in such a run).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        write_private(data_dir / "run.json", json.dumps({
            "pid": os.getpid(),
            "redis_url": child_env["REDIS_URL"],
            "port": settings.port,
            "public_base_url": settings.public_base_url,
            "development": settings.development,
            "export_allow_private": settings.export_allow_private,
        }))
        children.append(subprocess.Popen([sys.executable, "-m", "bridge", "serve"],
                                         env=child_env))
        # Jobs in the worker process, as the Procfile's worker runs them (--processes 16
        # defaults to it): a fork per job costs ~50-100 ms of set-up, which every new
        # conversation's trigger would pay.
        children.append(subprocess.Popen([sys.executable, "-m", "workers", "--no-fork"],
                                         env=child_env))
        children.append(subprocess.Popen([sys.executable, "-m", "workers.relay"],
                                         env=child_env))
        children.append(subprocess.Popen([sys.executable, "-m", "workers.export"],
                                         env=child_env))
        _banner(settings, child_env)
        # What this run started, Redis included: any of them ending ends the run, saying
        # which (Redis gone, the others only filled their logs with connection errors).
        watched = [*children, *([redis_server.process] if redis_server and
                                redis_server.process else [])]
        while all(process.poll() is None for process in watched):
            time.sleep(0.5)
        ended = next(process for process in watched if process.poll() is not None)
        click.echo(f"{_name(ended)} (pid {ended.pid}) exited with code {ended.returncode}; "
                   "stopping the others", err=True)
        failed = True
    except KeyboardInterrupt:
        click.echo("\nstopping…")
    finally:
        # Stopping takes a few seconds (warm worker shutdown, Redis saves): a second signal
        # must not cut it short and leave Redis behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        # One deadline for all of them (waited one by one, 15 s each added up to over a
        # minute), and the one that had to be killed is named.
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"{_name(child)} (pid {child.pid}) did not stop within "
                           f"{STOP_GRACE_S:.0f} s: killing it", err=True)
                child.kill()
                child.wait()
        if redis_server is not None:
            redis_server.stop()
        remove_run_info(data_dir, os.getpid())
        click.echo("stopped")
    if failed:
        # A script or a supervisor running `make run` tells a crash from a Ctrl-C.
        raise SystemExit(1)


def _name(process: subprocess.Popen[bytes]) -> str:
    """`bridge serve`, `workers.relay`, `redis-server`: what the process runs."""
    args = cast(list[str], process.args)
    if args and Path(args[0]).name.startswith("redis-server"):
        return "redis-server"
    return " ".join(arg for arg in args[1:] if arg != "-m")


# How long the processes get to stop after SIGTERM (a worker finishes its job, the web
# process its requests) before they are killed.
STOP_GRACE_S = 15.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _banner(settings: Settings, env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{settings.port}"
    agent = env["BRIDGE_AGENT_TOKENS"].split(",")[0].split(":", 1)[1]
    outbound = "Twilio" if env.get("TWILIO_ACCOUNT_SID") else "the local outbox (bridge outbox)"
    click.echo(f"""
  Bridge running at {base}   (Redis: {_without_password(env['REDIS_URL'])})
  Workspace:  {base}/app/   (sign in with a token below)
  Outbound messages go to {outbound}.
  Chat widget demo: {base}/widget/demo   (write there, answer with the agent token)

  Admin token:  {env['BRIDGE_ADMIN_TOKEN']}
  Agent token:  {agent}   (agent "alice")

  Simulate a WhatsApp message (another terminal):
    .venv/bin/bridge simulate --from whatsapp:+33612345678 "Bonjour"
  See tickets:
    .venv/bin/bridge tickets
    curl -H 'Authorization: Bearer {agent}' {base}/api/v1/tickets

  Ctrl-C stops everything.
""", err=False)
    sys.stdout.flush()
