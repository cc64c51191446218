"""The one abstraction every backend implements."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping

from gateway.core.call import Call, parse
from gateway.core.errors import GatewayError, Slug
from gateway.core.identity import Identity
from gateway.core.results import Records

# A batch member's outcome: the records, or the error that call alone raised.
BatchResult = Records | GatewayError


class TransientError(GatewayError):
    """An upstream failure worth another try for a call that is safe to repeat.

    ``reached`` says whether the request may have reached CiviCRM (False only when the
    connection itself failed): a write is retried only when it certainly did not.
    ``retry_after`` is the upstream's own Retry-After, in seconds, when it sent one.
    """

    def __init__(
        self,
        slug: Slug,
        detail: str,
        *,
        reached: bool,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(slug, detail, headers=headers)
        self.reached = reached
        self.retry_after = retry_after


class Backend(ABC):
    """Forwards one parsed :class:`~gateway.core.call.Call` to CiviCRM and returns its records.

    The call is the one the flow prepared (parsed, names resolved, policy checked): a backend
    turns it into params (``call.to_params()``) only where they go on the wire, and asks the
    call, not the params, whether it is a read or metadata. ``call`` raises
    :class:`gateway.core.errors.GatewayError` (built by ``errors.from_civicrm`` for CiviCRM's
    own failures) and never anything else for an expected failure.
    """

    name: str = "backend"

    async def start(self) -> None:
        """Open connections or processes; called once in the app's lifespan."""

    async def close(self) -> None:
        """Release everything ``start`` opened."""

    @abstractmethod
    async def call(self, call: Call, *, identity: Identity | None = None) -> Records:
        """Run ``call`` on CiviCRM.

        ``identity``, when given, is the CiviCRM user this client's calls run as (its own API
        key over HTTP, its own user for cv) instead of the gateway's configured one."""

    async def batch(
        self,
        calls: Mapping[str, Call],
        *,
        identity: Identity | None = None,
        concurrency: int = 8,
    ) -> dict[str, BatchResult]:
        """Run many calls of one API version; each name maps to its records or its own error.

        The default runs them concurrently (at most ``concurrency`` at a time) through
        :meth:`call`; a backend with a native multi-call form overrides it."""
        gate = asyncio.Semaphore(concurrency)

        async def one(call: Call) -> BatchResult:
            async with gate:
                try:
                    return await self.call(call, identity=identity)
                except GatewayError as exc:
                    return exc

        names = list(calls)
        results = await asyncio.gather(*(one(calls[name]) for name in names))
        return dict(zip(names, results, strict=True))

    # --- what the health routes, schemas and tests may ask of any backend ----------------------
    def unwrapped(self) -> Backend:
        """The backend that does the calls, under any wrapper: diagnostics and tests look at
        its own state (a pipe pool's workers) through this, never through the wrapper."""
        return self

    def flush_metadata(self) -> int:
        """Forget cached metadata; how many entries were dropped (none without a cache)."""
        return 0

    def metadata_generation(self) -> int:
        """Goes up on every flush of cached metadata: what was built from it before is stale."""
        return 0

    def stats(self) -> dict[str, float]:
        """Gauges worth exporting (pool size, busy workers, queued callers); empty by default."""
        return {}

    async def check(self) -> None:
        """A cheap authenticated call; raises GatewayError when CiviCRM is not usable."""
        await self.call(PROBE_CALL)


# The cheapest authenticated read: what a health check and the breaker's probe send.
PROBE_CALL = parse(4, "Contact", "get", {"select": ["id"], "limit": 1})
