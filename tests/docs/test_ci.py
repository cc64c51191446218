"""CI runs exactly the README's test command, so what a newcomer runs is what CI checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^```sh\n(bash tests/install-system-packages\.sh .*)\n```$", text, re.MULTILINE)
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == _readme_test_command()


def test_the_command_runs_the_checks_before_the_tests() -> None:
    steps = [s.strip() for s in _readme_test_command().split("&&")]
    assert steps[-5:] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
        ".venv/bin/lint-imports",
        ".venv/bin/python -m pytest",
    ]


def test_ci_builds_the_real_civicrm_first() -> None:
    """CI always runs tests/real/: it builds the kit (tests/real/kit, the project's own copy)
    and names it in CIVI_GATEWAY_TEST_CIVICRM before the README's command, which stays
    the one a user runs (without a kit the real-site tests are skipped with the reason)."""
    lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert "set -euo pipefail" in lines
    build = lines.index("bash tests/real/kit/build.sh")
    assert (ROOT / "tests/real/kit/build.sh").is_file() and (ROOT / "tests/real/kit/src/SHA256SUMS").is_file()
    assert lines.index('export CIVI_PREFIX="${CIVI_PREFIX:-/tmp/civi}"') < build
    assert build < lines.index('export CIVI_GATEWAY_TEST_CIVICRM="$CIVI_PREFIX"') < len(lines) - 1
    assert "CIVI_GATEWAY_TEST_CIVICRM" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_layer_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """``lint-imports`` fails when a lower layer imports a higher one: a copy of the package
    where the call core imports the composition root breaks the contract."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "gateway", copy / "gateway", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    linter = Path(sys.executable).parent / "lint-imports"
    kept = subprocess.run(
        [str(linter)], cwd=copy, capture_output=True, text=True, env={"PYTHONPATH": str(copy)}
    )
    assert kept.returncode == 0, kept.stdout[-2000:]
    schema = copy / "gateway/core/schema.py"
    schema.write_text(schema.read_text() + "\nfrom gateway.services import services  # noqa\n")
    broken = subprocess.run(
        [str(linter)], cwd=copy, capture_output=True, text=True, env={"PYTHONPATH": str(copy)}
    )
    assert broken.returncode != 0
    assert "gateway.core is not allowed to import gateway.services" in broken.stdout
