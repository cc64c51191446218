"""Gateways with Idempotency-Key stores, and clients with their own policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.flow.clients import hash_token
from gateway.settings import Settings
from tests.conftest import gateway_client

TOKENS = {
    "alpha": "cgw_alpha-token-0123456789",
    "beta": "cgw_beta-token-0123456789",
    "strict": "cgw_strict-token-0123456789",
    "nodelete": "cgw_nodelete-token-0123456",
}


def auth(name: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKENS[name]}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[clients.alpha]
token_sha256 = "{hash_token(TOKENS["alpha"])}"

[clients.beta]
token_sha256 = "{hash_token(TOKENS["beta"])}"

[clients.strict]
token_sha256 = "{hash_token(TOKENS["strict"])}"
require_idempotency_key = true

[clients.nodelete]
token_sha256 = "{hash_token(TOKENS["nodelete"])}"
deny = ["v4:Contact.delete"]
""")
    return path


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, clients_file: Path) -> dict[str, Any]:
    """Settings of a gateway on the embedded sandbox, one per idempotency store."""
    values: dict[str, Any] = {
        "backend": "sandbox",
        "sandbox_demo": 0,
        "clients_file": clients_file,
        "idempotency_store": request.param,
    }
    if request.param == "redis":
        values["rate_limit_storage"] = request.getfixturevalue("redis_url")
    return values


@pytest.fixture
async def gw(store_settings: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(Settings(**store_settings)) as client:
        yield client
