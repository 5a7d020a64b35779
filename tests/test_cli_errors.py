"""The command line's answers to what goes wrong around it: one line saying what to do,
never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import bridge
from bridge.cli import main
from bridge.store.embedded import free_port
from tests.conftest import CONTACT_KEY


@pytest.mark.parametrize("command", [["tickets"], ["outbox"], ["agents", "list"],
                                     ["webhooks", "list"], ["report"]])
def test_a_redis_out_of_reach_is_one_line(command: list[str]) -> None:
    result = CliRunner().invoke(main, command, env={
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "BRIDGE_CONTACT_KEY": CONTACT_KEY})
    assert result.exit_code == 1, result.output
    assert "cannot reach Redis" in result.output and "REDIS_URL" in result.output
    # A ClickException, not the ConnectionError's traceback.
    assert isinstance(result.exception, SystemExit), result.exception


def test_simulate_refuses_a_sid_twilio_would_never_send() -> None:
    result = CliRunner().invoke(main, ["simulate", "--sid", "SMdup1", "--url",
                                       f"http://127.0.0.1:{free_port()}", "hello"],
                                env={"TWILIO_AUTH_TOKEN": "t" * 32})
    assert result.exit_code == 2 and "--sid" in result.output
    assert "32 hex digits" in result.output


def test_check_with_an_unusable_config_folder_checks_nothing_in_its_place(
        tmp_path: Path) -> None:
    """It said "ok" for the shipped config/ when BRIDGE_CONFIG_DIR named a folder that does
    not exist: an "ok" the operator read as theirs."""
    from bridge.commands.check import check
    result = CliRunner().invoke(check, env={"BRIDGE_CONFIG_DIR": "/nonexistent",
                                            "REDIS_URL": ""})
    assert result.exit_code == 1
    assert "/nonexistent/automations.toml does not exist" in result.output
    assert "ok   /" not in result.output
    assert "FAIL settings" in result.output and "stored macros not checked" in result.output
    # Settings failing for another reason: the operator's folder is still the one checked.
    mine = tmp_path / "config"
    shutil.copytree(Path(bridge.__file__).parent.parent / "config", mine)
    other = CliRunner().invoke(check, env={"BRIDGE_CONFIG_DIR": str(mine), "REDIS_URL": "",
                                           "PORT": "not a port"})
    assert f"ok   {mine / 'automations.toml'}" in other.output, other.output
    assert "FAIL settings" in other.output


def test_a_short_widget_secret_stops_start_up_outside_development() -> None:
    """A visitor token names the key it was signed with: `BRIDGE_SECRET=secret` was
    guessed offline from an anonymous token, and any site user could be impersonated."""
    from bridge.commands.check import check
    for variable in ("BRIDGE_SECRET", "BRIDGE_SECRET_PREVIOUS"):
        result = CliRunner().invoke(check, ["--no-stored"], env={
            variable: "secret", "REDIS_URL": "", "BRIDGE_ENV": "production"})
        assert result.exit_code == 1
        assert f"{variable} has 6 characters" in result.output, result.output
    fine = CliRunner().invoke(check, ["--no-stored"], env={
        "BRIDGE_SECRET": "s" * 32, "REDIS_URL": "", "BRIDGE_ENV": "production"})
    assert fine.exit_code == 0, fine.output
    development = CliRunner().invoke(check, ["--no-stored"], env={
        "BRIDGE_SECRET": "secret", "REDIS_URL": "", "BRIDGE_ENV": "development"})
    assert development.exit_code == 0, development.output


def test_a_redis_without_password_is_a_warning() -> None:
    from bridge.commands.check import check
    result = CliRunner().invoke(check, ["--no-stored"], env={
        "REDIS_URL": "redis://127.0.0.1:6379/0", "BRIDGE_CONTACT_KEY": CONTACT_KEY,
        "BRIDGE_ENV": "production"})
    assert "warn REDIS_URL has no password" in result.output, result.output
    assert result.exit_code == 0
