"""Idempotency-Key where it matters: an answer lost after CiviCRM committed (the HTTP backend
through a faulty proxy to the sandbox's wire server), two gateway replicas sharing Redis, and
a gateway restarted between a write and its repeat."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, GatewayProcess, Upstream, gateway_client, http_settings
from tests.idempotency.conftest import auth
from tests.idempotency.relay import Relay
from tests.idempotency.test_semantics import CREATE, problem

pytestmark = pytest.mark.slow


def contacts(upstream: Upstream, last_name: str) -> int:
    """Counted in CiviCRM itself (the sandbox), not through the gateway."""
    return len(
        upstream.sandbox.api4(
            "Contact", "get", {"where": [["last_name", "=", last_name]], "checkPermissions": False}
        )["values"]
    )


@pytest.fixture
def relay(upstream: Upstream) -> Iterator[Relay]:
    proxy = Relay(int(upstream.url.rsplit(":", 1)[1])).start()
    yield proxy
    proxy.gate.set()
    proxy.stop()


def creates(request: bytes) -> bool:
    return b"/Contact/create" in request.split(b"\r\n", 1)[0]


async def test_an_answer_cut_after_commit_is_stored_as_outcome_unknown(
    upstream: Upstream, relay: Relay, clients_file: Path
) -> None:
    relay.decide = lambda request: "cut" if creates(request) else "pass"
    settings = http_settings(relay.url, clients_file=clients_file)
    async with gateway_client(settings) as gw:
        first = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-cut"))
        body = problem(first, 504, "write-outcome-unknown")
        assert body["detail"].startswith("The connection to CiviCRM failed")
        assert contacts(upstream, "Keyed") == 1  # CiviCRM did commit it
        relay.decide = lambda request: "pass"
        retry = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-cut"))
        assert retry.status_code == 504
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.content == first.content
        assert contacts(upstream, "Keyed") == 1
        # Without a key the same retry writes a second contact: what the key prevents.
        plain = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha"))
        assert plain.status_code == 200
        assert contacts(upstream, "Keyed") == 2


async def test_a_timeout_after_sending_is_stored_as_outcome_unknown(
    upstream: Upstream, relay: Relay, clients_file: Path
) -> None:
    relay.decide = lambda request: "hold" if creates(request) else "pass"
    settings = http_settings(relay.url, clients_file=clients_file, http_timeout=1)
    async with gateway_client(settings) as gw:
        first = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-slow"))
        body = problem(first, 504, "write-outcome-unknown")
        assert body["detail"].startswith("CiviCRM did not answer within 1 s.")
        relay.gate.set()  # the held create now reaches CiviCRM and commits
        assert await asyncio.to_thread(relay.answered.wait, 30)
        assert contacts(upstream, "Keyed") == 1
        retry = await gw.post("/v4/Contact/create", json=CREATE, headers=auth("alpha", "k-slow"))
        assert retry.status_code == 504
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.content == first.content
        assert contacts(upstream, "Keyed") == 1


def _post(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v4/Contact/create", json=CREATE, headers=auth("alpha", key), timeout=30)


def test_two_replicas_sharing_redis_run_a_write_once(
    upstream: Upstream, relay: Relay, clients_file: Path, redis_url: str, tmp_path: Path
) -> None:
    env = {
        "CIVI_GATEWAY_BACKEND": "http",
        "CIVI_GATEWAY_HTTP_URL": relay.url,
        "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
        "CIVI_GATEWAY_CLIENTS_FILE": str(clients_file),
        "CIVI_GATEWAY_IDEMPOTENCY_STORE": "redis",
        "CIVI_GATEWAY_RATE_LIMIT_STORAGE": redis_url,
    }
    replicas = [GatewayProcess(env, tmp_path), GatewayProcess(env, tmp_path)]  # start together
    try:
        for replica in replicas:
            replica.wait_ready(60)
        _race(upstream, relay, *replicas)
    finally:
        for replica in replicas:
            replica.stop()


def _race(upstream: Upstream, relay: Relay, one: GatewayProcess, two: GatewayProcess) -> None:
    relay.decide = lambda request: "hold" if creates(request) else "pass"
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_post, one.url, "k-replicas")
        assert relay.held.wait(30)  # the first create is at CiviCRM's door
        # Identical requests to both replicas meanwhile: neither runs the create again.
        for gw in (two, one, two):
            problem(_post(gw.url, "k-replicas"), 409, "idempotency-key-in-flight")
        relay.gate.set()
        done = first.result(timeout=30)
    assert done.status_code == 200
    assert "idempotent-replayed" not in done.headers
    for gw in (two, one):
        replay = _post(gw.url, "k-replicas")
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == done.content
    assert contacts(upstream, "Keyed") == 1


def test_a_replay_outlives_a_restart_on_sqlite(
    clients_file: Path, gateway_process: Any, tmp_path: Path
) -> None:
    # The default store (SQLite) and the sandbox's own file, both in the one state directory.
    env = {
        "CIVI_GATEWAY_BACKEND": "sandbox",
        "CIVI_GATEWAY_SANDBOX_DEMO": "0",
        "CIVI_GATEWAY_CLIENTS_FILE": str(clients_file),
    }
    before = gateway_process(env)
    first = _post(before.url, "k-restart")
    assert first.status_code == 200
    before.stop()
    after = gateway_process(env)
    assert (tmp_path / ".civicrm-gateway" / "idempotency.sqlite").is_file()
    replay = _post(after.url, "k-restart")
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    found = httpx.post(
        after.url + "/v4/Contact/get",
        headers=auth("alpha"),
        timeout=30,
        json={"where": [["last_name", "=", "Keyed"]], "select": ["id"]},
    )
    assert found.json() == [{"id": first.json()[0]["id"]}]
