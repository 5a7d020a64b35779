"""Rendering admin-edited macro templates safely (DESIGN §7, reliability.md §3).

Macro texts are Jinja2 written by admins and rendered with ticket data, so they are
treated as untrusted code:

* `ImmutableSandboxedEnvironment` (no attribute tricks, no mutation, sandboxed
  `str.format`) with `StrictUndefined` (a typo is an error, not an empty string) and
  autoescape OFF: WhatsApp bodies are plain text, so `&`, `<` and emoji reach the customer
  unescaped. Escape at the HTML boundary (the widget) instead.
* the source of one template is capped (`Limits.source_max`, 4 KB);
* `*` and `**` are intercepted and their operands bounded (`'a' * 100000000` is refused
  before it allocates anything);
* output is produced with `Template.generate()` and refused once it passes
  `Limits.output_max` (1600 characters: Twilio's message body limit);
* every render runs in a separate render-helper process with a wall-clock limit
  (`Limits.time_limit_s`, SIGALRM in the helper's main thread, and the parent kills and
  replaces a helper that does not answer within the limit plus a grace second) and an
  address-space limit (`Limits.memory_mb` above the helper's size at start).

Why a separate process: rendering is synchronous Python, so `asyncio.wait_for` cannot stop
it, and `signal.alarm` only works in the main thread (the web process renders from a thread
pool; RQ already owns SIGALRM for its job timeout in the worker). A tracing hook could stop
loops but not one huge C-level allocation (`{% set s = s ~ s %}` doubling), and a memory
blow-up in the web process itself would take every request down with it. A helper can be
killed whatever it is doing. Helpers are fresh interpreters (`python -I -c ...`) that import
only this module, kept alive (at most `HELPERS_PER_PROCESS` per process, one request at a
time each): a render costs a pipe round trip (well under a millisecond) plus the rendering,
and ~100 ms once when a helper starts. `multiprocessing` was not used: its spawn and
forkserver children re-import the parent's `__main__` script (`bridge serve` would import
the whole app per render), and forking the threaded web process is unsafe. A forked process
(an RQ work horse) starts its own helpers, never its parent's. Validation, preview, apply and
automations all go through `render_all`; async code calls it through `arender_all`
(a thread).

The render context (documented for admins in docs/macros.md):

    ticket.id, ticket.status, ticket.tags (list), ticket.assignee, ticket.channel,
    ticket.message_count, ticket.created_at (ISO 8601 UTC)
    contact.name, contact.first_name, contact.address (masked: whatsapp:+33•••••••78),
    contact.locale
    agent.name            the agent applying the macro (automations: the assignee or
                          the company name)
    company.name          [general] company_name in config/automations.toml
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.core.macros import Macro
from bridge.core.tickets import Contact, Status, Ticket

# A sequence built with `*` may have at most this many items / characters.
MAX_REPEAT = 10_000
# Operands of `*` on numbers, and the base and exponent of `**`.
MAX_NUMBER = 10**15
MAX_POWER_BASE = 10**6
MAX_EXPONENT = 100
# How long a new render helper may take to start (interpreter, imports).
STARTUP_S = 15.0


@dataclass(frozen=True)
class Limits:
    source_max: int = 4096  # bytes of one template's source
    output_max: int = 1600  # characters of one rendered text
    time_limit_s: float = 1.0  # wall clock, per template
    memory_mb: int = 256  # address space a child may add on top of what it starts with
    isolate: bool = True  # False renders in-process (no time or memory limit): tests only


DEFAULT_LIMITS = Limits()


class TemplateProblem(Exception):
    """Why a template was refused. `kind` is one of: syntax, security, undefined, limit,
    output_too_long, too_large, timeout, memory, empty, error, skipped."""

    def __init__(self, key: str, kind: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.kind = kind
        self.message = message
        self.line = line

    def describe(self) -> str:
        where = f"{self.key}, line {self.line}" if self.line else self.key
        return f"{where}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.key, "kind": self.kind, "line": self.line,
                "message": self.message}


class TemplateErrors(Exception):
    """One or more templates of a macro were refused."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__("; ".join(p.describe() for p in problems))
        self.problems = problems


