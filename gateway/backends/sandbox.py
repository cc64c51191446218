"""The embedded sandbox: an in-process CiviCRM emulator, so the gateway runs with no CiviCRM.

The gateway acts as the sandbox's admin user with permission checks on, as it would over REST
with an admin's API key.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio

from gateway.backends.base import Backend
from gateway.backends.config import SandboxConfig
from gateway.core.call import Call
from gateway.core.errors import from_civicrm
from gateway.core.results import Records, v3_records, v4_records

ADMIN_CONTACT_ID = 2

log = logging.getLogger("gateway.sandbox")


class SandboxBackend(Backend):
    name = "sandbox"

    def __init__(self, config: SandboxConfig, sandbox: Any | None = None) -> None:
        self.config = config
        self._sandbox = sandbox
        self._owned = sandbox is None
        # SQLite work is short but blocking: run it off the event loop, one call at a time.
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def sandbox(self) -> Any:
        if self._sandbox is None:
            from gateway.sandbox.database import open_sandbox

            where = self.config.sandbox_db_path
            self._sandbox = open_sandbox(where, self.config.sandbox_demo)
            log.info(
                "sandbox data %s",
                "in memory: lost when the process stops"
                if where == ":memory:"
                else f"in {os.path.abspath(where)} (kept across restarts; 'civicrm-gateway "
                "sandbox --reset' starts afresh)",
            )
        return self._sandbox

    async def start(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.sandbox, limiter=self._limiter)

    async def close(self) -> None:
        if self._owned and self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        return await anyio.to_thread.run_sync(
            self._call, call.version, call.entity, call.action, call.to_params(), limiter=self._limiter
        )

    def _call(self, version: int, entity: str, action: str, params: dict[str, Any]) -> Records:
        from gateway.sandbox.errors import CiviError

        sandbox = self.sandbox
        if version == 3:
            envelope = sandbox.api3(
                entity, action, params, check_permissions=True, contact_id=ADMIN_CONTACT_ID
            )
            return v3_records(action, envelope)
        try:
            envelope = sandbox.api4(
                entity, action, params, check_permissions=True, contact_id=ADMIN_CONTACT_ID
            )
        except CiviError as exc:
            raise from_civicrm(
                exc.message, status=exc.status, error_code=exc.error_code, extra=exc.extra
            ) from None
        return v4_records(envelope)
