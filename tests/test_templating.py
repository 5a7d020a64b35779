"""The macro sandbox: injection payloads, caps, time limit, plain-text output, context."""

from __future__ import annotations

import pytest

from bridge.core.macros import Macro, parse_macro
from bridge.core.tickets import Contact, Status, Ticket
from bridge.templating import (
    Limits,
    TemplateProblem,
    fixture_context,
    macro_context,
    mask_address,
    render,
    render_all,
    validate_macro,
)

CTX = fixture_context()
FAST = Limits(time_limit_s=0.5)


def problem(source: str, limits: Limits = FAST) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as info:
        render(source, CTX, limits)
    return info.value


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ ''|attr('__class__') }}",
    "{{ (''|attr('__class__')).__base__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '{a.__init__.__globals__}'.format_map({'a': cycler}) }}",
    "{% set f = '{0.__class__.__mro__}'.format %}{{ f(1) }}",
    "{{ ('{0.__class__.__mro__}'|attr('format'))(1) }}",
    "{{ '%s'|format(''.__class__) }}",
    "{{ ticket|attr('__class__') }}",
    "{{ ticket.__class__ }}",
    "{{ ticket.tags.__class__.__mro__ }}",
])
def test_injection_payloads_are_refused_as_security_errors(source: str) -> None:
    p = problem(source)
    assert p.kind == "security", p.describe()
    assert p.line == 1


def test_repetition_operands_are_bounded_before_allocating() -> None:
    p = problem("{{ 'a' * 100000000 }}")
    assert p.kind == "security" and "limit" in p.message
    assert problem("{{ [1, 2] * 10000000 }}").kind == "security"
    assert problem("{{ 10 ** 100000 }}").kind == "security"
    assert problem("{{ 99999999999999999 * 99999999999999999 }}").kind == "security"
    # Small products still work.
    assert render("{{ '-' * 3 }}{{ 2 ** 3 }}{{ 6 * 7 }}", CTX, FAST) == "---842"


def test_nested_loops_are_stopped_by_the_output_cap() -> None:
    p = problem("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}"
                "{% endfor %}")
    assert p.kind == "output_too_long"


def test_silent_nested_loops_are_stopped_by_the_time_limit() -> None:
    p = problem("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}", Limits(time_limit_s=0.3))
    assert p.kind == "timeout"


def test_string_doubling_hits_the_memory_limit() -> None:
    doubling = "{% set s = 'abcdefghij' * 1000 %}" + "{% set s = s ~ s %}" * 24 + "{{ s|length }}"
    p = problem(doubling, Limits(time_limit_s=5, memory_mb=64))
    assert p.kind in ("memory", "timeout")


def test_range_is_capped() -> None:
    assert problem("{{ range(200000)|length }}").kind == "limit"


def test_undefined_variables_are_errors_with_their_line() -> None:
    p = problem("Hello\n{{ contact.first_name }}\n{{ contact.nmae }}")
    assert (p.kind, p.line) == ("undefined", 3)
    assert "nmae" in p.message
    assert problem("{{ customer }}").kind == "undefined"


def test_syntax_errors_carry_their_line_number() -> None:
    p = problem("line one\nline two\n{% if ticket.id %}\nunclosed")
    assert p.kind == "syntax" and p.line == 4
    p = problem("a\n{{ ticket.id ")
    assert p.kind == "syntax" and p.line == 2


def test_source_size_is_capped() -> None:
    p = problem("x" * 5000)
    assert p.kind == "too_large" and "4096" in p.message


def test_output_is_capped_at_the_message_body_limit() -> None:
    assert len(render("{{ 'x' * 1600 }}", CTX, FAST)) == 1600
    assert problem("{{ 'x' * 1601 }}").kind == "output_too_long"


def test_output_is_plain_text_not_html_escaped() -> None:
    ticket = Ticket(id="7", contact_id="c", channel="whatsapp", status=Status.OPEN,
                    created_at_ms=1, updated_at_ms=1)
    contact = Contact(id="c", channel="whatsapp", address="whatsapp:+15550001111",
                      name="Ana & <Bob> 😀")
    ctx = macro_context(ticket=ticket, contact=contact, locale="en", agent_name="Zoé",
                        company_name="Tom & Jerry's <Shop>")
    text = render("Hi {{ contact.name }}, {{ company.name }} here 🎉 — {{ agent.name }}", ctx,
                  FAST)
    assert text == "Hi Ana & <Bob> 😀, Tom & Jerry's <Shop> here 🎉 — Zoé"


def test_context_exposes_the_documented_variables() -> None:
    text = render(
        "{{ ticket.id }}|{{ ticket.status }}|{{ ticket.tags|join(',') }}|{{ ticket.assignee }}|"
        "{{ ticket.channel }}|{{ contact.name }}|{{ contact.first_name }}|{{ contact.address }}|"
        "{{ contact.locale }}|{{ agent.name }}|{{ company.name }}", CTX, FAST)
    assert text == ("12345|open|vip,billing|alice|whatsapp|Ana Lima|Ana|whatsapp:+33•••••••78|"
                    "en|Alice|Example Support")


