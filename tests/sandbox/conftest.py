from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.sandbox.engine import Sandbox


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    sandbox = Sandbox()
    sandbox.ensure_staff()  # contact 3: a user without admin rights, for permission tests
    yield sandbox
    sandbox.close()


@pytest.fixture
def ada(sb: Sandbox) -> int:
    env = sb.api4(
        "Contact",
        "create",
        {"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace"}},
    )
    return env["values"][0]["id"]
