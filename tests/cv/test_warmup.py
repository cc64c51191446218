"""The metadata warm-up on the cv and pipe backends runs on a pipe pool of its own, at a
lower CPU priority, started for it and stopped after: the clients' workers are not used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.backends.warmup import NICE, background_backend, warmup_workers
from gateway.services import make_backend, resilient_backend
from gateway.web.openapi.metadata import fetch_metadata
from tests.cv.conftest import BACKENDS, Site, cv_settings, process_gone


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
