"""The gateway as a real uvicorn process on 127.0.0.1: faults between it and CiviCRM under load,
graceful shutdown, JSON logs with request ids, and /metrics."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY, SITE_KEY
from tests.production.chaos import ChaosProxy

pytestmark = pytest.mark.slow

TOKEN = "cgw_metrics-token-00112233445566778899"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """``workers`` threads calling the gateway in a loop; statuses counted per phase."""

    def __init__(self, url: str, workers: int = 8) -> None:
        self.url = url
        self.phase = "warm-up"
        self.statuses: dict[str, Counter[int]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                phase = self.phase
                try:
                    status = client.get("/v4/Contact/get", params={"id": "2", "select": "id"}).status_code
                except httpx.TransportError:
                    status = -1  # the gateway itself failed to answer
                with self._lock:
                    self.statuses.setdefault(phase, Counter())[status] += 1

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def until_ok(self, client: httpx.Client, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.get("/v4/Contact/get", params={"id": "2", "select": "id"}).status_code == 200:
                return
            time.sleep(0.05)
        raise AssertionError("the gateway did not recover")


def test_faults_under_load_recover_and_leak_nothing(gateway_process, upstream):
    proxy = ChaosProxy(upstream.server.port, slow_seconds=3).start()
    try:
        gw = gateway_process(
            {
                "CIVI_GATEWAY_BACKEND": "http",
                "CIVI_GATEWAY_HTTP_URL": proxy.url,
                "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
                "CIVI_GATEWAY_HTTP_TIMEOUT": "1",
                "CIVI_GATEWAY_BREAKER_THRESHOLD": "3",
                "CIVI_GATEWAY_BREAKER_COOLDOWN": "0.3",
                "CIVI_GATEWAY_RETRY_BACKOFF": "0.01",
                "CIVI_GATEWAY_RETRY_MAX_SECONDS": "0.5",
            }
        )
        pid = gw.proc.pid
        with httpx.Client(base_url=gw.url, timeout=10) as probe:
            load = Load(gw.url).start()
            time.sleep(1.0)
            baseline = open_fds(pid)
            expected = {"down": {503}, "reset": {502, 503}, "garbage": {502, 503}, "slow": {503, 504}}
            for mode in ("down", "reset", "garbage", "slow"):
                load.phase = f"switch-{mode}"  # calls cut by the switch itself: not counted
                proxy.set(mode)
                time.sleep(0.2)
                load.phase = mode
                time.sleep(1.3 if mode != "slow" else 2.3)
                assert probe.get("/healthz").status_code == 200  # still serving
                load.phase = f"switch-back-{mode}"
                if mode == "slow":
                    time.sleep(1.2)  # let the stalled calls time out before cutting them
                proxy.set("pass")
                load.until_ok(probe)
                time.sleep(0.3)
            load.phase = "end"
            time.sleep(0.5)
            load.stop()
            metrics = probe.get("/metrics").text
        for mode, allowed in expected.items():
            seen = set(load.statuses.get(mode, {}))
            assert seen, mode
            # Right statuses only (a request already in flight at the switch may still pass).
            assert seen <= allowed | {200}, (mode, load.statuses[mode])
            assert load.statuses[mode][200] < sum(load.statuses[mode].values()), mode
        assert set(load.statuses["end"]) == {200}, load.statuses["end"]
        assert -1 not in set().union(*load.statuses.values())  # the gateway always answered
        assert 'gateway_breaker_state{backend="http"} 0.0' in metrics
        time.sleep(0.5)
        # Every client connection is closed again: the process is back to its fd count.
        assert open_fds(pid) <= baseline + 4, (open_fds(pid), baseline)
        log = gw.stop()
        assert "Traceback" not in log
    finally:
        proxy.stop()


def test_sigterm_lets_the_call_in_flight_finish(gateway_process, faulty_upstream):
    gw = gateway_process(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": faulty_upstream.url,
            "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
            "CIVI_GATEWAY_SHUTDOWN_GRACE": "10",
        }
    )
    faulty_upstream.faults.delay = 1.5
    result: dict[str, httpx.Response] = {}

    def slow_call() -> None:
        result["r"] = httpx.post(
            gw.url + "/v4/Contact/create",
            timeout=10,
            json={"contact_type": "Individual", "first_name": "Graceful"},
        )

    thread = threading.Thread(target=slow_call)
    thread.start()
    deadline = time.monotonic() + 5
    while not faulty_upstream.faults.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert faulty_upstream.faults.seen, "the call did not reach the upstream"
    gw.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()[0]["first_name"] == "Graceful"
    # uvicorn re-raises the signal once it has shut down cleanly: -SIGTERM is its normal exit.
    assert gw.proc.wait(timeout=15) in (0, -signal.SIGTERM)
    log = gw.stop()
    assert "Traceback" not in log and "Waiting for connections to close" in log
    with pytest.raises(httpx.TransportError):
        httpx.get(gw.url + "/healthz", timeout=2)


def test_json_logs_request_ids_and_metrics_without_secrets(gateway_process, upstream, tmp_path: Path):
    from gateway.flow.clients import hash_token

    gw = gateway_process(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": upstream.url,
            "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
            "CIVI_GATEWAY_HTTP_SITE_KEY": SITE_KEY,
            "CIVI_GATEWAY_LOG_FORMAT": "json",
            "CIVI_GATEWAY_CLIENT_TOKENS": f"ops:sha256:{hash_token(TOKEN)}",
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        got = client.get(
            "/v4/Contact/get",
            params={"id": "2", "select": "id"},
            headers={**auth, "X-Request-ID": "trace-abc-123"},
        )
        assert got.status_code == 200 and got.headers["x-request-id"] == "trace-abc-123"
        assert client.get(f"/v4/Contact/get?api_key={ADMIN_KEY}", headers=auth).status_code == 403
        assert client.get(f"/nowhere/{TOKEN}").status_code == 404
        assert (
            client.post("/v4/batch", headers=auth, json={"a": ["Contact", "get", {"limit": 1}]}).status_code
            == 200
        )
        assert (
            client.post("/v4/Contact/get", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        )
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'gateway_requests_total{method="GET",route="/v4/{entity}/{action}",status="200"} 1.0' in text
    assert 'route="/v4/batch"' in text and 'route="unmatched",status="404"' in text
    assert 'gateway_upstream_duration_seconds_count{backend="http",outcome="ok"}' in text
    assert 'gateway_backend_pool{backend="http",gauge="connections"}' in text
    for secret in (TOKEN, hash_token(TOKEN), ADMIN_KEY, SITE_KEY, "wrong-token", "Contact", "nowhere"):
        assert secret not in text, secret
    log = gw.stop()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [
        e for e in lines if e.get("logger") == "gateway.access" and e.get("request_id") == "trace-abc-123"
    ]
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/v4/{entity}/{action}"
    assert access[0]["client"] == "ops"
    assert all(isinstance(e.get("request_id"), str) for e in lines if e.get("logger") == "gateway.access")
    assert ADMIN_KEY not in log
    # The bearer token is never logged (only where this test typed it into a URL path itself).
    assert not [line for line in log.splitlines() if TOKEN in line and "/nowhere/" not in line]
