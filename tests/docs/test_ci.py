"""CI runs exactly the README's test command, so what a newcomer runs is what CI checks."""

from __future__ import annotations

import re

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
    assert steps[-4:] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/mypy",
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
