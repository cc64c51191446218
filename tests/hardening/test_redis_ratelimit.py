"""Several gateway replicas sharing one Redis enforce one rate limit per client, not one each.

Needs ``redis-server`` on PATH (Debian: ``apt-get install redis-server``) and the ``redis``
extra's client (``limits[async-redis]``); skips with the reason otherwise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.conftest import gateway_client

pytestmark = pytest.mark.slow

TOKEN = "cgw_redis-shared-limit-5f1e2d3c4b5a6978"


def replica_settings(redis_url: str, tmp_path: Path) -> Settings:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        f'[clients.shared]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
        'rate_limit = "6/hour"\n'
    )
    return Settings(backend="sandbox", sandbox_demo=0, clients_file=clients, rate_limit_storage=redis_url)


async def test_two_replicas_share_one_limit(redis_url: str, tmp_path: Path) -> None:
    settings = replica_settings(redis_url, tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gateway_client(settings) as first, gateway_client(settings) as second:
        statuses = []
        for i in range(8):  # alternate replicas: 4 calls each, 8 in all, against 6/hour
            replica = first if i % 2 == 0 else second
            response = await replica.post("/v4/Contact/get", json={"limit": 1}, headers=auth)
            statuses.append(response.status_code)
        assert statuses == [200] * 6 + [429, 429], statuses
        # Each replica alone saw only 4 calls: the refusals come from the shared count.
        refused = await first.post("/v4/Contact/get", json={}, headers=auth)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "/problems/rate-limited"
        assert int(refused.headers["retry-after"]) >= 1


async def test_memory_storage_is_per_replica(tmp_path: Path) -> None:
    """The contrast that makes the test above meaningful: without Redis, each replica counts
    alone and the same 8 calls all pass."""
    settings = replica_settings("memory://", tmp_path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gateway_client(settings) as first, gateway_client(settings) as second:
        statuses = [
            (
                await (first if i % 2 == 0 else second).post(
                    "/v4/Contact/get", json={"limit": 1}, headers=auth
                )
            ).status_code
            for i in range(8)
        ]
    assert statuses == [200] * 8, statuses
