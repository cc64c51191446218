"""Pipe workers SIGKILLed under load (issue 21, item 4): a read in flight is tried once more on
another worker, so no read is answered 502; a write in flight is answered 502 and never sent
again (its record exists at most once)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest

from tests.conftest import assert_problem
from tests.cv.conftest import Site, cv_settings, eventually, gateway

READ = {"select": ["id", "display_name"], "where": [["id", "=", 2]]}


def busy_pids(backend: Any) -> list[int]:
    return [worker.pid for worker in backend.unwrapped().workers(busy=True)]


async def test_sigkill_under_read_load(site: Site) -> None:
    settings = cv_settings(
        site, "pipe", pipe_size=2, cv_timeout=20, cv_context="env CV_SANDBOX_CALL_DELAY=0.1"
    )
    async with gateway(settings) as gw:
        backend: Any = gw.backend  # type: ignore[attr-defined]
        stop = asyncio.Event()
        reads: list[int] = []
        writes: dict[str, int] = {}
        done = [0] * 4  # calls each reader completed

        async def reader(number: int) -> None:
            while not stop.is_set():
                response = await gw.post("/v4/Contact/get", json=READ)
                reads.append(response.status_code)
                done[number] += 1
                if response.status_code == 200:
                    assert [row["id"] for row in response.json()] == [2]

        async def writer() -> None:
            number = 0
            while not stop.is_set():
                number += 1
                name = f"Load{number}"
                response = await gw.post(
                    "/v4/Contact/create", json={"values": {"contact_type": "Individual", "first_name": name}}
                )
                writes[name] = response.status_code
                if response.status_code != 200:
                    assert_problem(response, 502, "upstream-invalid-response")

        tasks = [asyncio.create_task(reader(number)) for number in range(4)]
        tasks.append(asyncio.create_task(writer()))
        killed = 0
        try:
            for _ in range(3):  # three rounds: both workers killed mid-call each time
                assert await eventually(lambda: len(busy_pids(backend)) == 2, within=20)
                for pid in busy_pids(backend):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed += 1
                # Before the next round: every read in flight at the kill has been answered
                # (retried ones included: a read killed on two workers is not this case).
                seen = list(done)
                assert await eventually(
                    lambda seen=seen: all(now > then for now, then in zip(done, seen, strict=True)), within=30
                )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert killed == 6
        assert reads and set(reads) == {200}, sorted(set(reads))
        assert backend.stats()["retried"] >= 1
    # every write ran at most once; those answered 200 exactly once
    for name, status in writes.items():
        count = site.count("Contact", [["first_name", "=", name]])
        assert count == (1 if status == 200 else count), (name, status, count)
        assert count <= 1, (name, status, count)


async def test_free_workers_go_to_the_oldest_waiter() -> None:
    """A freed slot goes to the caller that waited longest, not to one that just arrived (with
    asyncio.Queue a newcomer could take it, and a queued write waited until its 504)."""
    from gateway.backends.pipe import IdleSlots, _Slot

    idle = IdleSlots()
    first, second = _Slot(1), _Slot(2)
    waiter = asyncio.create_task(idle.get(5))
    await asyncio.sleep(0)  # one turn of the loop: the waiter is queued
    idle.put(first)
    newcomer = asyncio.create_task(idle.get(5))
    await asyncio.sleep(0)
    assert waiter.done() and waiter.result() is first
    assert not newcomer.done()
    idle.put(second)
    assert await newcomer is second
    assert len(idle) == 0
    with pytest.raises(TimeoutError):
        await idle.get(0.01)
    idle.put(first)  # the timed-out waiter is gone: the slot stays free
    assert len(idle) == 1 and first in idle
