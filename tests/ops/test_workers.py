"""``civicrm-gateway serve`` with two workers: one client's rate limit holds across them (Redis
shares the count), and /metrics, whichever worker answers it, sums both workers' samples."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import ThreadServer
from tests.ops.conftest import HangingUpstream, value

pytestmark = pytest.mark.slow

TOKEN = "cgw_two-workers-one-limit-0a1b2c3d4e5f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "/v4/{entity}/{action}"
LIMIT = 8


def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[clients.shared]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
        f'rate_limit = "{LIMIT}/hour"\n'
    )
    return path


def two_workers(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "CIVI_GATEWAY_WORKERS": "2",
        "CIVI_GATEWAY_BACKEND": "sandbox",
        "CIVI_GATEWAY_SANDBOX_DEMO": "0",
        "CIVI_GATEWAY_CLIENTS_FILE": str(clients_file(tmp_path)),
        **extra,
    }


def calls_on_fresh_connections(url: str, n: int) -> list[int]:
    """``n`` calls one after the other, each on a new connection, so that either worker may
    accept each of them."""
    statuses = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(n):
            response = client.post(
                "/v4/Contact/get", json={"limit": 1}, headers={**AUTH, "Connection": "close"}
            )
            statuses.append(response.status_code)
    return statuses


def answered_by_worker(metrics_dir: Path, route: str = ROUTE) -> dict[str, dict[str, float]]:
    """From each worker's own counter file: its calls to ``route`` by status."""
    per_worker: dict[str, dict[str, float]] = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        pid = path.stem.removeprefix("counter_")
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "gateway_requests_total" and sample.labels["route"] == route:
                    per_worker.setdefault(pid, {})[sample.labels["status"]] = sample.value
    return per_worker


def settled(metrics_dir: Path, calls: int) -> dict[str, dict[str, float]]:
    """Per-worker counts once all ``calls`` are counted: a worker counts a call just after its
    answer has gone out, so the last one may still be on its way into the file."""
    deadline = time.monotonic() + 30
    while True:
        per_worker = answered_by_worker(metrics_dir)
        if sum(sum(w.values()) for w in per_worker.values()) == calls:
            return per_worker
        assert time.monotonic() < deadline, per_worker
        time.sleep(0.01)  # poll interval


def wait_for_both_workers(url: str, metrics_dir: Path) -> None:
    """The first worker may serve for seconds before the second has started: knock (on new
    connections) until each has answered /healthz, so that the calls under test can reach
    either."""
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=url, timeout=10) as client:
        while len(answered_by_worker(metrics_dir, "/healthz")) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            client.get("/healthz", headers={"Connection": "close"})


def test_two_workers_share_one_limit_and_one_metrics_view(serve, redis_url, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"an earlier run's samples")  # serve must empty an operator's folder
    gw = serve(
        two_workers(
            tmp_path, CIVI_GATEWAY_RATE_LIMIT_STORAGE=redis_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
        )
    )
    assert not stale.exists()
    wait_for_both_workers(gw.url, metrics_dir)

    statuses = calls_on_fresh_connections(gw.url, 2 * LIMIT)
    assert statuses == [200] * LIMIT + [429] * LIMIT, statuses

    per_worker = settled(metrics_dir, 2 * LIMIT)
    assert len(per_worker) == 2, per_worker  # both workers answered some of the calls
    assert sum(w.get("200", 0) for w in per_worker.values()) == LIMIT
    # A worker counting alone would have let through up to LIMIT calls of its own.
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert value(metrics, "gateway_requests_total", route=ROUTE, method="POST", status="200") == LIMIT
    assert value(metrics, "gateway_requests_total", route=ROUTE, method="POST", status="429") == LIMIT
    assert value(metrics, "gateway_request_duration_seconds_count", route=ROUTE, method="POST") == 2 * LIMIT
    assert value(metrics, "gateway_rate_limited_total", limit="rate") == LIMIT
    assert value(metrics, "gateway_breaker_state", backend="sandbox") == 0.0
    assert "Traceback" not in gw.stop()


