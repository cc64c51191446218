"""Where background metadata work runs (the OpenAPI documents' warm-up), so that it never
crowds out clients' calls.

On the ``cv`` and ``pipe`` backends CiviCRM runs as local processes: the pipe pool's workers
are the clients' (a warm-up holding them makes calls queue behind it), and ``cv`` per call
would start a process for every metadata call. There the warm-up gets a small pipe pool of its
own, started for it and stopped after, whose workers run at a lower CPU priority: with no
client about they use every core (the cold document is ready soonest), and a client's call,
when one comes, gets the CPU first. Other backends (http, sandbox) are used as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator

from gateway.backends.base import Backend

log = logging.getLogger("gateway.backends.warmup")

# How much lower the warm-up's workers run (nice(1)): CFS then gives a client's worker ~10x
# their CPU share when both want it.
NICE = 10
WORKERS_MAX = 2


def warmup_workers() -> int:
    """One worker per core, at most :data:`WORKERS_MAX` (each boots CiviCRM once)."""
    return max(1, min(WORKERS_MAX, os.cpu_count() or 1))


@contextlib.asynccontextmanager
async def background_backend(
    backend: Backend, *, closing: set[asyncio.Task[None]] | None = None
) -> AsyncIterator[tuple[Backend, int]]:
    """A backend for background metadata calls and how many of them to run at once: a
    low-priority pipe pool of its own on the cv and pipe backends, else ``backend`` itself.

    The pool is stopped on leaving; with ``closing``, in a task put there (for its owner to
    await later) instead: its workers take a few tens of milliseconds to end, and what they
    fetched need not wait for that."""
    from gateway.backends.cv import CvBackend
    from gateway.backends.pipe import PipeBackend

    inner = backend.unwrapped()
    if not isinstance(inner, CvBackend | PipeBackend):
        yield backend, 0
        return
    size = warmup_workers()
    pool = PipeBackend(dataclasses.replace(inner.config, pipe_size=size), nice=NICE)
    try:
        await pool.start()
    except Exception as exc:  # e.g. a cv without ``pipe``: per call, through the backend
        log.info("metadata warm-up: no pipe pool of its own (%s); using the %s backend", exc, inner.name)
        yield backend, 0
        return
    try:
        yield pool, size
    finally:
        if closing is None:
            await pool.close()
        else:
            task = asyncio.get_running_loop().create_task(pool.close())
            closing.add(task)
            task.add_done_callback(closing.discard)
