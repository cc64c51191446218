"""A plain unbounded APIv4 get larger than one page is streamed as a JSON array walked by id;
smaller answers, limited gets and unpageable ones are answered in one piece as before."""

from __future__ import annotations

import orjson
import pytest

from gateway.sandbox.bulk import seed_contacts
from gateway.settings import Settings
from tests.conftest import ADMIN_KEY, gateway_client, http_settings

PAGE = 7


def sandbox_settings(**extra) -> Settings:
    return Settings(backend="sandbox", sandbox_demo=0, export_page_size=PAGE, **extra)


async def all_ids(gw) -> int:
    response = await gw.post("/v4/Contact/get", json={"select": ["row_count"]})
    return int(response.headers["x-total-count"])


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_large_unbounded_get_streams_every_record_once(concurrency):
    async with gateway_client(sandbox_settings(client_concurrency=concurrency)) as gw:
        await gw.post(
            "/v4/Contact/save",
            json={"records": [{"contact_type": "Individual", "first_name": f"P{i}"} for i in range(40)]},
        )
        total = await all_ids(gw)
        assert total == 42
        response = await gw.post("/v4/Contact/get", json={})
        assert response.status_code == 200
        assert response.headers["x-streamed"] == "true"
        assert "x-result-count" not in response.headers
        records = orjson.loads(response.content)
        ids = [r["id"] for r in records]
        assert ids == sorted(set(ids)) and len(ids) == total
        assert all("api_key" not in r for r in records)  # stripped on every page


async def test_streamed_without_id_in_select_and_over_get():
    async with gateway_client(sandbox_settings()) as gw:
        await gw.post(
            "/v4/Contact/save",
            json={"records": [{"contact_type": "Individual", "first_name": f"Q{i}"} for i in range(20)]},
        )
        response = await gw.post("/v4/Contact/get", json={"select": ["first_name"]})
        assert response.headers.get("x-streamed") == "true"
        names = [r for r in orjson.loads(response.content)]
        assert all(list(r) == ["first_name"] for r in names) and len(names) == 22
        over_get = await gw.get("/v4/Contact/get", params={"select": "first_name"})
        assert orjson.loads(over_get.content) == names


async def test_small_limited_and_ordered_gets_are_answered_whole():
    async with gateway_client(sandbox_settings()) as gw:
        small = await gw.post("/v4/Contact/get", json={"select": ["id"]})
        assert "x-streamed" not in small.headers and small.headers["x-result-count"] == "2"
        # As CiviCRM ordered it (the capture: [2, 1]), not re-sorted by the gateway.
        assert [r["id"] for r in small.json()] == [2, 1]
        await gw.post(
            "/v4/Contact/save",
            json={"records": [{"contact_type": "Individual", "first_name": f"R{i}"} for i in range(20)]},
        )
        limited = await gw.post("/v4/Contact/get", json={"select": ["id"], "limit": 15})
        assert "x-streamed" not in limited.headers and len(limited.json()) == 15
        ordered = await gw.post(
            "/v4/Contact/get", json={"select": ["id", "first_name"], "orderBy": {"first_name": "DESC"}}
        )
        assert "x-streamed" not in ordered.headers and len(ordered.json()) == 22
        settings = await gw.post("/v4/Setting/get", json={"select": ["lcMessages"]})
        assert settings.status_code == 200 and "x-streamed" not in settings.headers


async def test_policy_cap_means_no_streaming(tmp_path):
    clients = tmp_path / "clients.toml"
    from gateway.flow.clients import hash_token

    clients.write_text(
        f'[clients.r]\ntoken_sha256 = "{hash_token("cgw_r-0123456789abcdef")}"\nmax_limit = 10\n'
    )
    async with gateway_client(sandbox_settings(clients_file=clients)) as gw:
        auth = {"Authorization": "Bearer cgw_r-0123456789abcdef"}
        await gw.post(
            "/v4/Contact/save",
            headers=auth,
            json={"records": [{"contact_type": "Individual", "first_name": f"S{i}"} for i in range(20)]},
        )
        capped = await gw.post("/v4/Contact/get", headers=auth, json={"select": ["id"]})
        assert "x-streamed" not in capped.headers and len(capped.json()) == 10


async def test_streams_through_the_http_backend(upstream):
    seed_contacts(upstream.sandbox, 50)
    settings = http_settings(upstream.url, http_api_key=ADMIN_KEY, export_page_size=PAGE)
    async with gateway_client(settings) as gw:
        response = await gw.post("/v4/Contact/get", json={"select": ["id", "display_name"]})
        assert response.headers.get("x-streamed") == "true"
        records = orjson.loads(response.content)
        assert len(records) == 52 and [r["id"] for r in records] == sorted(r["id"] for r in records)


async def test_entities_without_ids_fall_back_to_one_piece():
    async with gateway_client(sandbox_settings()) as gw:
        for body in ({}, {"select": ["name", "title"]}):
            response = await gw.post("/v4/Entity/get", json=body)
            assert response.status_code == 200, response.text
            assert "x-streamed" not in response.headers
            assert len(response.json()) > PAGE
