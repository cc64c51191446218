"""Batch calls and streaming exports, through the HTTP backend (real loopback upstream) and the
embedded sandbox."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import orjson
import pytest

from gateway.flow.clients import hash_token
from gateway.sandbox.bulk import seed_contacts
from gateway.settings import Settings
from tests.conftest import ADMIN_KEY, gateway_client, http_settings

READER = "cgw_reader-token-0123456789abcdef"
FULL = "cgw_full-token-fedcba9876543210"


@pytest.fixture
def clients_file(tmp_path):
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[clients.reader]
token_sha256 = "{hash_token(READER)}"
allow = ["v4:Contact.get*", "v4:*.getFields"]
read_only = true
max_limit = 25
rate_limit = "10/minute"

[clients.full]
token_sha256 = "{hash_token(FULL)}"
""")
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- batch -------------------------------------------------------------------------------------


async def test_batch_uses_one_multicall_request(faulty_upstream):
    async with gateway_client(http_settings(faulty_upstream.url)) as gw:
        response = await gw.post(
            "/v4/batch",
            json={
                "me": ["Contact", "get", {"select": ["id", "display_name"], "where": [["id", "=", 2]]}],
                "simple": ["Contact", "get", {"id": 2, "select": ["id"]}],  # simple form, normalised
                "count": ["Contact", "get", {"select": ["row_count"]}],
                "new": ["Contact", "create", {"contact_type": "Individual", "first_name": "Batchy"}],
                "bad": ["Contact", "get", {"where": [["nope", "=", 1]]}],
                "missing": ["Nope", "get"],
            },
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert list(answer) == ["me", "simple", "count", "new", "bad", "missing"]
        assert answer["me"] == {"status": 200, "values": [{"id": 2, "display_name": "Standalone Admin"}]}
        assert answer["simple"] == {"status": 200, "values": [{"id": 2}]}
        assert answer["count"]["total"] >= 2
        assert answer["new"]["status"] == 200 and answer["new"]["values"][0]["first_name"] == "Batchy"
        assert answer["bad"]["status"] == 400
        assert answer["bad"]["error"]["type"] == "/problems/unknown-field"
        assert answer["missing"]["status"] == 404
    assert faulty_upstream.faults.paths == ["/civicrm/ajax/api4"]  # one multi-call request
    calls = orjson.loads(faulty_upstream.faults.seen[0]["calls"])
    assert calls["simple"] == ["Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}]


async def test_batch_applies_each_clients_policy(faulty_upstream, clients_file):
    settings = http_settings(faulty_upstream.url, clients_file=clients_file)
    async with gateway_client(settings) as gw:
        response = await gw.post(
            "/v4/batch",
            headers=bearer(READER),
            json={
                "read": ["Contact", "get", {"select": ["id"]}],
                "write": ["Contact", "create", {"contact_type": "Individual"}],
                "other": ["Activity", "get", {}],
                "key": ["Contact", "get", {"select": ["api_key"]}],
                "chain": ["Contact", "get", {"chain": {"x": ["Contact", "delete", {}]}}],
            },
        )
        answer = response.json()
        assert answer["read"]["status"] == 200
        assert len(answer["read"]["values"]) <= 25  # the client's row cap
        for name in ("write", "other", "key", "chain"):
            assert answer[name]["status"] == 403, name
            assert answer[name]["error"]["type"] == "/problems/gateway-policy-denied"
        calls = orjson.loads(faulty_upstream.faults.seen[0]["calls"])
        assert list(calls) == ["read"]  # refused calls never left the gateway
        assert calls["read"][2]["limit"] == 25
        # A batch counts each of its calls against the rate limit (10/minute; 1 used).
        big = {f"c{i}": ["Contact", "get", {"select": ["id"], "limit": 1}] for i in range(10)}
        assert (await gw.post("/v4/batch", headers=bearer(READER), json=big)).status_code == 429
        assert (await gw.post("/v4/batch", json={"a": ["Contact", "get"]})).status_code == 401


async def test_batch_refuses_malformed_and_oversized(gw_sandbox):
    assert (await gw_sandbox.post("/v4/batch", json={})).status_code == 400
    assert (await gw_sandbox.post("/v4/batch", json={"a": "Contact.get"})).status_code == 400
    assert (await gw_sandbox.post("/v4/batch", json={"a": ["Contact", "get", []]})).status_code == 400
    assert (await gw_sandbox.post("/v4/batch", json={"bad name": ["Contact", "get"]})).status_code == 400
    per_call = (
        await gw_sandbox.post("/v4/batch", json={"a": ["Con tact", "get"], "b": ["Contact", "getcount"]})
    ).json()
    assert per_call["a"]["status"] == 400 and per_call["a"]["error"]["type"] == "/problems/invalid-request"
    assert per_call["b"]["status"] == 404  # no APIv4 getcount
    many = {f"c{i}": ["Contact", "get"] for i in range(101)}
    assert (await gw_sandbox.post("/v4/batch", json=many)).status_code == 400
    assert (
        await gw_sandbox.post("/v4/batch", content=b"[1]", headers={"Content-Type": "application/json"})
    ).status_code == 400


async def test_batch_on_the_sandbox_and_v3(gw_sandbox):
    response = await gw_sandbox.post(
        "/v4/batch",
        json={
            f"c{i}": ["Contact", "get", {"select": ["id"], "where": [["id", "=", 1 + i % 2]]}]
            for i in range(20)
        },
    )
    answer = response.json()
    assert all(answer[f"c{i}"] == {"status": 200, "values": [{"id": 1 + i % 2}]} for i in range(20))
    v3 = (
        await gw_sandbox.post(
            "/v3/batch",
            json={
                "n": ["Contact", "getcount", {}],
                "one": ["Contact", "getsingle", {"id": 2}],
                "none": ["Contact", "getsingle", {"id": 999}],
            },
        )
    ).json()
    assert v3["n"]["status"] == 200 and v3["n"]["values"] >= 2
    assert v3["one"]["values"]["id"] in ("2", 2)
    assert v3["none"]["status"] == 404


# --- export ------------------------------------------------------------------------------------


async def test_ndjson_export_pages_by_keyset(faulty_upstream):
    _first, last = seed_contacts(faulty_upstream.sandbox, 2345)
    settings = http_settings(faulty_upstream.url, export_page_size=500)
    async with gateway_client(settings) as gw:
        async with gw.stream(
            "GET", "/v4/Contact/get", params={"format": "ndjson", "select": "id,display_name"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson"
            rows = [orjson.loads(line) async for line in response.aiter_lines() if line]
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] == last and len(ids) == 2345 + 2
    assert set(rows[5]) == {"id", "display_name"}
    pages = [orjson.loads(seen["params"]) for seen in faulty_upstream.faults.seen]
    assert len(pages) == 5 and all(p["limit"] == 500 for p in pages)
    assert pages[1]["where"] == [["id", ">", ids[499]]] and pages[1]["orderBy"] == {"id": "ASC"}


async def test_csv_export_by_accept_with_offset_paging_and_limit(faulty_upstream):
    seed_contacts(faulty_upstream.sandbox, 300)
    settings = http_settings(faulty_upstream.url, export_page_size=40)
    async with gateway_client(settings) as gw:
        response = await gw.post(
            "/v4/Contact/get",
            headers={"Accept": "text/csv"},
            json={
                "select": ["display_name", "sort_name"],
                "orderBy": {"sort_name": "DESC"},
                "limit": 130,
                "offset": 10,
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text)))
    # CiviCRM selects the id first whenever a select is given (round-2 samples)
    assert rows[0] == ["id", "display_name", "sort_name"]
    assert len(rows) == 131
    expected = faulty_upstream.sandbox.api4(
        "Contact",
        "get",
        {
            "select": ["display_name", "sort_name"],
            "orderBy": {"sort_name": "DESC", "id": "ASC"},
            "limit": 130,
            "offset": 10,
        },
    )["values"]
    assert rows[1:] == [[str(r["id"]), r["display_name"], r["sort_name"]] for r in expected]
    pages = [orjson.loads(seen["params"]) for seen in faulty_upstream.faults.seen]
    assert [p.get("offset") for p in pages] == [10, 50, 90, 130]
    assert [p["limit"] for p in pages] == [40, 40, 40, 10]


async def test_export_keeps_policy_and_strips_credentials(faulty_upstream, clients_file):
    seed_contacts(faulty_upstream.sandbox, 60)
    settings = http_settings(faulty_upstream.url, clients_file=clients_file, export_page_size=10)
    async with gateway_client(settings) as gw:
        capped = await gw.get("/v4/Contact/get", params={"format": "ndjson"}, headers=bearer(READER))
        assert capped.status_code == 200
        assert len(capped.text.splitlines()) == 25  # max_limit applies to the whole export
        denied = await gw.get("/v4/Activity/get", params={"format": "csv"}, headers=bearer(READER))
        assert denied.status_code == 403
        full = await gw.get("/v4/Contact/get", params={"format": "ndjson", "id": "2"}, headers=bearer(FULL))
        assert full.status_code == 200
        assert ADMIN_KEY not in full.text and "api_key" not in full.text
        bad = await gw.get(
            "/v4/Contact/get", params={"format": "csv", "where": '[["nope","=",1]]'}, headers=bearer(FULL)
        )
        assert bad.status_code == 400  # the first page fails before the stream starts
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert (
            await gw.get("/v3/Contact/get", params={"format": "csv"}, headers=bearer(FULL))
        ).status_code == 400
        # Accept is a preference: JSON for what cannot stream.
        counted = await gw.get("/v3/Contact/getcount", headers={**bearer(FULL), "Accept": "text/csv"})
        assert counted.status_code == 200 and counted.json() >= 60
        # A "format" field with another value is an ordinary filter.
        assert (
            await gw.get("/v4/Contact/get", params={"format": "x"}, headers=bearer(FULL))
        ).status_code == 400  # no such field


def test_export_command_writes_a_file(tmp_path):
    db = tmp_path / "crm.sqlite"
    from gateway.sandbox.database import open_sandbox

    sandbox = open_sandbox(str(db), 0)  # as `serve` makes it (stamped with its tables)
    seed_contacts(sandbox, 1500)
    sandbox.close()
    env = {
        "PATH": "/usr/bin:/bin",
        "CIVI_GATEWAY_SANDBOX_DB": str(db),
        "CIVI_GATEWAY_SECRETS_DIR": str(tmp_path / "none"),
    }
    out = tmp_path / "contacts.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "export",
            "Contact",
            "-o",
            str(out),
            "--select",
            "id,display_name",
            "--page-size",
            "400",
            "--progress",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "display_name"] and len(rows) == 1503
    assert "1502/1502 rows 100%" in result.stderr
    ndjson = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "Contact", "--where", '[["id","<",4]]', "--quiet"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert [orjson.loads(line)["id"] for line in ndjson.stdout.splitlines()] == [1, 2, 3]
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "Nope"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "Unknown entity" in bad.stderr


async def test_sandbox_backend_streams_too():
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=30, export_page_size=7)) as gw:
        lines = (await gw.get("/v4/Contact/get", headers={"Accept": "application/x-ndjson"})).text
        assert len(lines.splitlines()) == 32
