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

from tests.cv.captures import SAMPLES, VOLATILE, parse_cases


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "<volatile>" if k in VOLATILE and v is not None else normalise(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def lines(text: str) -> list[str]:
    """stderr as compared: trailing spaces and surrounding blank lines do not count."""
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def run(args: list[str], stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.sandbox.cv", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


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
        run(
            ["api4", "Contact.create", "--in=json"],
            json.dumps(
                {"values": {"contact_type": "Individual", "first_name": "Grace", "last_name": "Hopper"}}
            ),
            sample_site,
        )
    for number, name in ((1, "cv-pipe-1"), (2, "cv-pipe-2")):
        flags, stdout, code = cases[name]
        requests = (SAMPLES / f"cv-pipe-in-{number}.jsonl").read_text()
        result = run(
            ["pipe", *([flags] if flags else [])], requests.replace("<API_KEY>", admin_key), sample_site
        )
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
    result = run(
        ["api4", "Contact.get", "--in=json", "--out=json"],
        json.dumps({"select": ["id"], "where": [["id", "=", contact_id]]}),
        site,
    )
    return bool(json.loads(result.stdout))


# --- round 2: count dropped, upper-case actions, object-form where, errors, v3 chaining ------

ROUND2 = SAMPLES / "cv-round2.txt"
# What each round-2 capture needs of the sandbox engine under the stand-in (the stand-in's own
# part, output format, exit code and error box, is checked by the same replay).
ROUND2_ENGINE = {
    # The capture lists the real site's two emails of its admin; this site's admin has none.
    "api3 get with api.Email.get chaining": "the chained answer holds the real site's records",
}
# Outputs that name the real site's records: compared by shape (same length, same keys).
ROUND2_SHAPE = frozenset({"api4 id + row_count", "api4 action in upper case"})


@dataclass
class Round2Case:
    title: str
    args: list[str]
    stdin: str
    code: int
    stdout: str
    stderr: str


def round2_cases() -> list[Round2Case]:
    """The ``cv api4``/``cv api3`` runs of cv-round2.txt (the pipe session is separate)."""
    cases = []
    for block in re.split(r"^### ", ROUND2.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = block.partition("\n")
        command = re.search(r"^\$ cv (.*?) <<< '(.*)'$", body, re.MULTILINE)
        if command is None:
            continue
        code = int(re.search(r"^exit (\d+)$", body, re.MULTILINE).group(1))  # type: ignore[union-attr]
        stdout = body.split("\nstdout:\n", 1)[1].split("\nstderr:\n", 1)[0]
        stderr = body.split("\nstderr:\n", 1)[1]
        cases.append(
            Round2Case(title.strip(), shlex.split(command.group(1)), command.group(2), code, stdout, stderr)
        )
    return cases


@pytest.fixture(scope="module")
def round2_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Contacts 1 (organisation) and 2 (admin) built in, and three Individuals more."""
    from gateway.sandbox.engine import Sandbox

    site = tmp_path_factory.mktemp("round2")
    sb = Sandbox(str(site / "civicrm.sandbox.sqlite"))
    for first in ("Ada", "Grace", "Edsger"):
        sb.api4("Contact", "create", {"values": {"contact_type": "Individual", "first_name": first}})
    sb.close()
    return site


def site_count(site: Path, where: list[Any]) -> int:
    from gateway.sandbox.engine import Sandbox

    sb = Sandbox(str(site / "civicrm.sandbox.sqlite"))
    try:
        return sb.api4("Contact", "get", {"select": ["row_count"], "where": where})["countMatched"]
    finally:
        sb.close()


def shape(value: Any) -> Any:
    return [sorted(item) for item in value] if isinstance(value, list) else type(value).__name__


def test_round2_capture_count() -> None:
    assert [case.title for case in round2_cases()] == [
        "api4 row_count alone (count is dropped)",
        "api4 id + row_count",
        "api4 COUNT with alias (the way to count over cv)",
        "api4 action in upper case",
        "api4 where as an object",
        "api4 update of a missing id",
        "api4 negative limit",
        "api4 unknown SQL function",
        "api3 getcount",
        "api3 get with api.Email.get chaining",
    ]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.title,
            marks=[
                pytest.mark.xfail(strict=False, reason=reason)
                for key, reason in ROUND2_ENGINE.items()
                if case.title.startswith(key)
            ],
        )
        for case in round2_cases()
    ],
)
def test_round2_cli_captures(round2_site: Path, case: Round2Case) -> None:
    """Exit code and stderr exactly; stdout the same JSON, by shape where it names the real
    site's records, or the same count of this site's records where it is a count."""
    result = run(case.args, case.stdin, round2_site)
    assert result.returncode == case.code, result.stderr
    assert lines(result.stderr) == lines(case.stderr)
    if not case.stdout.strip():
        assert not result.stdout.strip()
        return
    expected, actual = json.loads(case.stdout), json.loads(result.stdout)
    assert "\n" not in result.stdout.strip()  # --out=json: compact, like the capture
    if case.title in ROUND2_SHAPE:
        assert shape(actual) == shape(expected)
    elif case.title.startswith(("api4 COUNT", "api3 getcount")):
        individuals = site_count(round2_site, [["contact_type", "=", "Individual"]])
        assert actual == ([{"total": individuals}] if isinstance(expected, list) else individuals)
        assert shape(actual) == shape(expected)
    else:
        assert normalise(actual) == normalise(expected)


def round2_pipe() -> list[str]:
    """The pipe session's output lines (handshake first)."""
    block = ROUND2.read_text().split("### pipe session", 1)[1]
    return [line for line in block.splitlines()[2:] if line.strip()]


# The session's six requests, as the capture describes them ("row_count, COUNT alias, GET,
# object where, limit -1, api3 getcount"; the same params as the cv runs above).
ROUND2_PIPE_REQUESTS = [
    ["api4", ["Contact", "get", {"select": ["row_count"]}]],
    ["api4", ["Contact", "get", {"select": ["COUNT(id) AS total"]}]],
    ["api4", ["Contact", "GET", {"select": ["id"], "limit": 1}]],
    ["api4", ["Contact", "get", {"select": ["id"], "where": {"a": ["id", "=", 2]}}]],
    ["api4", ["Contact", "get", {"select": ["id"], "limit": -1}]],
    ["api3", ["Contact", "getcount", {}]],
]


def replay_pipe(site: Path, numbers: list[int]) -> dict[int, Any]:
    """Send the numbered requests in one ``cv --user=admin pipe`` session; their responses."""
    requests = "".join(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "method": ROUND2_PIPE_REQUESTS[n - 1][0],
                "params": ROUND2_PIPE_REQUESTS[n - 1][1],
                "id": n,
            }
        )
        + "\n"
        for n in numbers
    )
    result = run(["--user=admin", "pipe"], requests, site)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout.splitlines()
    assert out[0] == round2_pipe()[0]  # the handshake, byte for byte
    return {json.loads(line)["id"]: json.loads(line) for line in out[1:]}


def test_round2_pipe_session(round2_site: Path) -> None:
    """row_count dropped (``[]``), upper-case action, object where, api3 getcount's bare
    number: as the real session answered."""
    expected = {json.loads(line)["id"]: json.loads(line) for line in round2_pipe()[1:]}
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    actual = replay_pipe(round2_site, [1, 3, 4, 6])
    assert actual[1] == expected[1] == {"jsonrpc": "2.0", "result": [], "id": 1}
    assert shape(actual[3]["result"]) == shape(expected[3]["result"])
    assert actual[4] == expected[4]
    assert actual[6] == {"jsonrpc": "2.0", "result": site_count(round2_site, []), "id": 6}


def test_round2_pipe_session_engine(round2_site: Path) -> None:
    expected = {json.loads(line)["id"]: json.loads(line) for line in round2_pipe()[1:]}
    actual = replay_pipe(round2_site, [2, 5])
    assert actual[2] == {"jsonrpc": "2.0", "result": [{"total": site_count(round2_site, [])}], "id": 2}
    assert actual[5] == expected[5]


def test_round2_error_boxes(capsys: pytest.CaptureFixture[str]) -> None:
    """The stand-in's own part of the round-2 errors, whatever the engine raises: for the
    message the real cv printed, the same box (file, line, wrapping), usage line and exit
    code."""
    from gateway.backends.cvproc import parse_console_error
    from gateway.sandbox import cv as stand_in

    failing = [case for case in round2_cases() if case.code != 0]
    assert len(failing) == 3
    for case in failing:
        error = parse_console_error(case.stderr)
        assert error is not None
        with pytest.raises(stand_in.CvExit) as exit_info:
            stand_in.fail("api4", error.message)
        assert exit_info.value.code == case.code
        assert lines(capsys.readouterr().err) == lines(case.stderr), case.title
