"""Idempotency-Key semantics through HTTP, on each store (memory, SQLite, Redis)."""

from __future__ import annotations

import httpx

from tests.idempotency.conftest import auth

CREATE = {"contact_type": "Individual", "first_name": "Ada", "last_name": "Keyed"}


async def count(gw: httpx.AsyncClient, last_name: str) -> int:
    r = await gw.post(
        "/v4/Contact/get",
        json={"where": [["last_name", "=", last_name]], "select": ["id"]},
        headers=auth("alpha"),
    )
    assert r.status_code == 200
    return len(r.json())


def problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == f"/problems/{slug}"
    return body


async def test_a_repeated_create_runs_once_and_replays_byte_for_byte(gw: httpx.AsyncClient) -> None:
    first = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "create-ada-1"))
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    again = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "create-ada-1"))
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert again.headers["x-result-count"] == "1"
    assert again.content == first.content
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert await count(gw, "Keyed") == 1


async def test_two_spellings_of_one_call_share_a_key(gw: httpx.AsyncClient) -> None:
    simple = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-spell"))
    native = await gw.post(
        "/v4/contact/Create",
        json={"values": dict(reversed(CREATE.items()))},
        headers=auth("alpha", "k-spell"),
    )
    assert native.status_code == 200
    assert native.headers["idempotent-replayed"] == "true"
    assert native.content == simple.content
    assert await count(gw, "Keyed") == 1


async def test_the_same_key_with_other_params_is_422(gw: httpx.AsyncClient) -> None:
    assert (
        await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-other"))
    ).status_code == 200
    r = await gw.post(
        "/v4/Contact/create", json={**CREATE, "first_name": "Bea"}, headers=auth("alpha", "k-other")
    )
    body = problem(r, 422, "idempotency-key-reused")
    assert body["title"] == "Idempotency-Key reused for another call"
    r = await gw.post(
        "/v4/Contact/update", json={"id": 1, "first_name": "Bea"}, headers=auth("alpha", "k-other")
    )
    problem(r, 422, "idempotency-key-reused")
    assert await count(gw, "Keyed") == 1


async def test_malformed_keys_are_400(gw: httpx.AsyncClient) -> None:
    for key in [b"", b"x" * 256, b"tab\there", "caf\u00e9".encode()]:
        r = await gw.post(
            "/v4/Contact/create", json=CREATE, headers={**auth("alpha"), "Idempotency-Key": key}
        )
        body = problem(r, 400, "invalid-request")
        assert body["detail"] == "Idempotency-Key must be 1 to 255 printable ASCII characters."
    ok = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "~" * 255))
    assert ok.status_code == 200
    assert await count(gw, "Keyed") == 1


