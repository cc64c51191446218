"""Where background metadata work runs (the OpenAPI documents' warm-up), so that it never
crowds out clients' calls.

On the ``cv`` and ``pipe`` backends CiviCRM runs as local processes: the pipe pool's workers
are the clients' (a warm-up holding them makes calls queue behind it), and ``cv`` per call
would start a process for every metadata call. There the warm-up gets a small pipe pool of its
own, started for it and stopped after, whose workers run at a lower CPU priority: with no
client about they use every core (the cold document is ready soonest), and a client's call,
when one comes, gets the CPU first. Other backends (http, sandbox) are used as they are.

``civicrm-gateway serve`` starts those workers before it imports the app
(:func:`start_early`): CiviCRM boots in them on the core the imports leave idle, and the
warm-up finds them ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gateway.backends.base import Backend

if TYPE_CHECKING:
    from gateway.backends.config import CvConfig
    from gateway.backends.pipe import PipeBackend

log = logging.getLogger("gateway.backends.warmup")

# How much lower the warm-up's workers run (nice(1)): CFS then gives a client's worker ~10x
# their CPU share when both want it.
NICE = 10
WORKERS_MAX = 2


def warmup_workers() -> int:
    """One worker per core, at most :data:`WORKERS_MAX` (each boots CiviCRM once)."""
    return max(1, min(WORKERS_MAX, os.cpu_count() or 1))


def _pool(config: CvConfig) -> PipeBackend:
    from gateway.backends.pipe import PipeBackend

    return PipeBackend(dataclasses.replace(config, pipe_size=warmup_workers()), nice=NICE)


# Pools started ahead by start_early, by their config, each with its start, until the warm-up
# takes them (or close_early stops them).
_early: dict[CvConfig, tuple[PipeBackend, asyncio.Task[None]]] = {}


async def start_early(config: CvConfig) -> None:
    """Start the warm-up's workers for a cv or pipe backend of ``config`` now, ahead of the
    warm-up; returns once their processes run (reniced), not once CiviCRM has booted in them."""
    pool = _pool(config)
    if pool.config in _early:
        return
    log.info("metadata warm-up: starting %d cv pipe worker(s) ahead", pool.size)
    starting = asyncio.get_running_loop().create_task(pool.start())
    _early[pool.config] = (pool, starting)
    # pool.start() spawns each worker and lowers its priority in one step: the caller may then
    # hold the event loop (importing the app) while CiviCRM boots.
    for _ in range(500):
        spawned = [w for w in pool._workers if w.pid is not None]
        if starting.done() or len(spawned) >= pool.size:
            break
        await asyncio.sleep(0.001)


async def close_early() -> None:
    """Stop the workers :func:`start_early` started that no warm-up took."""
    while _early:
        _, (pool, starting) = _early.popitem()
        with contextlib.suppress(Exception):
            await starting
        await pool.close()


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
    pool = _pool(inner.config)
    size = pool.size
    early = _early.pop(pool.config, None)
    if early is not None:
        pool = early[0]
    try:
        await (early[1] if early is not None else pool.start())
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
