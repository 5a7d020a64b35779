"""The sandbox a macro template renders in, in this process (DESIGN §7, reliability.md §3).

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
  `Limits.output_max` (1600 characters: Twilio's message body limit).

Time and memory are not limited here: bridge.render_helpers runs this code in helper
processes that can be stopped (`Limits.time_limit_s` per template, `Limits.budget_s` per
call, `Limits.memory_mb`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# A sequence built with `*` may have at most this many items / characters.
MAX_REPEAT = 10_000
# Operands of `*` on numbers, and the base and exponent of `**`.
MAX_NUMBER = 10**15
MAX_POWER_BASE = 10**6
MAX_EXPONENT = 100


@dataclass(frozen=True)
class Limits:
    source_max: int = 4096  # bytes of one template's source
    output_max: int = 1600  # characters of one rendered text
    time_limit_s: float = 1.0  # wall clock, per template
    # Wall clock for one render_all call (one request: every locale and variable of a
    # macro); the templates left when it is spent are reported as `budget`, not rendered.
    budget_s: float = 5.0
    memory_mb: int = 256  # address space a child may add on top of what it starts with
    isolate: bool = True  # False renders in-process (no time or memory limit): tests only

DEFAULT_LIMITS = Limits()


class TemplateProblem(Exception):
    """Why a template was refused. `kind` is one of: syntax, security, undefined, limit,
    output_too_long, too_large, timeout, memory, empty, error, budget (not checked: the
    call's render budget was spent before or while rendering it)."""

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


def render_one(key: str, source: str, context: Mapping[str, Any], limits: Limits) -> str:
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


def render_here(
    sources: Mapping[str, str], context: Mapping[str, Any], limits: Limits
) -> tuple[dict[str, str], list[TemplateProblem]]:
    """Render in this process. A template cannot be stopped here, but once the budget is
    spent the templates left are not started."""
    texts: dict[str, str] = {}
    problems: list[TemplateProblem] = []
    deadline = time.monotonic() + limits.budget_s
    for key, source in sources.items():
        if time.monotonic() >= deadline:
            problems.append(TemplateProblem(
                key, "budget", f"not checked: the render budget of {limits.budget_s:g} s "
                "for this request was spent"))
            continue
        try:
            texts[key] = render_one(key, source, context, limits)
        except TemplateProblem as problem:
            problems.append(problem)
    return texts, problems
