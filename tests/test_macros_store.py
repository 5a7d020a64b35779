"""Macro storage: shipped defaults as version 0, edits in Redis with history and rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio

from bridge.core.macros import Macro, MacroError, parse_macro
from bridge.core.tickets import Status
from bridge.store.macros import SHIPPED_DIR, MacroNotFound, MacroStore, load_shipped
from bridge.templating import Limits, validate_macro
from tests.conftest import CONTACT_KEY

REQUIRED = {"greeting", "ask_for_info", "solved", "session_closing", "thread_limit",
            "csat_survey"}


def test_shipped_defaults_cover_the_required_macros_in_french_and_english() -> None:
    shipped = load_shipped()
    assert set(shipped) >= REQUIRED
    for macro in shipped.values():
        assert {"en", "fr"} <= set(macro.locales), macro.name
        assert macro.version == 0
    assert shipped["ask_for_info"].actions.status is Status.PENDING
    assert shipped["solved"].actions.status is Status.SOLVED
    assert shipped["session_closing"].actions.end_session


@pytest.mark.parametrize("name", sorted(load_shipped(SHIPPED_DIR)))
def test_every_shipped_macro_renders_in_the_sandbox(name: str) -> None:
    assert validate_macro(load_shipped()[name], limits=Limits(time_limit_s=2)) == []


def test_a_broken_shipped_file_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "oops.toml").write_text('[actions]\nstatus = "slved"\n[locales]\nen = "x"\n',
                                        encoding="utf-8")
    with pytest.raises(MacroError) as info:
        load_shipped(tmp_path)
    assert "oops.toml" in info.value.field and "actions.status" in info.value.field


def edit(name: str, text: str) -> Macro:
    return parse_macro(name, {"locales": {"en": text}, "actions": {"add_tags": ["edited"]}})


async def test_edits_are_versions_on_top_of_the_shipped_default(
    aredis: redis.asyncio.Redis,
) -> None:
    store = MacroStore(aredis, load_shipped())
    shipped = await store.get("greeting")
    assert shipped.version == 0
    v1 = await store.save(edit("greeting", "Hi v1"), author="admin", now_ms=1000)
    v2 = await store.save(edit("greeting", "Hi v2"), author="root", now_ms=2000)
    assert (v1.version, v2.version) == (1, 2)
    current = await store.get("greeting")
    assert current.locales["en"] == "Hi v2" and current.updated_by == "root"
    assert [(v.version, v.updated_by) for v in await store.versions("greeting")] == [
        (2, "root"), (1, "admin"), (0, "")]
    # Other macros are untouched.
    assert (await store.get("solved")).version == 0


async def test_rollback_appends_a_copy_and_keeps_the_history(
    aredis: redis.asyncio.Redis,
) -> None:
    store = MacroStore(aredis, load_shipped())
    await store.save(edit("greeting", "Hi v1"), author="admin", now_ms=1)
    await store.save(edit("greeting", "Hi v2"), author="admin", now_ms=2)
    back = await store.rollback("greeting", 1, author="admin", now_ms=3)
    assert back.version == 3 and back.locales["en"] == "Hi v1"
    assert back.note == "rollback to version 1"
    assert (await store.get("greeting")).locales["en"] == "Hi v1"
    default = await store.rollback("greeting", 0, author="admin", now_ms=4)
    assert default.version == 4
    assert default.locales == load_shipped()["greeting"].locales
    assert default.actions == load_shipped()["greeting"].actions
    assert [v.version for v in await store.versions("greeting")] == [4, 3, 2, 1, 0]
    with pytest.raises(MacroNotFound):
        await store.rollback("greeting", 9, author="admin", now_ms=5)


async def test_new_macros_have_no_version_zero(aredis: redis.asyncio.Redis) -> None:
    store = MacroStore(aredis, load_shipped())
    with pytest.raises(MacroNotFound):
        await store.get("refund")
    saved = await store.save(edit("refund", "Refunded"), author="admin", now_ms=1)
    assert saved.version == 1
    assert "refund" in await store.names()
    assert [m.name for m in await store.all()].count("refund") == 1
    with pytest.raises(MacroNotFound):
        await store.get_version("refund", 0)


async def test_concurrent_saves_get_distinct_versions(aredis: redis.asyncio.Redis) -> None:
    store = MacroStore(aredis, load_shipped())
    saved = await asyncio.gather(*(
        store.save(edit("greeting", f"Hi {i}"), author=f"admin{i}", now_ms=i)
        for i in range(20)))
    assert sorted(m.version for m in saved) == list(range(1, 21))
    texts = {(await store.get_version("greeting", m.version)).locales["en"] for m in saved}
    assert len(texts) == 20


def test_bridge_check_passes_on_the_shipped_files() -> None:
    from click.testing import CliRunner

    from bridge.commands.check import check

    result = CliRunner().invoke(check, ["--no-stored"], env={"REDIS_URL": ""})
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output
    assert "macro 'thread_limit' (shipped, en, fr)" in result.output


def test_bridge_check_names_the_broken_rule_field_and_template_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bridge.commands.check import check

    config = tmp_path / "config"
    config.mkdir()
    (config / "automations.toml").write_text(
        '[[automations]]\nname = "close_late"\nsince = "solved"\nafter_s = "soon"\n'
        'then = { set_status = "closed" }\n', encoding="utf-8")
    macros = tmp_path / "macros"
    macros.mkdir()
    (macros / "csat_survey.toml").write_text(
        "[locales]\nen = '''\nRate us\n{{ ticket.nope }}\n'''\n", encoding="utf-8")
    result = CliRunner().invoke(check, ["--no-stored", "--config-dir", str(config),
                                        "--macros-dir", str(macros)], env={"REDIS_URL": ""})
    assert result.exit_code == 1
    assert "automation 'close_late': field 'after_s'" in result.output
    assert "macro 'csat_survey' (shipped): locale:en, line 2: undefined" in result.output
    # The rules still name macros that must exist (here: the default survey macro does).
    (config / "automations.toml").write_text(
        '[[triggers]]\nname = "hello"\non = ["ticket.created"]\n'
        'then = { apply_macro = "ghost" }\n', encoding="utf-8")
    result = CliRunner().invoke(check, ["--no-stored", "--config-dir", str(config)],
                                env={"REDIS_URL": ""})
    assert result.exit_code == 1
    assert "trigger 'hello': then.apply_macro: macro 'ghost' does not exist" in result.output


def test_bridge_check_also_renders_macros_edited_in_redis(
    redis_url: str, sync_redis: redis.Redis,
) -> None:
    import json

    from click.testing import CliRunner

    from bridge.commands.check import check
    from bridge.store.macros import NAMES_KEY, versions_key

    # Saved before a stricter check existed, say: the API would refuse it today.
    sync_redis.sadd(NAMES_KEY, "greeting")
    sync_redis.hset(versions_key("greeting"), "1", json.dumps(
        {"title": "", "locales": {"en": "Hi\n{{ ''.__class__ }}"}, "actions": {}}))
    result = CliRunner().invoke(check, [], env={"REDIS_URL": redis_url,
                                               "BRIDGE_CONTACT_KEY": CONTACT_KEY})
    assert result.exit_code == 1
    assert "macro 'greeting' (stored v1): locale:en, line 2: security" in result.output


def test_bridge_check_finds_the_redis_of_a_running_make_run(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path,
) -> None:
    """Without REDIS_URL, as the other commands: the bridge `make run` started."""
    import json

    from click.testing import CliRunner

    from bridge.commands.check import check
    from bridge.devrun import write_private
    from bridge.store.macros import NAMES_KEY, versions_key

    sync_redis.sadd(NAMES_KEY, "greeting")
    sync_redis.hset(versions_key("greeting"), "1", json.dumps(
        {"title": "", "locales": {"en": "Hi\n{{ ''.__class__ }}"}, "actions": {}}))
    write_private(tmp_path / "run.json", json.dumps({"redis_url": redis_url}))
    result = CliRunner().invoke(check, [], env={"REDIS_URL": None,
                                               "BRIDGE_DATA_DIR": str(tmp_path),
                                               "BRIDGE_CONTACT_KEY": CONTACT_KEY})
    assert result.exit_code == 1
    assert "macro 'greeting' (stored v1): locale:en, line 2: security" in result.output
