"""The change feed on the sandbox, through HTTP: cursors, deletions, the policy, limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.settings import Settings
from tests.conftest import assert_problem, gateway_client

SMALL, OTHER = "cgw_small-client-token-0123456789", "cgw_other-client-token-0123456789"


def clients_file(tmp_path: Path) -> Path:
    """A client with the smallest useful policy (Contact.get, three fields) and another."""
    path = tmp_path / "clients.toml"
    digest = {t: hashlib.sha256(t.encode()).hexdigest() for t in (SMALL, OTHER)}
    path.write_text(
        f"""
[clients.small]
token_sha256 = "{digest[SMALL]}"
allow = ["v4:Contact.get"]
read_only = true
max_limit = 5
fields = {{ Contact = ["id", "display_name", "modified_date"] }}

[clients.other]
token_sha256 = "{digest[OTHER]}"
"""
    )
    return path


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        backend="sandbox",
        sandbox_demo=3,
        sandbox_db=str(tmp_path / "sb.sqlite"),
        state_dir=tmp_path / "state",
        changes_delete_scan_seconds=0,
        **extra,
    )


async def changes(gw: httpx.AsyncClient, cursor: str | None = None, **params: Any) -> tuple[list[Any], str]:
    body = {**params, **({"cursor": cursor} if cursor else {})}
    response = await gw.post("/v4/Contact/changes", json=body)
    assert response.status_code == 200, response.text
    return response.json(), response.headers["X-Next-Cursor"]


async def test_created_updated_deleted_each_reported_once(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path)) as gw:
        first, cursor = await changes(gw, select=["display_name"])
        assert first == []
        made = await gw.post(
            "/v4/Contact/create", json={"values": {"first_name": "Ann", "last_name": "Feed"}}
        )
        new_id = made.json()[0]["id"]
        for name in ("Anna", "Anne"):  # saved twice between polls: reported once, as it now is
            await gw.post(
                "/v4/Contact/update", json={"where": [["id", "=", new_id]], "values": {"first_name": name}}
            )
        page, cursor = await changes(gw, cursor)
        assert [(r["id"], r["display_name"], r["_change"]["type"]) for r in page] == [
            (new_id, "Anne Feed", "created")
        ]
        again, cursor = await changes(gw, cursor)
        assert again == []  # the overlap window re-read reports nothing twice
        old = 1
        await gw.post(
            "/v4/Contact/update",
            json={"where": [["id", "=", old]], "values": {"organization_name": "Renamed"}},
        )
        await gw.post("/v4/Contact/delete", json={"where": [["id", "=", new_id]], "useTrash": False})
        page, cursor = await changes(gw, cursor)
        assert [(r["id"], r["_change"]["type"]) for r in page] == [(old, "updated"), (new_id, "deleted")]
        assert set(page[1]) == {"id", "_change"}
        # GET with the same params in the query answers the same way
        response = await gw.get("/v4/Contact/changes", params={"cursor": cursor, "select": "display_name"})
        assert response.status_code == 200 and response.json() == []


async def test_a_cursor_resumes_after_each_change_and_pages_by_limit(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path)) as gw:
        _, start = await changes(gw)
        for n in range(7):  # all in the same second or two: the keyset pages through them
            await gw.post("/v4/Contact/create", json={"values": {"first_name": f"P{n}", "last_name": "Page"}})
        seen: list[int] = []
        cursor = start
        for _ in range(5):
            page, cursor = await changes(gw, cursor, limit=3)
            seen += [r["id"] for r in page]
        assert len(seen) == 7 == len(set(seen))
        # resuming from the third change's cursor re-reads the four after it
        page, _ = await changes(gw, start, limit=3)
        rest, _ = await changes(gw, page[2]["_change"]["cursor"], limit=10)
        assert [r["id"] for r in rest] == seen[3:]


async def test_cursors_cannot_be_forged_or_moved(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path, clients_file=clients_file(tmp_path)), token=SMALL) as gw:
        response = await gw.post("/v4/Contact/changes", json={"select": ["display_name"]})
        assert response.status_code == 200, response.text
        cursor = response.headers["X-Next-Cursor"]
        body, mac = cursor.split(".")
        payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload[3] = "Activity"  # another entity, same signature
        forged = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode() + "." + mac
        for bad in (forged, "not-a-cursor", cursor[:-2] + "AA", "x" * 5000):
            problem = assert_problem(
                await gw.post("/v4/Contact/changes", json={"cursor": bad}), 400, "invalid-request"
            )
            assert "cursor" in problem["detail"]
        # the cursor names Contact: used on another entity's feed it is refused
        assert_problem(await gw.post("/v4/Activity/changes", json={"cursor": cursor}), 400, "invalid-request")
        # its select is part of the feed: it cannot widen it past the client's field list
        assert_problem(
            await gw.post("/v4/Contact/changes", json={"cursor": cursor, "select": ["email_primary.email"]}),
            400,
            "invalid-request",
        )
        assert_problem(
            await gw.post("/v4/Contact/changes", json={"select": ["birth_date"]}),
            403,
            "gateway-policy-denied",
        )
        assert_problem(await gw.post("/v4/Activity/changes", json={}), 403, "gateway-policy-denied")
        assert_problem(
            await gw.post("/v4/Contact/changes", json={"cursor": cursor, "wait": 9999}),
            400,
            "invalid-request",
        )
        assert_problem(await gw.post("/webhooks", json={}), 404, "route-not-found")  # webhooks off
    # another client cannot use this client's cursor
    async with gateway_client(settings(tmp_path, clients_file=clients_file(tmp_path)), token=OTHER) as gw:
        assert_problem(await gw.post("/v4/Contact/changes", json={"cursor": cursor}), 400, "invalid-request")


async def test_long_polls_are_bounded_and_woken_by_writes(tmp_path: Path) -> None:
    async with gateway_client(
        settings(tmp_path, changes_max_waits_per_client=1, changes_poll_interval=30)
    ) as gw:
        _, cursor = await changes(gw)
        waiting = asyncio.create_task(gw.post("/v4/Contact/changes", json={"cursor": cursor, "wait": 25}))
        await asyncio.sleep(0.5)
        # the one slot this client has is taken: a second long-poll is refused at once
        problem = assert_problem(
            await gw.post("/v4/Contact/changes", json={"cursor": cursor, "wait": 5}), 429, "rate-limited"
        )
        assert "waiting" in problem["detail"]
        # a write through the gateway wakes the waiting poll (it sleeps 30 s between looks)
        await gw.post("/v4/Contact/create", json={"values": {"first_name": "Wake", "last_name": "Up"}})
        response = await asyncio.wait_for(waiting, 20)
        assert [r["display_name"] for r in response.json()] == ["Wake Up"]


async def test_event_stream_resumes_with_last_event_id(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path, changes_sse_seconds=1, changes_poll_interval=0.2)) as gw:
        _, cursor = await changes(gw)
        await gw.post("/v4/Contact/create", json={"values": {"first_name": "Sse", "last_name": "One"}})
        headers = {"Accept": "text/event-stream", "Last-Event-ID": cursor}
        response = await gw.post("/v4/Contact/changes", json={}, headers=headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        events = [e for e in response.text.split("\n\n") if e.startswith("id:")]
        assert len(events) == 1 and "event: created" in events[0] and "Sse One" in events[0]
        last = events[0].split("\n")[0].removeprefix("id: ")
        again = await gw.post("/v4/Contact/changes", json={}, headers={**headers, "Last-Event-ID": last})
        assert [e for e in again.text.split("\n\n") if e.startswith("id:")] == []


async def test_entities_without_modified_date_compare_snapshots(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path)) as gw:
        response = await gw.post("/v4/Email/changes", json={"select": ["email", "contact_id"]})
        assert response.headers["X-Changes-Mode"] == "snapshot"
        cursor = response.headers["X-Next-Cursor"]
        made = await gw.post("/v4/Email/create", json={"values": {"contact_id": 1, "email": "s@example.org"}})
        email_id = made.json()[0]["id"]
        response = await gw.post("/v4/Email/changes", json={"cursor": cursor})
        assert [(r["id"], r["email"], r["_change"]["type"]) for r in response.json()] == [
            (email_id, "s@example.org", "created")
        ]


async def test_the_feed_route_is_documented_and_not_a_civicrm_action(tmp_path: Path) -> None:
    async with gateway_client(settings(tmp_path)) as gw:
        document = (await gw.get("/openapi.json")).json()
        assert "/v4/{entity}/changes" in document["paths"]
        assert "/webhooks" in document["paths"]
