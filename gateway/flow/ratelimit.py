"""Per-client rate limits (the ``limits`` library; shared through Redis across replicas) and
per-client caps on calls in flight to the backend."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gateway.core.errors import GatewayError
from gateway.flow.clients import Client

if TYPE_CHECKING:
    from gateway.telemetry.metrics import Metrics

# How long a call may wait for one of its client's in-flight slots before a 429.
CONCURRENCY_WAIT = 10.0


class Limiter:
    def __init__(
        self,
        storage: str,
        *,
        default_rate: str | None = None,
        client_concurrency: int = 16,
        metrics: Metrics | None = None,
        concurrency_wait: float = CONCURRENCY_WAIT,
    ) -> None:
        """``storage``: the limits library's storage URI (``memory://``, ``redis://...``);
        ``default_rate`` (``"600/minute"``) and ``client_concurrency``: for clients whose
        policy sets none."""
        self._metrics = metrics
        self._concurrency_wait = concurrency_wait
        self._storage = storage_from_string(storage if storage.startswith("async+") else "async+" + storage)
        self._window = MovingWindowRateLimiter(self._storage)
        self._default_rate = parse(default_rate) if default_rate else None
        self._default_concurrency = client_concurrency
        self._slots: dict[str, asyncio.Semaphore] = {}

    def _rate(self, client: Client) -> RateLimitItem | None:
        return client.policy.rate or self._default_rate

    async def _check_rate(self, client: Client, cost: int = 1) -> None:
        rate = self._rate(client)
        if rate is None or await self._window.hit(rate, "client", client.name, cost=cost):
            return
        stats = await self._window.get_window_stats(rate, "client", client.name)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        if self._metrics is not None:
            self._metrics.rate_limited.labels("rate").inc()
        raise GatewayError(
            "rate-limited", f"Over this client's rate limit of {rate}.", headers={"Retry-After": str(retry)}
        )

    async def charge(self, client: Client, cost: int = 1) -> None:
        """Count ``cost`` calls against the client's rate (every request on arrival, refused
        ones included; chained calls, batch members and stream pages as they are sent)."""
        if cost > 0:
            await self._check_rate(client, cost)

    @asynccontextmanager
    async def admit(self, client: Client, cost: int = 1) -> AsyncIterator[None]:
        """Counts the call (a batch: each of its ``cost`` calls) against the client's rate,
        then holds one of its in-flight slots. ``cost=0``: a later step of a call already
        counted (only the slot is taken)."""
        await self.charge(client, cost)
        slots = self._slots.get(client.name)
        if slots is None:
            slots = self._slots[client.name] = asyncio.Semaphore(
                client.policy.concurrency or self._default_concurrency
            )
        try:
            if slots.locked():  # wait_for costs a task: only pay it when the client must wait
                await asyncio.wait_for(slots.acquire(), self._concurrency_wait)
            else:
                await slots.acquire()
        except TimeoutError:
            if self._metrics is not None:
                self._metrics.rate_limited.labels("concurrency").inc()
            raise GatewayError(
                "rate-limited", "This client has too many calls in flight.", headers={"Retry-After": "1"}
            ) from None
        try:
            yield
        finally:
            slots.release()
