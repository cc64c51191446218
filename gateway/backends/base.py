"""The one abstraction every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..results import Records


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
    async def call(self, version: int, entity: str, action: str,
                   params: dict[str, Any]) -> Records:
        """Run ``entity.action`` with ``params`` (already normalised) on API ``version``."""

    async def check(self) -> None:
        """A cheap authenticated call; raises GatewayError when CiviCRM is not usable."""
        await self.call(4, "Contact", "get", {"select": ["id"], "limit": 1})
