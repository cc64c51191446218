"""Several gateway replicas sharing one Redis enforce one rate limit per client, not one each.

Needs ``redis-server`` on PATH (Debian: ``apt-get install redis-server``) and the ``redis``
extra's client (``limits[async-redis]``); skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.conftest import free_port, gateway_client, missing_tool

pytestmark = pytest.mark.slow

TOKEN = "cgw_redis-shared-limit-5f1e2d3c4b5a6978"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        missing_tool("redis-server is not on PATH (apt-get install redis-server)")
    pytest.importorskip("coredis", reason="limits[async-redis] (the 'redis' extra) not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def replica_settings(redis_url: str, tmp_path: Path) -> Settings:
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[clients.shared]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
                       'rate_limit = "6/hour"\n')
    return Settings(backend="sandbox", sandbox_demo=0, clients_file=clients,
                    rate_limit_storage=redis_url)


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
        statuses = [(await (first if i % 2 == 0 else second).post(
            "/v4/Contact/get", json={"limit": 1}, headers=auth)).status_code for i in range(8)]
    assert statuses == [200] * 8, statuses
