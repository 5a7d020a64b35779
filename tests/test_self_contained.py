"""A fresh clone is enough: nothing in the repository reads the notes kept beside it.

The research notes (Twilio's full OpenAPI document among them) sit in a folder next to the
checkout on the machines that wrote this code; a person who clones the repository does not
have it. What the tests need from it lives in tests/stubs/twilio/ instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("bridge", "workers", "config", "tests", "bench", ".ci", "Makefile", "Procfile",
           "pyproject.toml")
SKIPPED_DIRS = {"__pycache__", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                ".hypothesis"}

# Built from pieces so that this file does not match itself: the notes folder as a sibling
# (dot-dot, slash, its name), or its name then `reference` joined by a slash, a backslash or
# Path's ` / ` (with or without quotes).
_NOTES = "shared"
OUTSIDE_PATH = re.compile(
    r"\.\.[/\\]" + _NOTES + r"\b"
    + "|" + _NOTES + r"""["']?\s*[/\\,]\s*["']?""" + "reference")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        top = ROOT / name
        if top.is_file():
            files.append(top)
            continue
        files += [p for p in top.rglob("*")
                  if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)]
    return sorted(files)


def test_the_pattern_catches_the_ways_a_path_is_written() -> None:
    caught = ["/".join(["..", _NOTES, "reference", "twilio", "x.json"]),
              " / ".join(['parents[3]', f'"{_NOTES}"', '"reference"']),
              "\\".join(["..", _NOTES, "DESIGN.md"]),
              f"see {_NOTES}/reference/protocols.md §5"]
    assert all(OUTSIDE_PATH.search(text) for text in caught)
    assert not OUTSIDE_PATH.search("pages stay shared instead of copied; reference counts")


def test_no_file_mentions_a_path_outside_the_repository() -> None:
    files = scanned_files()
    assert any(p.name == "twilio_stub.py" for p in files)  # the scan does reach the tests
    offenders = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_PATH.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_twilio_document_and_its_licence_are_in_the_repository() -> None:
    folder = ROOT / "tests" / "stubs" / "twilio"
    assert "MIT License" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert "twilio-oai" in (folder / "messages_create.json").read_text(encoding="utf-8")
