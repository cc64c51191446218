"""Two gateways for the sandbox-parity test: one on a real CiviCRM, one on the sandbox, each
serving an admin and a least-privileged "staff" API consumer.

- Real site: the HTTP backend with the kit's admin key; the staff consumer's calls carry the
  kit's staff key (a client identity, ``civicrm_api_key_file``).
- Sandbox: the admin consumer's calls go through the embedded sandbox backend (what a user gets
  by default). The embedded backend runs every call as the sandbox's admin (it takes no client
  identity), so the staff consumer's calls go through the HTTP backend to the sandbox's own
  wire server, with the sandbox's "api_staff" user's key: the same code path as on the real
  site, on the same sandbox data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.backends.sandbox import SandboxBackend
from gateway.sandbox.engine import Sandbox
from gateway.sandbox.wire import WireConfig, create_wire_app
from gateway.services import sandbox_config
from gateway.settings import Settings
from tests.conftest import ThreadServer, gateway_client
from tests.real.kit import Kit
from tests.real.parity_compare import Normaliser
from tests.real.parity_corpus import ADMIN, STAFF, Call


@dataclass
class Side:
    """One side of the comparison: a gateway client per user, the fixture's ids by name."""

    name: str
    clients: dict[str, httpx.AsyncClient]
    tokens: dict[str, str]
    ids: dict[str, int] = field(default_factory=dict)
    normaliser: Normaliser = field(default_factory=Normaliser)

    def resolve(self, value: Any) -> Any:
        """ "@name" -> the id of the fixture record of that name (also inside "$..." chains)."""
        if isinstance(value, str) and value.startswith("@") and value[1:] in self.ids:
            return self.ids[value[1:]]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    async def send(self, user: str, path: str, params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return await self.clients[user].post(path, json=self.resolve(params), headers=headers)

    async def run(self, call: Call) -> tuple[int, Any]:
        """(status, body) of one call. Other tests may restart the shared real site meanwhile:
        a call that never reached it (503 upstream-unavailable) is sent again, for a while."""
        for _ in range(UNAVAILABLE_RETRIES):
            response = await self.send(call.user, call.path, call.params)
            if response.status_code != 503 or "upstream-unavailable" not in response.text:
                break
            await asyncio.sleep(1)
        try:
            body = response.json()
        except ValueError:
            body = {"unparsed": response.text[:500]}
        return response.status_code, body

    def normalise(self, call: Call, status: int, body: Any, name: str | None = None) -> dict[str, Any]:
        """The answer as compared; a fixture record (``name``) or one a write created gets its id
        named first."""
        if status == 200 and isinstance(body, list) and call.action.lower() in WRITES:
            for record in body:
                if isinstance(record, dict) and str(record.get("id", "")).isdigit():
                    if name is not None:
                        self.ids[name] = int(record["id"])
                        self.normaliser.ids.name(call.entity, int(record["id"]), name)
                    else:
                        self.normaliser.ids.created_by_write(call.entity, int(record["id"]))
        return self.normaliser.answer(status, body, call.entity, call.params, call.action)


WRITES = ("create", "save", "replace")
UNAVAILABLE_RETRIES = 60


def clients_file(directory: Path, staff_key: str) -> tuple[Path, dict[str, str]]:
    """A clients file with an admin consumer (the gateway's own credentials) and a staff one."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = {ADMIN: secrets.token_urlsafe(24), STAFF: secrets.token_urlsafe(24)}
    key_file = directory / "staff.key"
    key_file.write_text(staff_key)
    key_file.chmod(0o600)
    path = directory / "clients.toml"
    sha = {user: hashlib.sha256(token.encode()).hexdigest() for user, token in tokens.items()}
    path.write_text(
        f'[clients.admin]\ntoken_sha256 = "{sha[ADMIN]}"\n\n'
        f'[clients.staff]\ntoken_sha256 = "{sha[STAFF]}"\ncivicrm_api_key_file = "{key_file}"\n'
    )
    return path, tokens


def _settings(directory: Path, clients: Path, **values: Any) -> Settings:
    directory.mkdir(parents=True, exist_ok=True)
    return Settings(
        state_dir=directory,
        clients_file=clients,
        audit_sinks=[],
        openapi_prebuild=False,
        openapi_disk_cache=False,
        metrics_enabled=False,
        http_timeout=60,
        # the comparison wants every answer, not a breaker's 503 after a site restart
        breaker_threshold=10_000,
        **values,
    )


@contextlib.asynccontextmanager
async def real_side(kit: Kit, directory: Path) -> AsyncIterator[Side]:
    clients, tokens = clients_file(directory, kit.staff_key)
    settings = _settings(
        directory / "state", clients, backend="http", http_url=kit.url, http_api_key=kit.admin_key
    )
    async with gateway_client(settings) as client:
        yield Side("real", {ADMIN: client, STAFF: client}, tokens)


@contextlib.asynccontextmanager
async def sandbox_side(directory: Path) -> AsyncIterator[Side]:
    sandbox = Sandbox(":memory:", demo=0)
    staff = sandbox.ensure_api_staff()  # contact 3, as the kit's staff user
    wire = ThreadServer(create_wire_app(sandbox, WireConfig.for_sandbox(sandbox))).start()
    try:
        clients, tokens = clients_file(directory, staff["api_key"])
        embedded = _settings(
            directory / "state-a", clients, backend="sandbox", sandbox_demo=0, sandbox_db=":memory:"
        )
        over_http = _settings(
            directory / "state-s",
            clients,
            backend="http",
            http_url=wire.url,
            http_api_key=sandbox.admin_api_key,
        )
        async with (
            gateway_client(
                embedded, backend=SandboxBackend(sandbox_config(embedded), sandbox=sandbox)
            ) as admin,
            gateway_client(over_http) as staff_client,
        ):
            yield Side("sandbox", {ADMIN: admin, STAFF: staff_client}, tokens)
    finally:
        await asyncio.to_thread(wire.stop)
        sandbox.close()
