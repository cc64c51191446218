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
