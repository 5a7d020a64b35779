"""Macro storage: shipped defaults on disk, admin edits in Redis with their history.

Platform disks are ephemeral, so edits live in Redis. Each macro has a version history:

* version 0 is the shipped file `bridge/templates/macros/<name>.toml` (read at start);
* every save (PUT) or rollback appends version 1, 2, ... to the hash
  `bridge:macro:<name>:versions` (field = version number, value = JSON); a rollback copies
  the chosen version's content into a new version, so the history is never rewritten;
* the current macro is the highest stored version, or the shipped default when the macro
  was never edited.

Versions are allocated in one Lua call (HLEN + 1 then HSET), so two admins saving at once
get two distinct versions; the last one wins as current, and both stay in the history.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bridge.core.macros import Macro, MacroError, check_name, parse_macro
from bridge.store.keys import PREFIX
from bridge.store.scripts import Script


def _shipped_dir() -> Path:
    """bridge/templates/macros, wherever the bridge is installed (a checkout, a wheel).

    The macros are package data of `bridge` rather than a top-level `templates` package: a
    wheel would install that as site-packages/templates, a name any other distribution may
    claim too. The bridge is always installed unpacked (never imported from a zip), so the
    folder is a real one, which `bridge check --macros-dir` and the error messages show.
    """
    folder = resources.files("bridge").joinpath("templates", "macros")
    if not isinstance(folder, Path):
        raise RuntimeError(f"the shipped macros must be files on disk, not {folder!r}")
    return folder


SHIPPED_DIR = _shipped_dir()
NAMES_KEY = f"{PREFIX}:macros"

_SAVE_SCRIPT = """
local v = redis.call('HLEN', KEYS[1]) + 1
redis.call('HSET', KEYS[1], tostring(v), ARGV[1])
return v
"""


def versions_key(name: str) -> str:
    return f"{PREFIX}:macro:{name}:versions"


class MacroNotFound(LookupError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    version: int
    updated_at_ms: int
    updated_by: str
    note: str


def load_shipped(directory: Path = SHIPPED_DIR) -> dict[str, Macro]:
    """Every `<name>.toml` under directory as version 0. Raises MacroError naming the file
    and field (what `bridge check` reports)."""
    out: dict[str, Macro] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.toml")):
        name = path.stem
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            macro = parse_macro(name, data, note="shipped default")
        except tomllib.TOMLDecodeError as exc:
            raise MacroError(str(path), str(exc)) from exc
        except MacroError as exc:
            raise MacroError(f"{path}: {exc.field}", exc.message) from exc
        # TOML multi-line strings keep the final newline; templates are stripped anyway.
        out[name] = macro
    return out


def _encode(macro: Macro) -> str:
    doc: dict[str, Any] = macro.to_dict()
    doc.update({"updated_at_ms": macro.updated_at_ms, "updated_by": macro.updated_by,
                "note": macro.note})
    return json.dumps(doc, ensure_ascii=False)


def _decode(name: str, version: int, raw: bytes | str) -> Macro:
    doc = json.loads(raw)
    meta = {k: doc.pop(k, d) for k, d in
            (("updated_at_ms", 0), ("updated_by", ""), ("note", ""))}
    # Stored versions were valid when saved; a stricter parser later must not lose them,
    # so any error here names the version for the admin to roll back.
    try:
        return parse_macro(name, doc, version=version, updated_at_ms=int(meta["updated_at_ms"]),
                           updated_by=str(meta["updated_by"]), note=str(meta["note"]))
    except MacroError as exc:
        raise MacroError(f"{name} v{version}: {exc.field}", exc.message) from exc


class MacroStore:
    def __init__(self, redis: Redis, shipped: Mapping[str, Macro]) -> None:
        self.redis = redis
        self.shipped = dict(shipped)
        self._save = Script(redis, _SAVE_SCRIPT)

    async def names(self) -> list[str]:
        stored = {m.decode() if isinstance(m, bytes) else m
                  for m in await self.redis.smembers(NAMES_KEY)}
        return sorted(stored | set(self.shipped))

    async def _latest_version(self, name: str) -> int:
        return int(await self.redis.hlen(versions_key(name)))

    async def get(self, name: str) -> Macro:
        """The current version."""
        check_name(name)
        latest = await self._latest_version(name)
        if latest:
            return await self.get_version(name, latest)
        if name in self.shipped:
            return self.shipped[name]
        raise MacroNotFound(f"macro {name!r} not found")

    async def get_version(self, name: str, version: int) -> Macro:
        check_name(name)
        if version == 0:
            if name in self.shipped:
                return self.shipped[name]
            raise MacroNotFound(f"macro {name!r} has no shipped default (version 0)")
        raw = await self.redis.hget(versions_key(name), str(version))
        if raw is None:
            raise MacroNotFound(f"macro {name!r} has no version {version}")
        return _decode(name, version, raw)

    async def all(self) -> list[Macro]:
        return [await self.get(name) for name in await self.names()]

    async def versions(self, name: str) -> list[VersionInfo]:
        """The history, newest first; version 0 is the shipped default when there is one."""
        check_name(name)
        raw: dict[Any, Any] = await self.redis.hgetall(versions_key(name))
        out: list[VersionInfo] = []
        for key, value in raw.items():
            doc = json.loads(value)
            out.append(VersionInfo(int(key), int(doc.get("updated_at_ms", 0)),
                                   str(doc.get("updated_by", "")), str(doc.get("note", ""))))
        if name in self.shipped:
            out.append(VersionInfo(0, 0, "", "shipped default"))
        if not out:
            raise MacroNotFound(f"macro {name!r} not found")
        return sorted(out, key=lambda v: v.version, reverse=True)

    async def save(self, macro: Macro, *, author: str, now_ms: int, note: str = "") -> Macro:
        """Append a new version (the caller has validated the templates)."""
        check_name(macro.name)
        stamped = Macro(name=macro.name, title=macro.title, locales=macro.locales,
                        actions=macro.actions, updated_at_ms=now_ms, updated_by=author,
                        note=note)
        await self.redis.sadd(NAMES_KEY, macro.name)
        version = int(await self._save(keys=[versions_key(macro.name)], args=[_encode(stamped)]))
        return Macro(name=stamped.name, title=stamped.title, locales=stamped.locales,
                     actions=stamped.actions, version=version, updated_at_ms=now_ms,
                     updated_by=author, note=note)

    async def rollback(self, name: str, version: int, *, author: str, now_ms: int) -> Macro:
        """Make an earlier version current again, as a new version (history kept)."""
        old = await self.get_version(name, version)
        return await self.save(old, author=author, now_ms=now_ms,
                               note=f"rollback to version {version}")