async def test_reads_ignore_the_header(gw: httpx.AsyncClient) -> None:
    made = (await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha"))).json()[0]
    for _ in range(2):
        r = await gw.post(
            "/v4/Contact/get",
            json={"select": ["last_name"], "where": [["last_name", "=", "Keyed"]]},
            headers=auth("alpha", "k-read"),
        )
        assert r.status_code == 200
        assert "idempotent-replayed" not in r.headers
        assert r.json() == [{"id": made["id"], "last_name": "Keyed"}]
    get = await gw.get("/v4/Contact/get", params={"select": "id"}, headers=auth("alpha", "bad\tkey"))
    assert get.status_code == 200
    # The key was not claimed by the reads: a write with it runs.
    w = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-read"))
    assert w.status_code == 200
    assert "idempotent-replayed" not in w.headers
    assert await count(gw, "Keyed") == 2


async def test_a_civicrm_refusal_is_stored_and_replayed(gw: httpx.AsyncClient) -> None:
    # APIv3 create without contact_type: CiviCRM's own error, not the gateway's.
    params = {"first_name": "NoType"}
    first = await gw.post("/v3/Contact/create", json=params, headers=auth("alpha", "k-v3"))
    body = problem(first, 422, "civicrm-validation")
    assert body["civicrm"]["error_code"] == "mandatory_missing"
    again = await gw.post("/v3/Contact/create", json=params, headers=auth("alpha", "k-v3"))
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    assert again.content == first.content


async def test_v3_writes_are_covered(gw: httpx.AsyncClient) -> None:
    params = {"contact_type": "Individual", "first_name": "Vee", "last_name": "Keyed"}
    first = await gw.post("/v3/Contact/create", json=params, headers=auth("alpha", "k-v3-ok"))
    again = await gw.post("/v3/Contact/create", json=params, headers=auth("alpha", "k-v3-ok"))
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await count(gw, "Keyed") == 1


async def test_a_batch_with_a_write_runs_once(gw: httpx.AsyncClient) -> None:
    batch = {"made": ["Contact", "create", CREATE], "seen": ["Contact", "get", {"select": ["id"]}]}
    first = await gw.post("/v4/batch", json=batch, headers=auth("alpha", "k-batch"))
    assert first.status_code == 200
    assert first.json()["made"]["status"] == 200
    again = await gw.post("/v4/batch", json=batch, headers=auth("alpha", "k-batch"))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    other = await gw.post(
        "/v4/batch", json={**batch, "seen": ["Contact", "get", {}]}, headers=auth("alpha", "k-batch")
    )
    problem(other, 422, "idempotency-key-reused")
    assert await count(gw, "Keyed") == 1


async def test_a_read_only_batch_ignores_the_header(gw: httpx.AsyncClient) -> None:
    batch = {"seen": ["Contact", "get", {"select": ["id"]}]}
    for _ in range(2):
        r = await gw.post("/v4/batch", json=batch, headers=auth("alpha", "k-rbatch"))
        assert r.status_code == 200
        assert "idempotent-replayed" not in r.headers


async def test_keys_are_per_client(gw: httpx.AsyncClient) -> None:
    a = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "shared-key"))
    # beta's identical call with alpha's key is beta's own write: no replay of alpha's answer.
    b = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("beta", "shared-key"))
    assert a.status_code == b.status_code == 200
    assert "idempotent-replayed" not in b.headers
    assert a.json()[0]["id"] != b.json()[0]["id"]
    # Nor can beta probe alpha's key with another call: no 422, its own call runs.
    probe = await gw.post(
        "/v4/Contact/create", json={**CREATE, "first_name": "Probe"}, headers=auth("beta", "probe-key")
    )
    assert probe.status_code == 200
    c = await gw.post(
        "/v4/Contact/create", json={**CREATE, "first_name": "Cy"}, headers=auth("alpha", "probe-key")
    )
    assert c.status_code == 200
    assert "idempotent-replayed" not in c.headers
    assert await count(gw, "Keyed") == 4


async def test_a_denied_call_does_not_claim_its_key(gw: httpx.AsyncClient) -> None:
    denied = await gw.post(
        "/v4/Contact/delete", json={"where": [["id", "=", 999]]}, headers=auth("nodelete", "k-denied")
    )
    problem(denied, 403, "gateway-policy-denied")
    again = await gw.post(
        "/v4/Contact/delete", json={"where": [["id", "=", 999]]}, headers=auth("nodelete", "k-denied")
    )
    problem(again, 403, "gateway-policy-denied")
    assert "idempotent-replayed" not in again.headers
    made = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("nodelete", "k-denied"))
    assert made.status_code == 200
    assert "idempotent-replayed" not in made.headers
    invalid = await gw.post(
        "/v4/Contact/create", json={"no_such_field": 1}, headers=auth("alpha", "k-invalid")
    )
    problem(invalid, 400, "unknown-field")
    fixed = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-invalid"))
    assert fixed.status_code == 200
    assert "idempotent-replayed" not in fixed.headers
    assert await count(gw, "Keyed") == 2


async def test_a_client_may_be_required_to_send_a_key(gw: httpx.AsyncClient) -> None:
    r = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("strict"))
    body = problem(r, 428, "idempotency-key-required")
    assert body["title"] == "Idempotency-Key required"
    batch = await gw.post("/v4/batch", json={"made": ["Contact", "create", CREATE]}, headers=auth("strict"))
    problem(batch, 428, "idempotency-key-required")
    assert await count(gw, "Keyed") == 0
    read = await gw.post("/v4/Contact/get", json={}, headers=auth("strict"))
    assert read.status_code == 200
    ok = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("strict", "k-strict"))
    assert ok.status_code == 200
    assert await count(gw, "Keyed") == 1
