"""cv reached through a context that behaves like ``docker exec`` (``fake_docker_exec.py``:
the command runs in a session of its own, so killing the context process leaves it running).

- a hung call is killed where cv runs, not only locally, and the 504 says a write may have
  happened (issue 19, item 3), on both backends;
- the "container" stopped: the pipe answers 503 ``upstream-unavailable`` like the cv backend,
  and the daemon's stderr (with the container id) is logged, never in the client's detail
  (issue 19, item 2).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_problem
from tests.cv.conftest import BACKENDS, Site, cv_settings, eventually, gateway, process_gone, read_pids

FAKE_DOCKER_EXEC = Path(__file__).resolve().parent / "fake_docker_exec.py"
CONTAINER_ID = "3f2a9c1d7e6b4a5f"
HUNG = {"values": {"contact_type": "Individual", "first_name": "Hung", "last_name": "Write"}}


def docker_exec(*env: str) -> str:
    """A ``cv_context`` like ``docker exec -i civicrm env VAR=...``."""
    return shlex.join([sys.executable, str(FAKE_DOCKER_EXEC), *(["env", *env] if env else [])])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_hung_call_killed_where_cv_runs(site: Site, backend: str, tmp_path: Path) -> None:
    """A create hangs before it writes: 504 after cv_timeout saying the write may have
    happened; cv is then killed inside the "container" (it would otherwise sleep 60 s and then
    write), so the record never appears."""
    pids = tmp_path / "pids"
    context = docker_exec("CV_SANDBOX_CALL_DELAY=60", f"CV_SANDBOX_PID_FILE={pids}")
    # 3 s: time for a process-per-call stand-in to start (and note its pid) on a busy machine
    settings = cv_settings(site, backend, cv_timeout=3, cv_context=context)
    async with gateway(settings) as gw:
        started = read_pids(pids)  # the pipe worker's cv, started with the pool
        body = assert_problem(await gw.post("/v4/Contact/create", json=HUNG), 504, "upstream-timeout")
        assert "did not answer within 3 s" in body["detail"]
        assert "a write may have been committed" in body["detail"]
        assert "killed where it runs" in body["detail"]
        hung = read_pids(pids)[-1:] if backend == "cv" else started
        assert len(hung) == 1
        # Not our child (it runs in its own session, like a process in a container): only the
        # kill inside the context can end it.
        assert await eventually(lambda: process_gone(hung[0]), within=8), hung
        if backend == "pipe":
            backend_obj: Any = gw.backend  # type: ignore[attr-defined]
            assert backend_obj.stats()["restarts"] == 1
    assert site.count("Contact", [["first_name", "=", "Hung"]]) == 0


async def test_pipe_worker_reports_its_pid_through_the_context(site: Site, tmp_path: Path) -> None:
    """The pid a worker reports is cv's own where it runs; without a context nothing extra
    runs (no shell, no pid line)."""
    pids = tmp_path / "pids"
    context = docker_exec(f"CV_SANDBOX_PID_FILE={pids}")
    async with gateway(cv_settings(site, "pipe", cv_context=context)) as gw:
        (worker,) = gw.backend.unwrapped().workers()  # type: ignore[attr-defined]
        assert worker.remote_pid == read_pids(pids)[0]
        assert worker.argv[2:5] == ["env", f"CV_SANDBOX_PID_FILE={pids}", "sh"]
        assert (await gw.post("/v4/Contact/get", json={"select": ["id"], "limit": 1})).status_code == 200
    async with gateway(cv_settings(site, "pipe")) as gw:
        (worker,) = gw.backend.unwrapped().workers()  # type: ignore[attr-defined]
        assert worker.remote_pid is None
        assert "sh" not in worker.argv
    off = cv_settings(site, "pipe", cv_context=context, cv_context_kill=False)
    async with gateway(off) as gw:
        (worker,) = gw.backend.unwrapped().workers()  # type: ignore[attr-defined]
        assert worker.remote_pid is None and worker.kill_argv is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_container_down(
    site: Site, backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The container stops under a running gateway: 503 upstream-unavailable on both backends,
    for reads and writes alike (nothing ran), with the daemon's message only in the log."""
    down = tmp_path / "container-stopped"
    pids = tmp_path / "pids"
    context = shlex.join(
        [
            "env",
            f"FAKE_DOCKER_DOWN={down}",
            sys.executable,
            str(FAKE_DOCKER_EXEC),
            "env",
            f"CV_SANDBOX_PID_FILE={pids}",
        ]
    )
    caplog.set_level(logging.WARNING, logger="gateway")
    async with gateway(cv_settings(site, backend, cv_context=context)) as gw:
        assert (await gw.post("/v4/Contact/get", json={"select": ["id"], "limit": 1})).status_code == 200
        workers = gw.backend.unwrapped().workers() if backend == "pipe" else []  # type: ignore[attr-defined]
        down.touch()
        for pid in read_pids(pids):  # stopping a container ends every process in it
            with contextlib_suppress():
                os.kill(pid, signal.SIGKILL)
        for worker in workers:
            assert await eventually(lambda worker=worker: not worker.alive)
        for path, payload in (
            ("/v4/Contact/get", {"select": ["id"], "limit": 1}),
            ("/v4/Contact/create", HUNG),
        ):
            body = assert_problem(await gw.post(path, json=payload), 503, "upstream-unavailable")
            assert CONTAINER_ID not in body["detail"]
            assert "daemon" not in body["detail"]
            assert "see the gateway's log" in body["detail"]
    assert any(CONTAINER_ID in record.getMessage() for record in caplog.records)
    assert site.count("Contact", [["first_name", "=", "Hung"]]) == 0


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(ProcessLookupError)
