"""The one abstraction every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..results import Records

if TYPE_CHECKING:
    from ..clients import Identity


class Backend(ABC):
    """Forwards one API call to CiviCRM and returns its records.

    ``call`` raises :class:`gateway.errors.GatewayError` (built by ``errors.from_civicrm`` for
    CiviCRM's own failures) and never anything else for an expected failure.
    """

    name: str = "backend"

    async def start(self) -> None:
        """Open connections or processes; called once in the app's lifespan."""

    async def close(self) -> None:
        """Release everything ``start`` opened."""

    @abstractmethod
    async def call(self, version: int, entity: str, action: str, params: dict[str, Any], *,
                   identity: Identity | None = None) -> Records:
        """Run ``entity.action`` with ``params`` (already normalised) on API ``version``.

        ``identity``, when given, is the CiviCRM user this client's calls run as (its own API
        key over HTTP, its own user for cv) instead of the gateway's configured one."""

    def stats(self) -> dict[str, float]:
        """Gauges worth exporting (pool size, busy workers, queued callers); empty by default."""
        return {}

    async def check(self) -> None:
        """A cheap authenticated call; raises GatewayError when CiviCRM is not usable."""
        await self.call(4, "Contact", "get", {"select": ["id"], "limit": 1})