class _OutputTooLong(Exception):
    pass


def _check_mul(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            if len(seq) * max(count, 0) > MAX_REPEAT:
                raise SecurityError(
                    f"'*' would build {len(seq) * count} items; the limit is {MAX_REPEAT}"
                )
            return
    numbers = (int, float)
    if isinstance(left, numbers) and isinstance(right, numbers) and (
        abs(left) > MAX_NUMBER or abs(right) > MAX_NUMBER
    ):
        raise SecurityError(f"'*' operands must stay within {MAX_NUMBER:.0e}")


def _check_pow(base: Any, exponent: Any) -> None:
    numbers = (int, float)
    if not (isinstance(base, numbers) and isinstance(exponent, numbers)):
        return
    if abs(exponent) > MAX_EXPONENT or abs(base) > MAX_POWER_BASE:
        raise SecurityError(
            f"'**' needs |base| <= {MAX_POWER_BASE} and |exponent| <= {MAX_EXPONENT}"
        )


class MacroEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with `*` and `**` bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_mul(left, right)
        elif operator == "**":
            _check_pow(left, right)
        return super().call_binop(context, operator, left, right)


def make_environment() -> MacroEnvironment:
    return MacroEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=0,
    )


_ENV = make_environment()


def _template_line(exc: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def _render_one(key: str, source: str, context: Mapping[str, Any], limits: Limits) -> str:
    """Render in this process (no time limit); raises TemplateProblem."""
    size = len(source.encode())
    if size > limits.source_max:
        raise TemplateProblem(key, "too_large",
                              f"template is {size} bytes; the limit is {limits.source_max}")
    try:
        template = _ENV.from_string(source)
        chunks: list[str] = []
        length = 0
        for chunk in template.generate(dict(context)):
            length += len(chunk)
            if length > limits.output_max:
                raise _OutputTooLong
            chunks.append(chunk)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(key, "syntax", exc.message or str(exc), exc.lineno) from None
    except SecurityError as exc:
        raise TemplateProblem(key, "security", str(exc), _template_line(exc)) from None
    except UndefinedError as exc:
        raise TemplateProblem(key, "undefined", str(exc), _template_line(exc)) from None
    except _OutputTooLong:
        raise TemplateProblem(
            key, "output_too_long",
            f"renders to more than {limits.output_max} characters (the message body limit)",
        ) from None
    except OverflowError as exc:
        raise TemplateProblem(key, "limit", str(exc), _template_line(exc)) from None
    except MemoryError:
        raise TemplateProblem(key, "memory", "the template used too much memory") from None
    except RecursionError as exc:
        raise TemplateProblem(key, "limit", "too deeply nested", _template_line(exc)) from None
    except Exception as exc:
        raise TemplateProblem(key, "error", f"{type(exc).__name__}: {exc}",
                              _template_line(exc)) from None
    return "".join(chunks).strip()


Outcome = tuple[str, str | None, str, int | None]  # key, text, kind, line / message


def _render_here(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits
) -> tuple[dict[str, str], list[TemplateProblem]]:
    texts: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    for key, source in sources.items():
        try:
            texts[key] = _render_one(key, source, context, limits)
        except TemplateProblem as problem:
            problems.append(problem)
    return texts, problems


# ------------------------------------------------------------------ render helpers
#
# A helper is a fresh interpreter (`python -I -c "... serve()"`) that imports only this
# module. It reads one JSON request per line on stdin and answers one JSON line on stdout.
# It renders in its own main thread, so SIGALRM (setitimer) stops a template at the time
# limit; its address space is capped (RLIMIT_AS) so a blow-up is a MemoryError, not an
# OOM kill of the web process. The parent keeps a few helpers per process and kills and
# replaces one that does not answer within the limit plus a grace second (a template
# stuck in one long C call, a crash). A forked process (an RQ work horse) never uses its
# parent's helpers: the pool is per process id.


class _Timeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so no `except Exception` eats it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError):  # no /proc (macOS): the time limit still applies
        return None


