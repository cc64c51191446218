"""``civicrm-gateway audit`` run as a subprocess on a state directory a gateway wrote: each
filter, the table and --json."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.cli.main import main
from tests.audit.helpers import OTHER, READER, WRITER, audited_gateway, auth


@pytest.fixture
async def state(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A trail of: writer creates A and B, other creates C, writer updates A, reader refused,
    a batch with a failing member, an APIv3 delete of B."""
    ids: dict[str, int] = {}
    async with audited_gateway(tmp_path) as gw:
        for token, name in ((WRITER, "A"), (WRITER, "B"), (OTHER, "C")):
            answer = await gw.post(
                "/v4/Contact/create",
                headers=auth(token),
                json={"values": {"contact_type": "Individual", "first_name": name}},
            )
            ids[name] = answer.json()[0]["id"]
        await gw.post(
            "/v4/Contact/update",
            headers=auth(WRITER),
            json={"where": [["id", "=", ids["A"]]], "values": {"last_name": "Z"}},
        )
        assert (
            await gw.post("/v4/Contact/delete", headers=auth(READER), json={"where": [["id", "=", ids["C"]]]})
        ).status_code == 403
        await gw.post(
            "/v4/batch",
            headers=auth(OTHER),
            json={"bad": ["Email", "create", {"values": {"contact_id": 99999, "email": "a@b.c"}}]},
        )
        await gw.post("/v3/Contact/delete", headers=auth(WRITER), json={"id": ids["B"]})
    return tmp_path / "state", ids


def audit(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    env.update(
        {"CIVI_GATEWAY_STATE_DIR": str(state_dir), "CIVI_GATEWAY_SECRETS_DIR": str(state_dir / "none")}
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


Row = tuple[str | None, str, str, list[int], int]


def _rows(out: str) -> list[Row]:
    return [(r["client"], r["entity"], r["action"], r["ids"], r["status"]) for r in orjson.loads(out)]


def test_filters(
    state: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run as a subprocess, the other filters through the same entry point in process
    (each subprocess costs seconds of imports on a loaded machine)."""
    folder, ids = state
    monkeypatch.setenv("CIVI_GATEWAY_STATE_DIR", str(folder))

    def listed(*args: str) -> list[Row]:
        assert main(["audit", "--json", *args]) == 0
        return _rows(capsys.readouterr().out)

    a, b, c = ids["A"], ids["B"], ids["C"]
    everything = [
        ("writer", "Contact", "delete", [b], 200),
        ("other", "Email", "create", [], 422),
        ("reader", "Contact", "delete", [], 403),
        ("writer", "Contact", "update", [a], 200),
        ("other", "Contact", "create", [c], 200),
        ("writer", "Contact", "create", [b], 200),
        ("writer", "Contact", "create", [a], 200),
    ]
    done = audit(folder, "--json", "--entity", "contact")
    assert done.returncode == 0, done.stderr
    assert _rows(done.stdout) == [e for e in everything if e[1] == "Contact"]
    assert listed() == everything
    assert listed("--client", "other") == [everything[1], everything[4]]
    assert listed("--entity", "Email") == [everything[1]]
    assert listed("--id", str(a)) == [everything[3], everything[6]]
    assert listed("--entity", "Contact", "--id", str(b)) == [everything[0], everything[5]]
    assert listed("--action", "delete") == [everything[0], everything[2]]
    assert listed("--outcome", "denied") == [everything[2]]
    assert listed("--outcome", "error") == [everything[1]]
    assert listed("--outcome", "ok", "--limit", "2") == everything[:4:3]
    assert listed("--since", "2000-01-01", "--until", "2999-12-31T23:59Z") == everything
    assert listed("--since", "2999-01-01") == []
    assert listed("--until", "2000-01-01") == []


def test_table(state: tuple[Path, dict[str, int]]) -> None:
    folder, ids = state
    done = audit(folder, "--client", "other")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(r"SEQ  TIME +CLIENT  SOURCE +CALL +IDS +STATUS +FIELDS", lines[0])
    assert re.fullmatch(
        rf"6 +{time}  other   127\.0\.0\.1  v4 Email\.create \[bad\]  - +"
        r"422 civicrm-validation  contact_id,email",
        lines[1],
    ), lines[1]
    assert re.fullmatch(
        rf"3 +{time}  other   127\.0\.0\.1  v4 Contact\.create +{ids['C']} +"
        r"200 +contact_type,first_name",
        lines[2],
    ), lines[2]


def test_bad_input_and_no_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done = audit(tmp_path / "empty", "--since", "last week")
    assert done.returncode == 2
    assert "is not an ISO 8601 date or time" in done.stderr
    monkeypatch.setenv("CIVI_GATEWAY_STATE_DIR", str(tmp_path / "empty"))
    assert main(["audit"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["SEQ  TIME  CLIENT  SOURCE  CALL  IDS  STATUS  FIELDS"]
    assert f"no audit trail at {tmp_path / 'empty' / 'audit.sqlite'}" in err
