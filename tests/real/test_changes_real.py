"""The change feed on the real CiviCRM 5.77: changes made directly in CiviCRM (REST, and SQL
in a transaction held open across a poll) are reported after the cursor."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx

from gateway.settings import Settings
from tests.conftest import gateway_client
from tests.real.kit import require_kit


def civicrm(kit: Any, entity: str, action: str, params: dict[str, Any]) -> Any:
    """A call straight to CiviCRM's REST API, not through the gateway."""
    response = httpx.post(
        f"{kit.url}/civicrm/ajax/api4/{entity}/{action}",
        headers={"X-Civi-Auth": f"Bearer {kit.admin_key}", "X-Requested-With": "XMLHttpRequest"},
        data={"params": __import__("json").dumps(params)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["values"]


async def poll(gw: httpx.AsyncClient, cursor: str) -> tuple[list[Any], str]:
    response = await gw.post("/v4/Contact/changes", json={"cursor": cursor, "limit": 50})
    assert response.status_code == 200, response.text
    return response.json(), response.headers["X-Next-Cursor"]


def settings(kit: Any, tmp_path: Path) -> Settings:
    return Settings(
        backend="http",
        http_url=kit.url,
        http_api_key=kit.admin_key,
        state_dir=tmp_path / "state",
        changes_delete_scan_seconds=0,
    )


async def test_direct_changes_in_civicrm_are_reported(tmp_path: Path) -> None:
    kit = require_kit()
    async with gateway_client(settings(kit, tmp_path)) as gw:
        start = await gw.post("/v4/Contact/changes", json={"where": [["last_name", "=", "FeedReal"]]})
        cursor = start.headers["X-Next-Cursor"]
        [made] = civicrm(kit, "Contact", "create", {"values": {"first_name": "Ada", "last_name": "FeedReal"}})
        page, cursor = await poll(gw, cursor)
        assert [(r["id"], r["_change"]["type"]) for r in page] == [(made["id"], "created")]
        await asyncio.sleep(1.1)  # one-second dates: the email's trigger stamps the contact a second later
        civicrm(kit, "Email", "create", {"values": {"contact_id": made["id"], "email": "ada@example.org"}})
        page, cursor = await poll(gw, cursor)
        assert [(r["id"], r["_change"]["type"]) for r in page] == [(made["id"], "updated")]
        civicrm(kit, "Contact", "delete", {"where": [["id", "=", made["id"]]]})  # to the trash
        page, cursor = await poll(gw, cursor)
        assert [(r["id"], r["_change"]["type"]) for r in page] == [(made["id"], "deleted")]
        civicrm(kit, "Contact", "delete", {"where": [["id", "=", made["id"]]], "useTrash": False})


async def test_a_transaction_held_open_across_a_poll_is_reported(tmp_path: Path) -> None:
    kit = require_kit()
    [held] = civicrm(kit, "Contact", "create", {"values": {"first_name": "Held", "last_name": "FeedTx"}})
    [other] = civicrm(kit, "Contact", "create", {"values": {"first_name": "Other", "last_name": "FeedTx"}})
    where = [["last_name", "=", "FeedTx"]]
    notes = (kit.prefix / "NOTES.md").read_text()
    dsn = notes.split("mysql://", 1)[1].split()[0]
    user, _, rest = dsn.partition(":")
    password, _, hostdb = rest.partition("@")
    host, _, db = hostdb.partition("/")
    mysql = subprocess.Popen(  # noqa: ASYNC220 (held open across the test)
        [
            "mysql",
            "-h",
            host.split(":")[0],
            "-P",
            host.split(":")[1] if ":" in host else "3306",
            "-u",
            user,
            f"-p{password}",
            db,
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        async with gateway_client(settings(kit, tmp_path)) as gw:
            start = await gw.post("/v4/Contact/changes", json={"where": where})
            cursor = start.headers["X-Next-Cursor"]
            await asyncio.sleep(1.1)
            assert mysql.stdin is not None
            mysql.stdin.write(
                f"BEGIN; UPDATE civicrm_contact SET nick_name = 'held' WHERE id = {held['id']};\n"
            )
            mysql.stdin.flush()
            await asyncio.sleep(1.5)  # the held row is stamped now; a later save passes the cursor beyond it
            civicrm(
                kit, "Contact", "update", {"where": [["id", "=", other["id"]]], "values": {"nick_name": "o"}}
            )
            page, cursor = await poll(gw, cursor)
            assert [r["id"] for r in page] == [other["id"]]
            mysql.stdin.write("COMMIT;\n")
            mysql.stdin.flush()
            await asyncio.sleep(0.5)
            page, cursor = await poll(gw, cursor)
            assert [(r["id"], r["_change"]["type"]) for r in page] == [(held["id"], "updated")]
            page, cursor = await poll(gw, cursor)
            assert page == []
    finally:
        if mysql.stdin is not None:
            mysql.stdin.close()
        mysql.wait(timeout=30)
        civicrm(kit, "Contact", "delete", {"where": where, "useTrash": False})
