"""The Idempotency-Key header and its problem types in the served OpenAPI document."""

from __future__ import annotations

import httpx


def _header_names(operation: dict) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p.get("in") == "header"]


async def test_writes_document_the_header_and_reads_do_not(gw_sandbox: httpx.AsyncClient) -> None:
    doc = (await gw_sandbox.get("/openapi.json")).json()
    paths = doc["paths"]
    assert _header_names(paths["/v4/{entity}/{action}"]["post"]) == ["Idempotency-Key"]
    assert _header_names(paths["/v3/{entity}/{action}"]["post"]) == ["Idempotency-Key"]
    assert _header_names(paths["/v4/{entity}/{action}"]["get"]) == []
    assert _header_names(paths["/v4/batch"]["post"]) == ["Idempotency-Key"]
    assert _header_names(paths["/v4/Contact/create"]["post"]) == ["Idempotency-Key"]
    assert _header_names(paths["/v4/Contact/get"]["post"]) == []
    key = paths["/v4/Contact/create"]["post"]["parameters"][0]["schema"]
    assert key == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}
    problems = doc["components"]["responses"]
    assert "idempotency-key-required" in problems["Problem428"]["description"]
    assert "idempotency-key-reused" in problems["Problem422"]["description"]
    assert "idempotency-key-in-flight" in problems["Problem409"]["description"]
    assert "write-outcome-unknown" in problems["Problem504"]["description"]
    assert "Retry-After" in problems["Problem409"]["headers"]
    assert "Idempotent-Replayed" in doc["components"]["headers"]
