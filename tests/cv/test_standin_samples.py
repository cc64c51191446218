"""The cv stand-in against the captures of the real cv 0.3.56 / CiviCRM 5.77.

Every captured ``cv api4``, ``cv api``/``api3`` and ``cv pipe`` run is replayed against the
stand-in on a site holding the same records (same ids), in the captured order: exit codes and
stderr must be identical, stdout the same JSON (only volatile values such as hashes and
timestamps may differ) in the same layout (pretty or compact).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
        command = re.search(r"^\$ (?:\(cwd=(\S+)\) )?cv (.*?)(?:\s+# stdin: ?(.*))?$", block,
                            re.MULTILINE)
        assert command, block
        stdout = block.split("--- stdout:\n", 1)[1].split("--- stderr:", 1)[0]
        stderr = block.split("--- stderr:", 1)[1].split("--- exit code:", 1)[0]
        code = int(re.search(r"--- exit code: (\d+)", block).group(1))  # type: ignore[union-attr]
        cases.append(Case(name, command.group(1), shlex.split(command.group(2)),
                          command.group(3) or "", stdout, stderr, code))
    return cases


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE and v is not None else normalise(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def lines(text: str) -> list[str]:
    """stderr as compared: trailing spaces and surrounding blank lines do not count."""
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def run(args: list[str], stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.sandbox.cv", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


@pytest.fixture(scope="module")
def sample_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The records the real site held when the captures began: contacts 1 and 2 (built in),
    3 Ada Lovelace and 4 NoType."""
    from gateway.sandbox.engine import Sandbox

    site = tmp_path_factory.mktemp("site")
    sb = Sandbox(str(site / "civicrm.sandbox.sqlite"))
    for values in ({"first_name": "Ada", "last_name": "Lovelace"}, {"first_name": "NoType"}):
        sb.api4("Contact", "create", {"values": {"contact_type": "Individual", **values}})
    sb.close()
    return site


def test_cli_captures(sample_site: Path, tmp_path: Path) -> None:
    """cv api4 / api / api3: the captured order (cv-3 creates contact 5, as it did for real)."""
    cases = parse_cases((SAMPLES / "cv-api4.txt").read_text())
    cases += parse_cases((SAMPLES / "cv-apiv3-and-more.txt").read_text())
    assert len(cases) == 21
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for case in cases:
        args = [f"--cwd={sample_site}" if a == "--cwd=/srv/civicrm" else a for a in case.args]
        result = run(args, case.stdin, outside if case.cwd == "/tmp" else sample_site)
        where = f"{case.name}: {shlex.join(case.args)}"
        assert result.returncode == case.code, (where, result.stderr)
        assert lines(result.stderr) == lines(case.stderr), where
        if not case.stdout.strip():
            assert not result.stdout.strip(), where
            continue
        expected, actual = json.loads(case.stdout), json.loads(result.stdout)
        # pretty (the default) or compact (--out=json), as cv printed it
        assert ("\n" in result.stdout.strip()) == ("\n" in case.stdout.strip()), where
        if case.name in ("cv-v3-5", "cv-v3-6"):  # getcount: the real site held 11 contacts
            assert type(actual) is type(expected) is int, where
            continue
        assert normalise(actual) == normalise(expected), where


def pipe_cases() -> list[tuple[str, str, list[str], int]]:
    """(name, flags, stdout lines, exit code) from cv-pipe.txt."""
    text = (SAMPLES / "cv-pipe.txt").read_text()
    out = []
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        name = block.split(":", 1)[0]
        flags = re.search(r"`cv pipe ?(\w*)`", block)
        stdout = block.split("--- stdout:\n", 1)[1].split("--- stderr:", 1)[0]
        code = int(re.search(r"--- exit code: (\d+)", block).group(1))  # type: ignore[union-attr]
        out.append((name, flags.group(1) if flags else "", stdout, code))
    return out


def test_pipe_captures(sample_site: Path, tmp_path: Path) -> None:
    """cv pipe, trusted then untrusted, after the CLI captures (contact 6 is created here),
    and a pipe started outside any site."""
    from gateway.sandbox.engine import Sandbox

    cases = {name: (flags, stdout, code) for name, flags, stdout, code in pipe_cases()}
    sb = Sandbox(str(sample_site / "civicrm.sandbox.sqlite"))
    admin_key = next(u["api_key"] for u in sb.users() if u["username"] == "admin")
    sb.close()
    if not _has_contact(sample_site, 5):
        run(["api4", "Contact.create", "--in=json"], json.dumps({"values": {
            "contact_type": "Individual", "first_name": "Grace", "last_name": "Hopper"}}),
            sample_site)
    for number, name in ((1, "cv-pipe-1"), (2, "cv-pipe-2")):
        flags, stdout, code = cases[name]
        requests = (SAMPLES / f"cv-pipe-in-{number}.jsonl").read_text()
        result = run(["pipe", *([flags] if flags else [])],
                     requests.replace("<API_KEY>", admin_key), sample_site)
        assert result.returncode == code, result.stderr
        assert result.stderr == ""
        expected_lines = stdout.strip().splitlines()
        actual_lines = result.stdout.strip().splitlines()
        assert actual_lines[0] == expected_lines[0]  # the handshake, byte for byte
        assert len(actual_lines) == len(expected_lines), result.stdout
        for expected, actual in zip(expected_lines[1:], actual_lines[1:], strict=True):
            assert normalise(json.loads(actual)) == normalise(json.loads(expected)), actual

    flags, stdout, code = cases["cv-pipe-3"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    block = (SAMPLES / "cv-pipe.txt").read_text().split("### cv-pipe-3", 1)[1]
    expected_stderr = block.split("--- stderr:", 1)[1].split("--- exit code:", 1)[0]
    result = run(["pipe"], "", outside)
    assert result.returncode == code == 1
    assert result.stdout == ""
    assert lines(result.stderr) == lines(expected_stderr)


def _has_contact(site: Path, contact_id: int) -> bool:
    result = run(["api4", "Contact.get", "--in=json", "--out=json"],
                 json.dumps({"select": ["id"], "where": [["id", "=", contact_id]]}), site)
    return bool(json.loads(result.stdout))
