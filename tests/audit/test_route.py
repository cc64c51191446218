"""GET /audit over HTTP: who may read which records (policy audit = own / all / none, and the
operator on loopback without tokens), filters, paging, and its OpenAPI description."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.settings import Settings
from gateway.web.app import create_app
from tests.audit.helpers import (
    ADMIN,
    OTHER,
    READER,
    WRITER,
    audited_gateway,
    auth,
    trail,
)


async def _create(gw: httpx.AsyncClient, token: str, name: str) -> int:
    answer = await gw.post(
        "/v4/Contact/create",
        headers=auth(token),
        json={"values": {"contact_type": "Individual", "first_name": name}},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()[0]["id"]


async def test_own_all_and_none(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        mine = await _create(gw, WRITER, "Mine")
        theirs = await _create(gw, OTHER, "Theirs")
        own = await trail(gw, WRITER)
        everything = await trail(gw, ADMIN)
        other_own = await trail(gw, OTHER)
        asking_for_theirs = await gw.get("/audit", params={"client": "other"}, headers=auth(WRITER))
        by_id_of_theirs = await trail(gw, WRITER, entity="Contact", id=theirs)
        reader = await gw.get("/audit", headers=auth(READER))
        nobody = await gw.get("/audit")
    assert [(r["client"], r["ids"]) for r in own] == [("writer", [mine])]
    assert [(r["client"], r["ids"]) for r in other_own] == [("other", [theirs])]
    assert [(r["client"], r["ids"]) for r in everything] == [("other", [theirs]), ("writer", [mine])]
    # A cannot read B's records: not by naming B, not by B's record ids.
    assert asking_for_theirs.status_code == 403
    assert asking_for_theirs.json()["type"] == "/problems/gateway-policy-denied"
    assert by_id_of_theirs == []
    assert reader.status_code == 403
    assert reader.json()["type"] == "/problems/gateway-policy-denied"
    assert nobody.status_code == 401
    assert nobody.json()["type"] == "/problems/unauthenticated"


async def test_filters_and_paging(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        ids = [await _create(gw, WRITER, f"P{i}") for i in range(5)]
        refused = await gw.post("/v4/Contact/create", headers=auth(READER), json={})
        assert refused.status_code == 403
        admin_filter = await trail(gw, ADMIN, client="writer", action="create")
        by_id = await trail(gw, ADMIN, entity="contact", id=ids[2])
        denied = await trail(gw, ADMIN, outcome="denied")
        ok = await trail(gw, ADMIN, outcome="ok")
        future = await trail(gw, ADMIN, since="2999-01-01")
        past = await trail(gw, ADMIN, until="2000-01-01T00:00:00+02:00")
        today = await trail(gw, ADMIN, since=ok[-1]["time"][:10])
        pages: list[list[int]] = []
        cursor: str | None = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = await gw.get("/audit", params=params, headers=auth(ADMIN))
            assert page.status_code == 200
            pages.append([r["seq"] for r in page.json()])
            cursor = page.headers.get("x-next-cursor")
            if cursor is None:
                break
        bad_time = await gw.get("/audit", params={"since": "yesterday"}, headers=auth(ADMIN))
        bad_limit = await gw.get("/audit", params={"limit": 0}, headers=auth(ADMIN))
    assert [r["ids"] for r in admin_filter] == [[i] for i in reversed(ids)]
    assert [r["ids"] for r in by_id] == [[ids[2]]]
    assert [(r["client"], r["status"]) for r in denied] == [("reader", 403)]
    assert len(ok) == 5 and future == [] and past == []
    assert len(today) == 6
    assert pages == [[6, 5], [4, 3], [2, 1]]
    assert bad_time.status_code == 400 and "since" in bad_time.json()["detail"]
    assert bad_limit.status_code == 400
    assert bad_limit.json()["type"] == "/problems/invalid-request"


async def _tokenless(
    tmp_path: Path, peer: str, headers: dict[str, str] | None = None, **overrides: object
) -> tuple[int, int]:
    """A write and a GET /audit from ``peer`` on a gateway without client tokens."""
    settings = Settings(backend="sandbox", sandbox_demo=0, state_dir=tmp_path / peer, **overrides)  # type: ignore[arg-type]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw:
            await gw.post(
                "/v4/Contact/create", json={"values": {"contact_type": "Individual", "first_name": "Op"}}
            )
            listing = await gw.get("/audit", headers=headers or {})
            return listing.status_code, len(listing.json()) if listing.status_code == 200 else -1


async def test_tokenless_only_the_operator_on_loopback_reads(tmp_path: Path) -> None:
    assert await _tokenless(tmp_path, "127.0.0.1") == (200, 1)
    # through a reverse proxy on the same host: not the operator (and not let in at all)
    status, _ = await _tokenless(tmp_path, "::1", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 401
    # anyone let in by allow_anonymous may call the API, never read the trail
    status, _ = await _tokenless(tmp_path, "192.0.2.7", allow_anonymous=True, allowed_hosts=["localhost"])
    assert status == 403
    status, _ = await _tokenless(
        tmp_path, "127.0.0.2", {"Forwarded": "for=203.0.113.9"}, allow_anonymous=True
    )
    assert status == 403


async def test_openapi_documents_the_route(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        doc = (await gw.get("/openapi.json", headers=auth(ADMIN))).json()
    operation = doc["paths"]["/audit"]["get"]
    params = {p["name"] for p in operation["parameters"]}
    assert params == {"entity", "id", "client", "action", "since", "until", "outcome", "limit", "cursor"}
    ok = operation["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["type"] == "array"
    assert "X-Next-Cursor" in ok["headers"]
    assert {"401", "403"} <= set(operation["responses"])
