"""The metadata warm-up on the cv and pipe backends runs on a pipe pool of its own, at a
lower CPU priority, started for it and stopped after: the clients' workers are not used."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from gateway.backends import warmup
from gateway.backends.warmup import NICE, background_backend, close_early, start_early, warmup_workers
from gateway.services import cv_config, make_backend, resilient_backend
from gateway.web.openapi.metadata import fetch_metadata
from tests.cv.conftest import BACKENDS, Site, cv_settings, process_gone, stand_in, wait_until


def group_nice(pid: int) -> int | None:
    """The nice value of ``pid``'s autogroup (None: no autogroups here)."""
    group = Path(f"/proc/{pid}/autogroup")
    return int(group.read_text().split()[-1]) if group.exists() else None


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_the_warm_up_runs_on_low_priority_workers_of_its_own(site: Site, backend_name: str) -> None:
    backend = resilient_backend(
        make_backend(cv_settings(site, backend_name)), cv_settings(site, backend_name)
    )
    await backend.start()
    try:
        before = backend.unwrapped().stats().get("calls", 0)
        async with background_backend(backend) as (pool, workers):
            assert pool is not backend and workers == warmup_workers()
            pids = [w.pid for w in pool.unwrapped().workers()]  # type: ignore[attr-defined]
            assert len(pids) == workers
            mine = os.getpriority(os.PRIO_PROCESS, 0)
            assert all(os.getpriority(os.PRIO_PROCESS, pid) == min(19, mine + NICE) for pid in pids)
            # Each is in a session of its own: on Linux with autogroups, a scheduling group
            # of its own, which is lowered too (else its nice value would change nothing).
            assert all(group_nice(pid) in (None, NICE) for pid in pids)
        assert all(process_gone(pid) for pid in pids)  # stopped after
        metadata = await fetch_metadata(backend)
        assert metadata.entity("Contact") is not None
        assert metadata.entity("Contact")["fields"]["create"]
        # Nothing was asked of the clients' backend (the entity list too runs on the pool).
        assert backend.unwrapped().stats().get("calls", 0) == before
    finally:
        await backend.close()


async def test_other_backends_are_used_as_they_are() -> None:
    from gateway.settings import Settings

    backend = make_backend(Settings(backend="sandbox", sandbox_demo=0))
    async with background_backend(backend) as (pool, workers):
        assert pool is backend and workers == 0


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_workers_started_early_are_the_ones_the_warm_up_takes(site: Site, backend_name: str) -> None:
    """``serve`` starts the warm-up's workers before it imports the app: they run, reniced,
    once start_early returns (CiviCRM then boots while the app is imported), and the warm-up
    takes them instead of starting its own."""
    settings = cv_settings(site, backend_name)
    await start_early(cv_config(settings))
    ((pool, _),) = warmup._early.values()
    pids = [w.pid for w in pool._workers]  # type: ignore[attr-defined]
    assert len(pids) == warmup_workers() and all(pid is not None for pid in pids)
    assert all(os.getpriority(os.PRIO_PROCESS, pid) >= NICE for pid in pids if pid is not None)
    backend = resilient_backend(make_backend(settings), settings)
    await backend.start()
    try:
        metadata = await fetch_metadata(backend)
    finally:
        await backend.close()
    assert metadata.entity("Contact") is not None
    assert warmup._early == {} and all(process_gone(pid) for pid in pids if pid is not None)


async def test_workers_started_early_that_no_warm_up_takes_are_stopped(site: Site) -> None:
    await start_early(cv_config(cv_settings(site, "pipe")))
    ((pool, _),) = warmup._early.values()
    pids = [w.pid for w in pool._workers]  # type: ignore[attr-defined]
    await close_early()
    assert warmup._early == {} and all(process_gone(pid) for pid in pids if pid is not None)


def test_serve_starts_them_before_the_app_and_builds_the_documents(site: Site, tmp_path: Path) -> None:
    """``civicrm-gateway serve`` on pipe with the documents built at start-up (the early
    path): ready, the documents built, and every worker gone once it has stopped."""
    from tests.conftest import GatewayProcess

    env = {
        "CIVI_GATEWAY_BACKEND": "pipe",
        "CIVI_GATEWAY_CV_COMMAND": stand_in(),
        "CIVI_GATEWAY_CV_CWD": str(site.dir),
        "CIVI_GATEWAY_CV_USER": "admin",
        "CIVI_GATEWAY_PIPE_SIZE": "1",
        "CIVI_GATEWAY_OPENAPI_PREBUILD": "true",
        "CIVI_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        "CIVI_GATEWAY_LOG_LEVEL": "info",
    }
    gateway = GatewayProcess(env, tmp_path).wait_ready(timeout=60)
    try:
        assert wait_until(lambda: "document(s) built in the background" in gateway.log.read_text(), 60)
        document = httpx.get(gateway.url + "/openapi.json", timeout=30).json()
        assert "/v4/Contact/get" in document["paths"]
        log = gateway.log.read_text()
        assert log.index("worker(s) ahead") < log.index("Started server process")
        pids = [int(p) for p in re.findall(r"cv pipe worker \d+ ready \(pid (\d+)", log)]
        assert len(pids) == 1 + warmup_workers()  # the clients' one and the warm-up's
    finally:
        gateway.stop()
    assert wait_until(lambda: all(process_gone(pid) for pid in pids))