def test_per_worker_limits_only_when_asked(serve, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CIVI_GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(two_workers(tmp_path), CIVI_GATEWAY_SECRETS_DIR=str(tmp_path / "none"))
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "CIVI_GATEWAY_WORKERS=2 with CIVI_GATEWAY_RATE_LIMIT_STORAGE=memory://" in refused.stderr
    assert "CIVI_GATEWAY_RATE_LIMIT_PER_WORKER=true" in refused.stderr

    # Told to: it starts, and each worker counts on its own (what the refusal warns of).
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    gw = serve(two_workers(tmp_path, CIVI_GATEWAY_RATE_LIMIT_PER_WORKER="true", TMPDIR=str(scratch)))
    [made] = scratch.glob("civicrm-gateway-metrics-*")  # serve's own multiprocess folder
    wait_for_both_workers(gw.url, made)
    statuses = calls_on_fresh_connections(gw.url, 2 * LIMIT)
    per_worker = settled(made, 2 * LIMIT)
    assert len(per_worker) == 2, per_worker
    assert statuses.count(200) == sum(min(sum(w.values()), LIMIT) for w in per_worker.values())
    assert statuses.count(200) > LIMIT
    gw.stop()
    assert not made.exists()  # removed when serve ends


def in_flight_by_worker(metrics_dir: Path) -> dict[int, float]:
    found = {}
    for path in metrics_dir.glob("gauge_livesum_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "gateway_requests_in_flight":
                    found[int(path.stem.rsplit("_", 1)[-1])] = sample.value
    return found


def test_a_killed_workers_gauges_leave_the_sums(serve, tmp_path):
    """A worker killed with a call in flight never withdraws its gauges itself: the next scrape
    does, while its counters stay."""
    hanging = HangingUpstream(bound=60)
    upstream = ThreadServer(hanging).start()
    metrics_dir = tmp_path / "metrics"
    try:
        gw = serve(
            {
                "CIVI_GATEWAY_WORKERS": "2",
                "CIVI_GATEWAY_BACKEND": "http",
                "CIVI_GATEWAY_HTTP_URL": upstream.url,
                "CIVI_GATEWAY_HTTP_API_KEY": "k" * 16,
                "CIVI_GATEWAY_HTTP_TIMEOUT": "60",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            }
        )
        wait_for_both_workers(gw.url, metrics_dir)

        def stuck_call() -> None:
            with contextlib.suppress(httpx.HTTPError):  # its worker is killed under it
                httpx.post(gw.url + "/v4/Contact/get", json={}, timeout=60)

        caller = threading.Thread(target=stuck_call)
        caller.start()
        deadline = time.monotonic() + 30
        while not (stuck := [pid for pid, n in in_flight_by_worker(metrics_dir).items() if n == 1]):
            assert time.monotonic() < deadline, "the call never got in flight"
            time.sleep(0.01)  # poll interval
        [pid] = stuck
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            scrape = client.get("/metrics", headers={"Connection": "close"}).text
            assert value(scrape, "gateway_requests_in_flight") == 2.0  # the stuck call and this one
            os.kill(pid, signal.SIGKILL)
            caller.join(timeout=60)
            deadline = time.monotonic() + 60
            while (metrics_dir / f"gauge_livesum_{pid}.db").exists():
                assert time.monotonic() < deadline, "the dead worker's gauges stayed"
                scrape = client.get("/metrics", headers={"Connection": "close"}).text
            scrape = client.get("/metrics", headers={"Connection": "close"}).text
            assert value(scrape, "gateway_requests_in_flight") == 1.0  # this scrape only
        assert (metrics_dir / f"counter_{pid}.db").exists()  # its counts still add up
        assert hanging.requests == 1
    finally:
        hanging.release.set()
        upstream.stop()
