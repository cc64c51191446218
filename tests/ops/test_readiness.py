"""/readyz says whether this gateway process can serve; CiviCRM's state is in its body and in
/metrics, and decides readiness only when CIVI_GATEWAY_READINESS_REQUIRES_UPSTREAM=true."""

from __future__ import annotations

import asyncio
import signal
import threading

import httpx
import pytest

from gateway.web.app import create_app
from tests.conftest import ADMIN_KEY, PROBLEM, ThreadServer, gateway_client, http_settings
from tests.ops.conftest import HangingUpstream, value

pytestmark = pytest.mark.slow


def gateway_env(upstream_url: str, **extra: str) -> dict[str, str]:
    return {
        "CIVI_GATEWAY_BACKEND": "http",
        "CIVI_GATEWAY_HTTP_URL": upstream_url,
        "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
        "CIVI_GATEWAY_RETRY_MAX_ATTEMPTS": "1",
        "CIVI_GATEWAY_BREAKER_THRESHOLD": "2",
        "CIVI_GATEWAY_BREAKER_COOLDOWN": "600",
        **extra,
    }


def assert_breaker_answer(response: httpx.Response) -> None:
    """The breaker's fail-fast answer: 503 problem+json with the rest of the cool-down."""
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"] == "/problems/upstream-unavailable"
    assert "circuit breaker open" in response.json()["detail"]
    assert 590 <= int(response.headers["retry-after"]) <= 600


def test_pods_stay_ready_while_civicrm_is_down(gateway_process, upstream):
    gw = gateway_process(gateway_env(upstream.url))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert ready.json()["requires_upstream"] is False
        assert ready.json()["upstream"]["status"] == "up"
        assert ready.json()["upstream"]["breaker"] == "closed"
        assert value(client.get("/metrics").text, "gateway_upstream_up", backend="http") == 1.0

        upstream.server.stop()  # the real sandbox wire server goes away: connections refused

        ready = client.get("/readyz")
        assert ready.status_code == 200  # this pod can still serve: it stays in the Service
        assert ready.json()["upstream"]["status"] == "down"
        assert ready.json()["upstream"]["problem"] == "/problems/upstream-unavailable"
        first = client.get("/v4/Contact/get", params={"limit": "1"})
        assert first.status_code == 503
        assert first.json()["type"] == "/problems/upstream-unavailable"
        # The readiness check and this call were the two failures in a row: the breaker is open
        # and clients get the gateway's own answer, not a connection error.
        assert_breaker_answer(client.get("/v4/Contact/get", params={"limit": "1"}))
        assert_breaker_answer(client.post("/v4/Contact/create", json={"first_name": "X"}))
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["upstream"]["status"] == "down"
        assert ready.json()["upstream"]["breaker"] == "open"
        metrics = client.get("/metrics").text
        assert value(metrics, "gateway_upstream_up", backend="http") == 0.0
        assert value(metrics, "gateway_breaker_state", backend="http") == 2.0
    assert "Traceback" not in gw.stop()


def test_readiness_can_require_civicrm(gateway_process, upstream):
    gw = gateway_process(gateway_env(upstream.url, CIVI_GATEWAY_READINESS_REQUIRES_UPSTREAM="true"))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["requires_upstream"] is True
        assert ready.json()["upstream"]["status"] == "up"

        upstream.server.stop()

        unready = client.get("/readyz")
        assert unready.status_code == 503
        assert unready.headers["content-type"].startswith(PROBLEM)
        assert unready.json()["type"] == "/problems/upstream-unavailable"
        assert client.get("/v4/Contact/get", params={"limit": "1"}).status_code == 503
        # Breaker open: readiness fails fast too, without calling CiviCRM.
        assert_breaker_answer(client.get("/readyz"))
        assert_breaker_answer(client.get("/v4/Contact/get", params={"limit": "1"}))
    gw.stop()


async def test_a_hanging_civicrm_costs_readiness_one_bounded_check():
    hanging = HangingUpstream()
    server = ThreadServer(hanging).start()
    try:
        settings = http_settings(server.url, readiness_upstream_timeout=0.3, http_timeout=30)
        async with gateway_client(settings) as gw:
            answers = await asyncio.gather(*(gw.get("/readyz") for _ in range(5)))
            assert [a.status_code for a in answers] == [200] * 5
            for answer in answers:
                upstream = answer.json()["upstream"]
                assert upstream["problem"] == "/problems/upstream-timeout"
                assert upstream["check_seconds"] < 5  # the check's own bound, not http_timeout
            assert hanging.requests == 1  # five probes at once share one check
        gating = settings.model_copy(update={"readiness_requires_upstream": True})
        async with gateway_client(gating) as gw:
            unready = await gw.get("/readyz")
            assert unready.status_code == 504
            assert unready.json()["type"] == "/problems/upstream-timeout"
    finally:
        hanging.release.set()
        server.stop()


async def test_a_stop_signal_makes_the_process_unready_and_reaches_the_server(upstream):
    """uvicorn's own SIGTERM handler stands in as the server's: the gateway marks itself
    draining, then hands the signal on."""
    assert threading.current_thread() is threading.main_thread()
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGTERM, handler)
    try:
        app = create_app(http_settings(upstream.url))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw:
                assert (await gw.get("/readyz")).status_code == 200
                signal.raise_signal(signal.SIGTERM)
                assert received == [signal.SIGTERM]
                draining = await gw.get("/readyz")
                assert draining.status_code == 503
                assert draining.headers["content-type"].startswith(PROBLEM)
                assert draining.json()["type"] == "/problems/gateway-not-ready"
                assert draining.json()["detail"] == "This gateway process is draining."
                assert draining.headers["retry-after"] == "5"
                # Calls in flight and new ones on open connections are still answered.
                assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200
        # Once the app has stopped, the server's handler is the signal's handler again.
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, original)
