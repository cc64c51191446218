"""Fixtures for the OpenAPI tests: a gateway process shared by the browser and generated-client
tests, and helpers to read the document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.flow.clients import hash_token
from tests.conftest import GatewayProcess

CLIENT_TOKEN = "cgw_openapi-test-token-4f1d2c3b5a6e7d8c9b0a"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """``civicrm-gateway serve`` on the sandbox backend with its demo data, one client token."""
    proc = GatewayProcess(
        {
            "CIVI_GATEWAY_BACKEND": "sandbox",
            "CIVI_GATEWAY_SANDBOX_DEMO": "200",
            "CIVI_GATEWAY_CLIENT_TOKENS": f"tests:sha256:{hash_token(CLIENT_TOKEN)}",
        },
        tmp_path_factory.mktemp("served"),
    )
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def fetch_document(served: GatewayProcess, path: str = "/openapi.json") -> bytes:
    """A document as the test client sees it (its token: every entity)."""
    import httpx

    response = httpx.get(served.url + path, timeout=60, headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.content


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """``node`` with its ``$ref`` (if any) followed within ``doc``."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def properties(doc: dict[str, Any], schema: Any) -> dict[str, Any]:
    """All properties a schema allows, through ``$ref`` and ``allOf``."""
    schema = resolve(doc, schema)
    found = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        found.update(properties(doc, part))
    return found


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method, operation