def _set_memory_cap(baseline: int | None, memory_mb: int) -> None:
    if baseline is None:
        return
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = baseline + memory_mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        pass


def _serve_one(request: dict[str, Any]) -> list[list[Any]]:
    limits = Limits(**request["limits"])
    context = request["context"]
    out: list[list[Any]] = []
    for key, source in request["sources"].items():
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, limits.time_limit_s)
                text = _render_one(key, source, context, limits)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            out.append(["ok", key, text])
        except TemplateProblem as p:
            out.append(["problem", key, p.kind, p.message, p.line])
        except _Timeout:
            out.append(["problem", key, "timeout",
                        f"rendering took longer than {limits.time_limit_s:g} s", None])
    return out


def serve() -> None:
    """The helper's main loop (run by `_Helper`, not by hand)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    baseline = _address_space()
    stdout = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        _set_memory_cap(baseline, int(request["limits"]["memory_mb"]))
        stdout.write(json.dumps(_serve_one(request)).encode() + b"\n")
        stdout.flush()


class _Helper:
    def __init__(self) -> None:
        paths = [p for p in sys.path if p]
        code = (f"import sys; sys.path[:0] = {paths!r}; "
                "from bridge.templating import serve; serve()")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
        )
        self.fresh = True
        self._buf = b""

    def ask(self, request: dict[str, Any], timeout_s: float) -> list[list[Any]] | None:
        """The answer, or None when the helper died or did not answer in time."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + timeout_s + (STARTUP_S if self.fresh else 0)
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        self.fresh = False
        answer: list[list[Any]] = json.loads(line)
        return answer

    def close(self, *, kill: bool = False) -> None:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """At most `size` helpers per process, each serving one request at a time."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.idle: list[_Helper] = []
        self.count = 0
        self.cond = threading.Condition()

    def acquire(self) -> _Helper:
        with self.cond:
            while True:
                while self.idle:
                    helper = self.idle.pop()
                    if helper.proc.poll() is None:
                        return helper
                    # Died while idle (killed, OOM): replace it, do not fail a render.
                    self.count -= 1
                    helper.close()
                if self.count < self.size:
                    break
                self.cond.wait()
            self.count += 1
        try:
            return _Helper()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def release(self, helper: _Helper, *, healthy: bool) -> None:
        if not healthy:
            helper.close(kill=True)
        with self.cond:
            if healthy:
                self.idle.append(helper)
            else:
                self.count -= 1
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            helpers, self.idle = self.idle, []
            self.count -= len(helpers)
        for helper in helpers:
            helper.close()


HELPERS_PER_PROCESS = 4
GRACE_S = 1.0
_POOL_LOCK = threading.Lock()
_POOL: _Pool | None = None


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            # After a fork the parent's helpers belong to the parent: leave them alone.
            _POOL = _Pool(HELPERS_PER_PROCESS)
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()


def _render_isolated(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits
) -> tuple[dict[str, str], list[TemplateProblem]]:
    request = {"sources": dict(sources), "context": dict(context), "limits": asdict(limits)}
    pool = _pool()
    helper = pool.acquire()
    answer = None
    try:
        answer = helper.ask(request, limits.time_limit_s * len(sources) + GRACE_S)
    finally:
        pool.release(helper, healthy=answer is not None)
    if answer is None:
        return {}, [TemplateProblem(key, "timeout", "the renderer did not answer in time "
                                    "(stopped: time, memory or CPU limit)")
                    for key in sources]
    texts: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    for item in answer:
        if item[0] == "ok":
            texts[item[1]] = item[2]
        else:
            problems.append(TemplateProblem(item[1], item[2], item[3], item[4]))
    return texts, problems


def render_all(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, str], list[TemplateProblem]]:
    """Render several templates (e.g. a macro's locales and variables) against one
    context. Returns the texts that rendered and the problems of those that did not.
    Blocking: call from a thread in async code (`arender_all`)."""
    if not sources:
        return {}, []
    # Oversized sources are refused before a process is started.
    too_large = {k for k, s in sources.items() if len(s.encode()) > limits.source_max}
    problems = [
        TemplateProblem(k, "too_large", f"template is {len(sources[k].encode())} bytes; "
                        f"the limit is {limits.source_max}")
        for k in too_large
    ]
    rest = {k: s for k, s in sources.items() if k not in too_large}
    if not rest:
        return {}, problems
    if limits.isolate:
        texts, more = _render_isolated(rest, context, limits)
    else:
        texts, more = _render_here(rest, context, limits)
    return texts, problems + more


def render(source: str, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
    """Render one template; raises TemplateProblem."""
    texts, problems = render_all({"template": source}, context, limits)
    if problems:
        raise problems[0]
    return texts["template"]


async def arender_all(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, str], list[TemplateProblem]]:
    return await asyncio.to_thread(render_all, sources, context, limits)


# ------------------------------------------------------------------ context


def mask_address(address: str) -> str:
    """`whatsapp:+33612345678` -> `whatsapp:+33•••••••78`: enough to recognise, not to
    copy. The channel prefix is kept; short values are masked whole."""
    prefix, sep, rest = address.rpartition(":")
    head = prefix + sep
    if len(rest) <= 6:
        return head + "•" * len(rest)
    return head + rest[:3] + "•" * (len(rest) - 5) + rest[-2:]


def _iso(ms: int) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def macro_context(
    *,
    ticket: Ticket,
    contact: Contact | None,
    locale: str,
    agent_name: str,
    company_name: str,
) -> dict[str, Any]:
    """The variables a macro sees (plain data only: never put types or modules here)."""
    name = (contact.name if contact else "").strip()
    return {
        "ticket": {
            "id": ticket.id,
            "status": ticket.status.value,
            "tags": list(ticket.tags),
            "assignee": ticket.assignee,
            "channel": ticket.channel,
            "message_count": ticket.message_count,
            "created_at": _iso(ticket.created_at_ms),
        },
        "contact": {
            "name": name,
            "first_name": name.split()[0] if name else "",
            "address": mask_address(contact.address) if contact else "",
            "locale": locale,
        },
        "agent": {"name": agent_name},
        "company": {"name": company_name},
    }


FIXTURE_TICKET = Ticket(
    id="12345", contact_id="c0ffee", channel="whatsapp", status=Status.OPEN,
    created_at_ms=1_700_000_000_000, updated_at_ms=1_700_000_000_000,
    tags=("vip", "billing"), assignee="alice", message_count=3,
)


def fixture_contact(locale: str = "en") -> Contact:
    return Contact(id="c0ffee", channel="whatsapp", address="whatsapp:+33612345678",
                   name="Ana Lima", locale=locale)


def fixture_context(
    *, locale: str = "en", company_name: str = "Example Support"
) -> dict[str, Any]:
    """What templates are validated against at save time: every documented variable."""
    return macro_context(ticket=FIXTURE_TICKET, contact=fixture_contact(locale), locale=locale,
                         agent_name="Alice", company_name=company_name)


def validate_macro(
    macro: Macro, *, company_name: str = "Example Support", limits: Limits = DEFAULT_LIMITS
) -> list[TemplateProblem]:
    """Render every template of a macro (each locale's text, each Content variable)
    against the fixture context; the problems name the template, the line and the reason.
    An empty list means the macro may be saved. Blocking (one child process)."""
    sources = macro.templates()
    texts, problems = render_all(sources, fixture_context(company_name=company_name), limits)
    for key, text in texts.items():
        if key.startswith("locale:") and not text:
            problems.append(TemplateProblem(key, "empty",
                                            "renders to an empty message for the sample ticket"))
    order = list(sources)
    return sorted(problems, key=lambda p: order.index(p.key) if p.key in order else -1)
