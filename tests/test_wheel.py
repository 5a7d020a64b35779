"""`pip install .` gives a working bridge outside the checkout (a real wheel, not editable).

The wheel is built from a copy of the sources (an in-tree build/ folder could hold files
from an older tree), installed with its dependencies into a new virtualenv, and run from a
folder that is not the checkout. The test virtualenv's editable install cannot leak in: the
new one has its own site-packages (no --system-site-packages), PYTHONPATH is dropped, and
neither the working directory nor the console script's folder holds the sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".mypy_cache", ".ruff_cache", ".hypothesis", "var")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Where the installed bridge finds its files; run inside the new virtualenv.
PROBE = """
import bridge, bridge.store.routing, config.settings
from bridge.store.macros import SHIPPED_DIR, load_shipped
print(bridge.__file__)
print(config.settings.DEFAULT_CONFIG_DIR)
print(SHIPPED_DIR)
print(len(load_shipped()), len(bridge.store.routing._ROUTE_SCRIPT))
"""


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(the new virtualenv, an environment for it, a working folder outside the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
           and not k.startswith(("TWILIO_", "REDIS_", "BRIDGE_", "PUBLIC_BASE_URL", "PORT"))}
    sources = work / "sources"
    shutil.copytree(ROOT, sources, ignore=NOT_SOURCES)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
          str(work / "dist"), str(sources)], cwd=work, env=env, timeout_s=300)
    (wheel,) = (work / "dist").glob("helpdesk_bridge-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env, timeout_s=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
         cwd=work, env=env, timeout_s=600)
    shutil.rmtree(sources)  # nothing left to import the bridge from but the wheel
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return venv, env, elsewhere


def test_installed_bridge_uses_its_packaged_files(
        installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, elsewhere = installed
    probe = _run([str(venv / "bin" / "python"), "-c", PROBE], cwd=elsewhere, env=env,
                 timeout_s=60)
    package, config_dir, macros_dir, counts = probe.stdout.splitlines()
    site = next((venv / "lib").glob("python3.*/site-packages")).resolve()
    assert Path(package).resolve().is_relative_to(site), package
    assert Path(config_dir).resolve() == site / "config"
    assert Path(macros_dir).resolve() == site / "bridge" / "templates" / "macros"
    macro_count, script_chars = map(int, counts.split())
    assert macro_count == len(list((ROOT / "bridge" / "templates" / "macros").glob("*.toml")))
    assert script_chars > 0


def test_bridge_check_passes_outside_the_checkout(
        installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, elsewhere = installed
    done = _run([str(venv / "bin" / "bridge"), "check"], cwd=elsewhere, env=env, timeout_s=120)
    site = next((venv / "lib").glob("python3.*/site-packages")).resolve()
    assert "all checks passed" in done.stdout
    assert f"ok   {site / 'config' / 'automations.toml'}:" in done.stdout
    assert "ok   macro 'solved' (shipped, en, fr)" in done.stdout
    assert str(ROOT) not in done.stdout + done.stderr


def test_bridge_config_dir_still_overrides_the_packaged_folder(
        installed: tuple[Path, dict[str, str], Path]) -> None:
    venv, env, elsewhere = installed
    custom = elsewhere / "custom-config"
    shutil.copytree(ROOT / "config", custom, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    done = _run([str(venv / "bin" / "bridge"), "check"], cwd=elsewhere,
                env={**env, "BRIDGE_CONFIG_DIR": str(custom)}, timeout_s=120)
    assert f"ok   {custom / 'automations.toml'}:" in done.stdout