def test_immutable_sandbox_refuses_mutation() -> None:
    assert problem("{{ ticket.tags.append('x') }}").kind == "security"


def test_addresses_are_masked() -> None:
    assert mask_address("whatsapp:+33612345678") == "whatsapp:+33•••••••78"
    assert mask_address("whatsapp:US.13491208655302741918").startswith("whatsapp:US.")
    assert "1349120865530274" not in mask_address("whatsapp:US.13491208655302741918")
    assert mask_address("abc") == "•••"


def test_render_all_reports_each_problem_and_keeps_good_texts() -> None:
    texts, problems = render_all(
        {"locale:en": "Hi {{ contact.first_name }}", "locale:fr": "{{ oops }}",
         "locale:de": "{% for %}"}, CTX, FAST)
    assert texts == {"locale:en": "Hi Ana"}
    assert sorted((p.key, p.kind) for p in problems) == [
        ("locale:de", "syntax"), ("locale:fr", "undefined")]


def test_in_process_rendering_gives_the_same_answers() -> None:
    here = Limits(isolate=False)
    assert render("{{ ticket.id }} & <ok>", CTX, here) == "12345 & <ok>"
    with pytest.raises(TemplateProblem) as info:
        render("{{ ''.__class__ }}", CTX, here)
    assert info.value.kind == "security"


def test_validate_macro_names_locale_line_and_reason() -> None:
    macro: Macro = parse_macro("demo", {
        "locales": {"en": "Hello {{ contact.first_name }}", "fr": "Bonjour\n{{ contact.nom }}"},
        "actions": {"fallback_content_sid": "HX" + "a" * 32,
                    "fallback_content_variables": {"1": "{{ ticket.id }}", "2": "{{ x.y }}"}},
    })
    problems = validate_macro(macro, limits=FAST)
    assert [(p.key, p.kind, p.line) for p in problems] == [
        ("locale:fr", "undefined", 2),
        ("fallback_content_variables.2", "undefined", 1),
    ]


def test_a_dead_render_helper_is_replaced() -> None:
    from bridge import render_helpers

    assert render("{{ 1 + 1 }}", CTX, FAST) == "2"
    pool = render_helpers._pool()
    assert pool.idle
    for helper in pool.idle:
        helper.proc.kill()
        helper.proc.wait()
    assert render("{{ 2 + 2 }}", CTX, FAST) == "4"


def test_a_timed_out_helper_is_killed_and_the_next_render_works() -> None:
    from bridge import render_helpers

    p = problem("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}", Limits(time_limit_s=0.2))
    assert p.kind == "timeout"
    assert render("{{ ticket.id }}", CTX, FAST) == "12345"
    assert all(h.proc.poll() is None for h in render_helpers._pool().idle)


def test_a_helper_that_stops_answering_is_killed_by_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import signal

    from bridge import render_helpers

    assert render("ok", CTX, FAST) == "ok"
    monkeypatch.setattr(render_helpers, "GRACE_S", 0.2)
    stuck = list(render_helpers._pool().idle)
    for helper in stuck:
        os.kill(helper.proc.pid, signal.SIGSTOP)  # as if stuck in one long C call
    try:
        p = problem("{{ ticket.id }}", Limits(time_limit_s=0.1))
        assert p.kind == "timeout" and "did not answer" in p.message
    finally:
        for helper in stuck:
            if helper.proc.poll() is None:
                os.kill(helper.proc.pid, signal.SIGCONT)
    assert render("{{ ticket.id }}", CTX, FAST) == "12345"


_YIELD_PROBE = """
import json, signal
from dataclasses import asdict
from bridge import render_helpers as rh
from bridge.sandbox import Limits
signal.signal(signal.SIGALRM, rh._on_alarm)
endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
out = rh._serve_one({"limits": asdict(Limits(time_limit_s=0.3, budget_s=5.0)),
                     "context": {}, "sources": {"a": endless, "b": "{{ 6 * 7 }}"}})
rh._on_alarm(signal.SIGALRM, None)  # an alarm that fires once the render has ended
print(json.dumps({"out": out, "yields": rh.yields,
                  "armed": signal.getitimer(signal.ITIMER_REAL)[0]}))
"""


def test_a_rendering_helper_gives_up_its_cpu_every_millisecond_until_its_limit() -> None:
    """Its nice value alone did not keep busy helpers from delaying the web process's
    wake-ups by a scheduler tick (bridge/render_helpers.YIELD_EVERY_S). Run in a process
    of its own: pytest-timeout owns this one's SIGALRM."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _YIELD_PROBE], capture_output=True,
                          text=True, timeout=60, check=True)
    answer = json.loads(done.stdout)
    assert answer["out"][0][:3] == ["problem", "a", "timeout"]
    assert answer["out"][1] == ["ok", "b", "42"]  # the next template has a timer of its own
    # ~300 in 0.3 s on an idle machine; far fewer only if the helper hardly ran at all.
    assert answer["yields"] >= 20
    assert answer["armed"] == 0.0  # nothing left to interrupt the helper between requests
