"""Data that stays: on a fresh directory, ``serve``'s sandbox keeps what was created across a
restart, in the state directory; the CLI commands read the same data (the same settings);
``sandbox --reset`` starts afresh; ``export --url`` reads through a running gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.flow.clients import hash_token, new_token
from tests.conftest import GatewayProcess

pytestmark = pytest.mark.slow


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A CLI command as a user runs it from the same directory: only the defaults."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    full_env.update({"CIVI_GATEWAY_SECRETS_DIR": str(cwd / "none"), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _create(url: str, last_name: str) -> int:
    created = httpx.post(
        f"{url}/v4/Contact/create",
        timeout=10,
        json={"contact_type": "Individual", "first_name": "Ada", "last_name": last_name},
    )
    assert created.status_code == 200, created.text
    return created.json()[0]["id"]


def _get(url: str, cid: int) -> list:
    return httpx.post(
        f"{url}/v4/Contact/get",
        timeout=10,
        json={"select": ["id", "display_name"], "where": [["id", "=", cid]]},
    ).json()


def test_created_data_survives_a_restart_and_the_cli_sees_it(tmp_path: Path):
    first = GatewayProcess({}, tmp_path).wait_ready()
    try:
        cid = _create(first.url, "Lovelace")
        assert cid == 203  # contacts 1 and 2, then 200 demo contacts
    finally:
        log = first.stop()
    db = tmp_path / ".civicrm-gateway" / "sandbox.sqlite"
    assert db.is_file()
    assert f"sandbox data in {db}" in log

    # The CLI, run from the same directory with the same (default) settings, sees the contact.
    exported = _cli(
        tmp_path,
        "export",
        "Contact",
        "--select",
        "id,display_name",
        "--where",
        '[["last_name","=","Lovelace"]]',
    )
    assert exported.returncode == 0, exported.stderr
    assert [orjson.loads(line) for line in exported.stdout.splitlines()] == [
        {"id": 203, "display_name": "Ada Lovelace"}
    ]
    assert exported.stderr == "exported 1 row\n"
    checked = _cli(tmp_path, "check")
    assert checked.stdout == "OK   sandbox backend: reachable, credentials accepted\n"

    second = GatewayProcess({}, tmp_path).wait_ready()
    try:
        assert _get(second.url, cid) == [{"id": 203, "display_name": "Ada Lovelace"}]
        assert _create(second.url, "Byron") == 204
    finally:
        second.stop()

    reset = _cli(tmp_path, "sandbox", "--reset", "--demo", "5")
    assert reset.returncode == 0, reset.stderr
    assert reset.stderr == f"sandbox database reset: {db} (5 demo contacts)\n"
    third = GatewayProcess({}, tmp_path).wait_ready()
    try:
        assert _get(third.url, cid) == []
        assert _create(third.url, "Lovelace") == 8  # 2 base contacts, 5 demo, then this one
    finally:
        third.stop()


def test_state_dir_setting_moves_the_data_and_memory_keeps_none(tmp_path: Path):
    state = tmp_path / "elsewhere"
    gw = GatewayProcess(
        {"CIVI_GATEWAY_STATE_DIR": str(state), "CIVI_GATEWAY_SANDBOX_DEMO": "0"}, tmp_path
    ).wait_ready()
    try:
        assert _create(gw.url, "Lovelace") == 3
    finally:
        gw.stop()
    assert (state / "sandbox.sqlite").is_file()
    assert not (tmp_path / ".civicrm-gateway").exists()

    memory = GatewayProcess(
        {"CIVI_GATEWAY_SANDBOX_DB": ":memory:", "CIVI_GATEWAY_SANDBOX_DEMO": "0"}, tmp_path
    ).wait_ready()
    try:
        _create(memory.url, "Lovelace")
    finally:
        log = memory.stop()
    assert "sandbox data in memory: lost when the process stops" in log
    # no sandbox data on disk; the audit trail of the write is kept all the same (docs/audit.md)
    assert [p.name for p in (tmp_path / ".civicrm-gateway").iterdir()] == ["audit.sqlite"]
    refused = _cli(tmp_path, "sandbox", "--reset", env={"CIVI_GATEWAY_SANDBOX_DB": ":memory:"})
    assert refused.returncode == 2
    assert "there is nothing to reset" in refused.stderr


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _cli(tmp_path, "export", "Contact", env={"CIVI_GATEWAY_STATE_DIR": str(blocker / "state")})
    assert done.returncode == 2
    assert "cannot create the sandbox database" in done.stderr
    assert "CIVI_GATEWAY_STATE_DIR" in done.stderr and "Traceback" not in done.stderr


def test_export_through_a_running_gateway_with_a_token(tmp_path: Path):
    token = new_token()
    gw = GatewayProcess(
        {
            "CIVI_GATEWAY_SANDBOX_DEMO": "30",
            "CIVI_GATEWAY_CLIENT_TOKENS": f"reporting:sha256:{hash_token(token)}",
        },
        tmp_path,
    ).wait_ready()
    other = tmp_path / "elsewhere"  # another directory, as on another machine: no shared state
    other.mkdir()
    try:
        args = (
            "export",
            "Contact",
            "--url",
            gw.url,
            "--select",
            "id,display_name",
            "--where",
            '[["id","<",6]]',
        )
        by_env = _cli(other, *args, env={"CIVI_GATEWAY_TOKEN": token})
        assert by_env.returncode == 0, by_env.stderr
        assert [orjson.loads(line)["id"] for line in by_env.stdout.splitlines()] == [1, 2, 3, 4, 5]
        assert by_env.stderr == "exported 5 rows\n"

        (other / "token").write_text(token + "\n")
        as_csv = _cli(other, *args, "--token-file", "token", "-o", "five.csv")
        assert as_csv.returncode == 0, as_csv.stderr
        lines = (other / "five.csv").read_text().splitlines()
        assert lines[:3] == ["id,display_name", "1,Default Organization", "2,Standalone Admin"]
        assert len(lines) == 6 and as_csv.stderr == "exported 5 rows to five.csv\n"

        refused = _cli(other, *args)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "civicrm-gateway export: Authentication required: Send 'Authorization: Bearer "
            "<token>'. (the CLI sends CIVI_GATEWAY_TOKEN, or the --token-file)"
        )
    finally:
        log = gw.stop()
    assert token not in log
    assert not (other / ".civicrm-gateway").exists()


def test_a_database_from_another_schema_is_refused_until_reset(tmp_path: Path):
    import sqlite3

    assert _cli(tmp_path, "sandbox", "--reset", "--demo", "0").returncode == 0
    db = tmp_path / ".civicrm-gateway" / "sandbox.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 12345")  # as if made by a gateway with other tables
    refused = _cli(tmp_path, "export", "Contact")
    assert refused.returncode == 2
    assert refused.stderr == (
        f"civicrm-gateway: the sandbox database {db} was made by another version of the gateway "
        "(its tables differ): 'civicrm-gateway sandbox --reset' starts afresh\n"
    )
    assert _cli(tmp_path, "sandbox", "--reset", "--demo", "0").returncode == 0
    exported = _cli(tmp_path, "export", "Contact", "--select", "id")
    assert exported.returncode == 0 and exported.stdout == '{"id":1}\n{"id":2}\n'
