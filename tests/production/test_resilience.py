"""Retries, the circuit breaker and the metadata cache, with failures injected between the
gateway and a real loopback CiviCRM stand-in."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.backends.http import HttpBackend
from gateway.backends.metacache import MetadataCache
from gateway.backends.resilience import CircuitBreaker, is_safe
from gateway.services import Timing, resilient_backend
from tests.conftest import TRUSTED_TOKEN, assert_problem, free_port, gateway_client, http_settings, trusted
from tests.production.conftest import InjectingTransport

FAST = {"retry_backoff": 0.001, "retry_max_attempts": 4, "breaker_threshold": 1000}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def names_in_sandbox(sandbox: Any, prefix: str) -> dict[str, int]:
    rows = sandbox.api4(
        "Contact",
        "get",
        {"select": ["first_name"], "where": [["first_name", "LIKE", f"{prefix}%"]]},
        check_permissions=False,
    )["values"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["first_name"]] = counts.get(row["first_name"], 0) + 1
    return counts


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def test_no_create_is_ever_duplicated(faulty_upstream):
    """Each kind of failure, injected in turn around 40 creates: a create is repeated only when
    the connection failed before sending, and every name exists at most once afterwards."""
    settings = http_settings(faulty_upstream.url, **FAST)
    transport = InjectingTransport([])
    backend = HttpBackend(settings, wrap=transport.wrap)
    answers: dict[str, httpx.Response] = {}
    kinds = ["connect", "502-after", "reset-after", "503", "429", "ok", "garbage", "connect2"]
    async with gateway_client(settings, backend=backend) as gw:
        for i in range(40):
            kind = kinds[i % len(kinds)]
            transport.plan[:] = {
                "connect": ["connect"],
                "connect2": ["connect", "connect"],
                "reset-after": ["reset-after"],
            }.get(kind, [])
            faulty_upstream.faults.plan[:] = [kind] if kind in ("502-after", "503", "429", "garbage") else []
            name = f"dup{i:02d}-{kind}"
            response = await gw.post(
                "/v4/Contact/create", json={"contact_type": "Individual", "first_name": name}
            )
            answers[name] = response
        metrics = (await gw.get("/metrics")).text
    counts = names_in_sandbox(faulty_upstream.sandbox, "dup")
    assert all(n == 1 for n in counts.values()), counts  # never twice
    for name, response in answers.items():
        kind = name.split("-", 1)[1]
        if kind in ("connect", "connect2", "ok"):
            assert response.status_code == 200, name  # nothing was sent: retried, done once
            assert counts.get(name) == 1, name
        elif kind in ("502-after", "reset-after"):
            # CiviCRM did it; the answer was lost; not repeated
            assert_problem(response, 502, "upstream-invalid-response")
            assert counts.get(name) == 1, name
        else:  # 503, 429, garbage: not repeated, and these upstream answers ran nothing
            status, slug = {
                "503": (503, "upstream-unavailable"),
                "429": (503, "upstream-unavailable"),
                "garbage": (502, "upstream-invalid-response"),
            }[kind]
            assert_problem(response, status, slug)
            assert name not in counts, name
    # 5 "connect" and 5 "connect2" rounds: one and two retries each
    assert (
        metric(metrics, 'gateway_upstream_retries_total{backend="http",reason="upstream-unavailable"}') == 15
    )


async def test_reads_are_retried_with_backoff(faulty_upstream):
    settings = http_settings(faulty_upstream.url, **FAST)
    async with gateway_client(settings) as gw:
        faulty_upstream.faults.plan[:] = ["503", "429", "502-after"]
        response = await gw.post("/v4/Contact/get", json={"select": ["id"], "where": [["id", "=", 2]]})
        assert response.status_code == 200, response.text
        assert response.json() == [{"id": 2}]
        assert len(faulty_upstream.faults.seen) == 4
        # APIv3 reads too
        faulty_upstream.faults.plan[:] = ["503"]
        assert (await gw.get("/v3/Contact/getcount")).status_code == 200
        assert len(faulty_upstream.faults.seen) == 6


async def test_backoff_doubles_between_attempts(faulty_upstream, monkeypatch):
    """The delays the backend sleeps, through its injectable ``sleep``: the jitter drawn at its
    top (``random.uniform`` returns its upper bound), each delay is the backoff times 2**n."""
    import gateway.backends.resilience as resilience

    monkeypatch.setattr(resilience.random, "uniform", lambda low, high: high)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    settings = http_settings(
        faulty_upstream.url,
        retry_backoff=0.2,
        retry_max_attempts=4,
        retry_max_seconds=300,
        breaker_threshold=1000,
    )
    backend = resilient_backend(HttpBackend(settings), settings, timing=Timing(sleep=sleep))
    await backend.start()
    try:
        faulty_upstream.faults.plan[:] = ["503", "502-after", "503"]
        records = await backend.call(4, "Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]})
        assert records == [{"id": 2}]
        assert delays == [0.2, 0.4, 0.8]
        # The upstream's Retry-After wins over a shorter backoff.
        delays.clear()
        faulty_upstream.faults.plan[:] = ["429-long"]
        assert await backend.call(4, "Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}) == [
            {"id": 2}
        ]
        assert delays == [120.0]
    finally:
        await backend.close()
    assert len(faulty_upstream.faults.seen) == 6


async def test_reads_that_chain_a_write_are_not_retried(faulty_upstream):
    settings = http_settings(faulty_upstream.url, **FAST)
    async with gateway_client(settings) as gw:
        faulty_upstream.faults.plan[:] = ["502-after"]
        response = await gw.post(
            "/v4/Contact/get",
            json={
                "where": [["id", "=", 2]],
                "select": ["id"],
                "chain": {"note": ["Note", "create", {"values": {"entity_id": "$id", "note": "x"}}]},
            },
        )
        assert_problem(response, 502, "upstream-invalid-response")
        assert len(faulty_upstream.faults.seen) == 1
    assert not is_safe(4, "Contact", "get", {"chain": {"n": ["Note", "create", {}]}})
    assert not is_safe(3, "Contact", "get", {"api.Note.create": {"note": "x"}})
    assert is_safe(4, "Contact", "getFields", {})
    assert not is_safe(4, "Contact", "create", {})
    # Without a chain the action alone decides (the params are not parsed again).
    assert is_safe(4, "Contact", "GET", {"where": [["id", "=", 1]]})
    assert not is_safe(4, "Contact", "update", {"where": [["id", "=", 1]], "chain": {}})


async def test_retry_budget_and_retry_after(faulty_upstream):
    settings = http_settings(
        faulty_upstream.url,
        retry_backoff=0.001,
        retry_max_attempts=2,
        retry_max_seconds=5,
        breaker_threshold=1000,
    )
    async with gateway_client(settings) as gw:
        faulty_upstream.faults.plan[:] = ["503", "503", "503"]
        response = await gw.get("/v4/Contact/get", params={"limit": "1"})
        assert_problem(response, 503, "upstream-unavailable")
        assert len(faulty_upstream.faults.seen) == 2  # max attempts
        # Retry-After beyond the time budget: no retry, and the client is told when to come back.
        faulty_upstream.faults.seen.clear()
        faulty_upstream.faults.plan[:] = ["429-long"]
        response = await gw.get("/v4/Contact/get", params={"limit": "1"})
        assert_problem(response, 503, "upstream-unavailable")
        assert response.headers["retry-after"] == "120"
        assert len(faulty_upstream.faults.seen) == 1


async def test_circuit_breaker_opens_fails_fast_and_probes(faulty_upstream):
    settings = http_settings(
        faulty_upstream.url, retry_max_attempts=1, breaker_threshold=3, breaker_cooldown=30
    )
    clock = Clock()
    async with gateway_client(settings, timing=Timing(clock=clock)) as gw:
        backend = gw._transport.app.state.services.backend  # type: ignore[attr-defined]
        faulty_upstream.faults.plan[:] = ["503"] * 3
        for _ in range(3):
            assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 503
        seen = len(faulty_upstream.faults.seen)
        fast = await gw.get("/v4/Contact/get", params={"limit": "1"})
        assert fast.status_code == 503
        assert fast.json()["type"] == "/problems/upstream-unavailable"
        assert "circuit breaker" in fast.json()["detail"]
        assert fast.headers["retry-after"] == "30"
        assert (await gw.post("/v4/Contact/create", json={"contact_type": "Individual"})).status_code == 503
        assert len(faulty_upstream.faults.seen) == seen  # nothing reached CiviCRM
        # Readiness is this process's (docs/deploy.md, "Readiness"): still ready, CiviCRM reported.
        ready = await gw.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["upstream"]["status"] == "down"
        assert ready.json()["upstream"]["breaker"] == "open"
        assert len(faulty_upstream.faults.seen) == seen  # the check did not call CiviCRM either
        metrics = (await gw.get("/metrics")).text
        assert 'gateway_breaker_state{backend="http"} 2.0' in metrics
        # Cool-down over: one probe; it fails, so the breaker opens again.
        clock.now += 31
        faulty_upstream.faults.plan[:] = ["503"]
        assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 503
        assert len(faulty_upstream.faults.seen) == seen + 1
        assert backend.breaker.state == "open"
        # Next probe succeeds: closed again, calls flow.
        clock.now += 31
        assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200
        assert backend.breaker.state == "closed"
        assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200
        metrics = (await gw.get("/metrics")).text
        assert 'gateway_breaker_state{backend="http"} 0.0' in metrics
        assert metric(metrics, 'gateway_breaker_opened_total{backend="http"}') == 2


async def test_civicrm_errors_do_not_open_the_breaker(faulty_upstream):
    settings = http_settings(faulty_upstream.url, breaker_threshold=2)
    async with gateway_client(settings) as gw:
        for _ in range(4):
            assert (await gw.post("/v4/Nope/get", json={})).status_code == 404
        assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200


def test_half_open_lets_one_probe_through():
    clock = Clock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.before() is True  # the probe
    with pytest.raises(Exception) as refused:
        breaker.before()  # a second caller while the probe runs
    assert refused.value.status == 503  # type: ignore[attr-defined]
    breaker.release()  # the probe was cancelled: another may try
    assert breaker.before() is True
    breaker.success()
    assert breaker.state == "closed" and breaker.before() is False


# --- metadata cache ----------------------------------------------------------------------------


async def test_metadata_cache_ttl_flush_and_identity(faulty_upstream, tmp_path):
    # The cache itself, without the validation look-ups that every call would add.
    settings = trusted(http_settings(faulty_upstream.url, metadata_cache_ttl=60, validate_calls=False))
    faulty_upstream.faults.record_metadata = True
    clock = Clock()
    async with gateway_client(settings, token=TRUSTED_TOKEN, timing=Timing(clock=clock)) as gw:
        seen = faulty_upstream.faults.seen
        body = {"select": ["name"], "where": [["name", "=", "first_name"]]}
        first = await gw.post("/v4/Contact/getFields", json=body)
        assert first.json() == [{"name": "first_name"}]
        for path in ("/v4/Contact/getFields", "/v4/Contact/getFields"):
            assert (await gw.post(path, json=body)).json() == first.json()
        assert len(seen) == 1
        await gw.post("/v4/Contact/getActions", json={"select": ["name"]})
        await gw.post("/v4/Entity/get", json={"select": ["name"]})
        await gw.post("/v4/Entity/get", json={"select": ["name"]})
        assert len(seen) == 3
        assert (await gw.post("/v4/Contact/get", json={"limit": 1})).status_code == 200
        assert (await gw.post("/v4/Contact/get", json={"limit": 1})).status_code == 200
        assert len(seen) == 5  # data is never cached
        clock.now += 61  # expired
        await gw.post("/v4/Contact/getFields", json=body)
        assert len(seen) == 6
        flushed = await gw.post("/cache/flush")
        assert flushed.status_code == 200 and flushed.json()["flushed"] == 3
        await gw.post("/v4/Contact/getFields", json=body)
        assert len(seen) == 7
        # A write to a metadata entity through the gateway flushes by itself.
        setting = await gw.post("/v4/Setting/set", json={"values": {"contact_default_language": "fr_FR"}})
        assert setting.status_code == 200, setting.text
        await gw.post("/v4/Contact/getFields", json=body)
        assert len(seen) == 9
        metrics = (await gw.get("/metrics")).text
        assert metric(metrics, 'gateway_metadata_cache_total{result="hit"}') == 3


async def test_metadata_cache_shares_one_load():
    import asyncio

    from gateway.core.results import Records

    cache = MetadataCache(60)
    calls = 0
    gate = asyncio.Event()

    async def load() -> Records:
        nonlocal calls
        calls += 1
        await gate.wait()
        return Records([{"name": "id"}])

    key = cache.key(4, "Contact", "getFields", {}, None)
    waiting = [asyncio.create_task(cache.get_or_load(key, load)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiting)
    assert calls == 1 and all(r == [{"name": "id"}] for r in results)
    from gateway.flow.clients import Identity

    assert cache.key(4, "Contact", "getFields", {}, Identity(api_key="k1")) != cache.key(
        4, "Contact", "getFields", {}, Identity(api_key="k2")
    )
    assert b"k1" not in cache.key(4, "Contact", "getFields", {}, Identity(api_key="k1"))


async def test_connection_refused_is_retried_then_503():
    settings = http_settings(f"http://127.0.0.1:{free_port()}", retry_backoff=0.001)
    async with gateway_client(settings) as gw:
        response = await gw.get("/v4/Contact/get")
        assert_problem(response, 503, "upstream-unavailable")
        metrics = (await gw.get("/metrics")).text
        assert metric(metrics, "gateway_upstream_retries_total") == 2
