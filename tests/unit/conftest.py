"""Shared by the unit tests of the pure core (tests/unit): CiviCRM 5.77's metadata and data from
the embedded sandbox, answered to the core the way a backend answers it.

The core's modules that look metadata up take a :class:`gateway.core.schema.Schema`, which asks
a backend. :class:`SandboxSite` is that backend reduced to its one method, reading the sandbox
engine directly: the real metadata (getFields, getActions, APIv3 getfields) without an app, a
thread or a server. It takes a call in both shapes a backend has had, ``(version, entity,
action, params)`` and one parsed :class:`~gateway.core.call.Call` (issue 27 moves the backend
seam to the latter), so the redesign of that seam does not reach these tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.core.call import Call
from gateway.core.errors import from_civicrm
from gateway.core.results import Records, v3_records, v4_records
from gateway.core.schema import Schema
from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError

ADMIN = 2  # the sandbox's admin contact, as the sandbox backend runs its calls


class SandboxSite:
    """A backend's ``call`` over the sandbox engine; records what it was asked."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.calls: list[tuple[int, str, str, dict[str, Any]]] = []

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        version, entity, action, params = call.version, call.entity, call.action, call.to_params()
        self.calls.append((version, entity, action, params))
        if version == 3:
            envelope = self.sandbox.api3(entity, action, params, check_permissions=True, contact_id=ADMIN)
            return v3_records(action, envelope)
        try:
            envelope = self.sandbox.api4(entity, action, params, check_permissions=True, contact_id=ADMIN)
        except CiviError as exc:
            raise from_civicrm(exc.message, status=exc.status, error_code=exc.error_code) from None
        return v4_records(envelope)

    def metadata_generation(self) -> int:
        return 0


@pytest.fixture(scope="session")
def metadata_site() -> Iterator[SandboxSite]:
    """A sandbox only read from (metadata): shared by every test of the session."""
    sandbox = Sandbox()
    yield SandboxSite(sandbox)
    sandbox.close()


@pytest.fixture
def schema(metadata_site: SandboxSite) -> Schema:
    """A fresh Schema (its own caches) over the shared sandbox's metadata."""
    return Schema(metadata_site, None)  # type: ignore[arg-type]


@pytest.fixture
def site() -> Iterator[SandboxSite]:
    """A sandbox of this test's own, to write to: contacts 1-3 (organisation, admin, staff)."""
    sandbox = Sandbox()
    sandbox.ensure_staff()
    yield SandboxSite(sandbox)
    sandbox.close()
