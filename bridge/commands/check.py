"""`bridge check`: validate the rule file and every macro template (the release step).

Checks, and exits 1 on the first kind of failure it finds after reporting them all:
  * config/automations.toml parses and every rule is valid (the message names the rule
    and the field);
  * every shipped macro (bridge/templates/macros/*.toml) parses and each of its templates
    renders in the sandbox against the sample ticket (line and reason otherwise);
  * every macro the rules name exists;
  * with REDIS_URL set (or a `make run` running), the current version of every macro
    edited in Redis renders too
    (Redis being unreachable is a warning: the release must not depend on it).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from bridge.core.macros import Macro, MacroError
from bridge.core.rule_model import AutomationConfig
from bridge.core.rule_parsing import RuleError, load_config
from bridge.devrun import runtime_info
from bridge.store.connection import CLUSTER_UNSUPPORTED, cluster_node_at
from bridge.store.macros import SHIPPED_DIR, MacroStore, load_shipped
from bridge.templating import validate_macro
from config.settings import DEFAULT_CONFIG_DIR, Settings, SettingsError


def _check_macro(macro: Macro, company: str, origin: str) -> list[str]:
    return [f"macro {macro.name!r} ({origin}): {p.describe()}"
            for p in validate_macro(macro, company_name=company)]


async def _stored_macros(settings: Settings, url: str, shipped: dict[str, Macro]
                         ) -> list[Macro]:
    from bridge.store.connection import async_redis

    client = async_redis(settings, url)
    try:
        store = MacroStore(client, shipped)
        stored = []
        for name in await store.names():
            macro = await store.get(name)
            if macro.version > 0:
                stored.append(macro)
        return stored
    finally:
        await client.aclose()


@click.command("check")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Folder holding automations.toml (default: BRIDGE_CONFIG_DIR).")
@click.option("--macros-dir", type=click.Path(path_type=Path, file_okay=False),
              default=SHIPPED_DIR, show_default=True, help="Shipped macro templates.")
@click.option("--stored/--no-stored", default=True, show_default=True,
              help="Also check macros edited through the API (REDIS_URL, or a running make run).")
def check(config_dir: Path | None, macros_dir: Path, stored: bool) -> None:
    """Validate config/automations.toml and every macro template."""
    errors: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        errors.append(f"settings: {exc}")
    # Not Path("config"): that is the working directory's, and only a checkout has one.
    folder = config_dir or (settings.config_dir if settings else DEFAULT_CONFIG_DIR)
    if config_dir is None and settings is None and os.environ.get("BRIDGE_CONFIG_DIR"):
        # The settings failed (for this or another reason): the operator's folder is still
        # the one to check, never the shipped one in its place (its "ok" read as theirs).
        folder = Path(os.environ["BRIDGE_CONFIG_DIR"])

    config = AutomationConfig()
    if not (folder / "automations.toml").is_file():
        errors.append(f"{folder / 'automations.toml'} does not exist")
    else:
        try:
            config = load_config(folder / "automations.toml")
            click.echo(f"ok   {folder / 'automations.toml'}: {len(config.triggers)} "
                       f"trigger(s), {len(config.automations)} automation(s)")
        except RuleError as exc:
            errors.append(str(exc))
    company = config.general.company_name

    shipped: dict[str, Macro] = {}
    try:
        shipped = load_shipped(macros_dir)
    except MacroError as exc:
        errors.append(f"macro {exc.field}: {exc.message}")
    for macro in shipped.values():
        problems = _check_macro(macro, company, "shipped")
        errors += problems
        if not problems:
            click.echo(f"ok   macro {macro.name!r} (shipped, {', '.join(sorted(macro.locales))})")

    known = set(shipped)
    # REDIS_URL, else the Redis of a running `make run` (as the other commands find it).
    url = (settings.redis_url or str(runtime_info(settings.data_dir).get("redis_url", ""))
           if settings is not None else "")
    if settings is not None and settings.redis_url and cluster_node_at(settings):
        errors.append(CLUSTER_UNSUPPORTED)
    if settings is not None and settings.redis_without_password:
        click.echo("warn REDIS_URL has no password: whoever reaches that Redis reads and "
                   "writes every ticket", err=True)
    if stored and settings is None:
        click.echo("warn stored macros not checked: the settings failed (see below)", err=True)
    if stored and settings is not None and url:
        try:
            edited = asyncio.run(_stored_macros(settings, url, shipped))
        except Exception as exc:  # Redis down or unreachable: warn, do not block a release
            click.echo(f"warn stored macros not checked: {type(exc).__name__}: {exc}", err=True)
        else:
            for macro in edited:
                known.add(macro.name)
                problems = _check_macro(macro, company, f"stored v{macro.version}")
                errors += problems
                if not problems:
                    click.echo(f"ok   macro {macro.name!r} (stored v{macro.version})")

    for name, where in sorted(config.macro_names().items()):
        if name not in known:
            errors.append(f"{where}: macro {name!r} does not exist")

    for line in errors:
        click.echo(f"FAIL {line}", err=True)
    if errors:
        raise click.ClickException(f"{len(errors)} problem(s) found")
    click.echo("all checks passed")
