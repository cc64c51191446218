"""The captured cv runs (tests/fixtures/samples) parsed into cases, for the stand-in replay and
the cv output parser tests (no tests here)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"
VOLATILE = frozenset({"hash", "created_date", "modified_date", "api_key"})


@dataclass
class Case:
    name: str
    cwd: str | None
    args: list[str]
    stdin: str
    stdout: str
    stderr: str
    code: int


def parse_cases(text: str) -> list[Case]:
    cases = []
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        name = block.split("\n", 1)[0].split(".")[0]
        command = re.search(r"^\$ (?:\(cwd=(\S+)\) )?cv (.*?)(?:\s+# stdin: ?(.*))?$", block, re.MULTILINE)
        assert command, block
        stdout = block.split("--- stdout:\n", 1)[1].split("--- stderr:", 1)[0]
        stderr = block.split("--- stderr:", 1)[1].split("--- exit code:", 1)[0]
        code = int(re.search(r"--- exit code: (\d+)", block).group(1))  # type: ignore[union-attr]
        cases.append(
            Case(
                name,
                command.group(1),
                shlex.split(command.group(2)),
                command.group(3) or "",
                stdout,
                stderr,
                code,
            )
        )
    return cases
