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
* every render runs in a short-lived child process with a wall-clock limit
  (`Limits.time_limit_s`), an address-space limit (`Limits.memory_mb` above the child's
  start) and a CPU-seconds backstop.

Why a child process: rendering is synchronous Python, so `asyncio.wait_for` cannot stop it,
and `signal.alarm` only works in the main thread (the web process renders from a thread
pool; RQ already owns SIGALRM for its job timeout in the worker). A tracing hook could stop
loops but not one huge C-level allocation (`{% set s = s ~ s %}` doubling). A child can be
killed whatever it is doing, and its memory limit turns a blow-up into a clean error. The
children come from a `forkserver` (a fork of a small, single-threaded process that has
already imported Jinja2), so a render costs about 10 ms once the server is up (~100 ms,
once per process); forking the threaded web process itself is unsafe. Validation, preview,
apply and automations all go through `render_all`; web handlers call it through
`asyncio.to_thread` (see `arender_all`).

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
import math
import multiprocessing
import multiprocessing.connection
import resource
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
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
# How long a child may take to start (forkserver boot, imports) before rendering starts.
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


# ------------------------------------------------------------------ child process


def _limit_child(limits: Limits, count: int) -> None:
    """Cap the child's address space and CPU seconds (backstops; the parent kills it at
    the wall-clock limit)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[0])
        current = pages * resource.getpagesize()
        cap = current + limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError):  # no /proc (macOS) or not permitted: time limit only
        pass
    try:
        cpu = math.ceil(limits.time_limit_s * count) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (OSError, ValueError):
        pass


def _child_main(
    conn: multiprocessing.connection.Connection,
    sources: dict[str, str],
    context: dict[str, Any],
    limits: Limits,
) -> None:
    _limit_child(limits, len(sources))
    conn.send(("started",))
    for key, source in sources.items():
        try:
            conn.send(("ok", key, _render_one(key, source, context, limits)))
        except TemplateProblem as p:
            conn.send(("problem", key, p.kind, p.message, p.line))
    conn.send(("done",))
    conn.close()


_CTX_LOCK = threading.Lock()
_CTX: Any = None


def _context() -> Any:
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods
                                              else "spawn")
            if "forkserver" in methods:
                # "__main__" first: the server imports the main module once, so each
                # child does not re-import it (multiprocessing's spawn preparation).
                ctx.set_forkserver_preload(["__main__", "bridge.templating"])
            _CTX = ctx
        return _CTX


def _render_isolated(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits
) -> tuple[dict[str, str], list[TemplateProblem]]:
    ctx = _context()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main, args=(writer, dict(sources), dict(context), limits),
        name="bridge-render", daemon=True,
    )
    texts: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    pending = list(sources)
    try:
        proc.start()
    except BaseException:
        writer.close()
        reader.close()
        raise
    try:
        writer.close()
        if not reader.poll(STARTUP_S):
            raise TemplateProblem(pending[0] if pending else "template", "timeout",
                                  "the renderer did not start")
        reader.recv()  # ("started",)
        while pending:
            if not reader.poll(limits.time_limit_s):
                problems.append(TemplateProblem(
                    pending[0], "timeout",
                    f"rendering took longer than {limits.time_limit_s:g} s"))
                problems += [TemplateProblem(k, "skipped", "not checked: an earlier "
                                             "template timed out") for k in pending[1:]]
                break
            msg = reader.recv()
            if msg[0] == "ok":
                texts[msg[1]] = msg[2]
            else:
                problems.append(TemplateProblem(msg[1], msg[2], msg[3], msg[4]))
            pending.remove(msg[1])
    except EOFError:
        # The child died: the memory or CPU limit, most likely.
        problems.append(TemplateProblem(pending[0] if pending else "template", "memory",
                                        "the renderer was stopped (memory or CPU limit)"))
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        reader.close()
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
