"""Gateways on the real CiviCRM: ``civicrm-gateway serve`` as real uvicorn processes on
127.0.0.1, one per backend (http, cv, pipe) and CiviCRM user (admin, staff).

Processes are started on first use and kept for the whole session (a pipe pool boots CiviCRM
once per worker), so the six combinations cost six start-ups, not one per test. Without a kit
(``CIVI_GATEWAY_TEST_CIVICRM``) every test here is skipped with the reason; under ``CI=true`` it
fails instead (``kit.require_kit``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.real.kit import Kit, require_kit

BACKENDS = ("http", "cv", "pipe")
USERS = ("admin", "staff")
COMBOS = [f"{backend}-{user}" for backend in BACKENDS for user in USERS]


def gateway_env(kit: Kit, backend: str, user: str, **extra: str) -> dict[str, str]:
    """The settings of a gateway on ``backend`` acting as the kit's ``user``."""
    env = {
        "CIVI_GATEWAY_BACKEND": backend,
        "CIVI_GATEWAY_LOG_LEVEL": "warning",
        # a get of every contact (~220 on the kit) is then streamed in pages
        "CIVI_GATEWAY_EXPORT_PAGE_SIZE": "100",
    }
    if backend == "http":
        env.update(
            {
                "CIVI_GATEWAY_HTTP_URL": kit.url,
                "CIVI_GATEWAY_HTTP_API_KEY": kit.key(user),
                "CIVI_GATEWAY_HTTP_TIMEOUT": "30",
            }
        )
    else:
        env.update(
            {
                "CIVI_GATEWAY_CV_COMMAND": str(kit.cv),
                "CIVI_GATEWAY_CV_CWD": str(kit.site),
                "CIVI_GATEWAY_CV_USER": user,
                "CIVI_GATEWAY_CV_TIMEOUT": "30",
                "CIVI_GATEWAY_PIPE_SIZE": "2",
            }
        )
    env.update(extra)
    return env


@dataclass
class RealGateway:
    """One gateway process on the real site, and an HTTP client on it."""

    backend: str
    user: str
    process: GatewayProcess
    client: httpx.Client = field(repr=False)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def admin(self) -> bool:
        return self.user == "admin"

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.user}"

    def post(self, path: str, params: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json={} if params is None else params, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def ok(self, path: str, params: Any = None, **kwargs: Any) -> Any:
        """POST ``path`` and return the JSON body of its 200 answer."""
        response = self.post(path, params, **kwargs)
        assert response.status_code == 200, (
            f"{self.name} {path}: {response.status_code} {response.text[:500]}"
        )
        return response.json()


class Gateways:
    """Gateway processes started on demand and kept until the session ends."""

    def __init__(self, kit: Kit, tmp: pytest.TempPathFactory) -> None:
        self.kit = kit
        self._tmp = tmp
        self._running: dict[str, RealGateway] = {}

    def get(self, backend: str, user: str) -> RealGateway:
        key = f"{backend}-{user}"
        if key not in self._running:
            self._running[key] = self.start(backend, user)
        return self._running[key]

    def start(self, backend: str, user: str, **extra: str) -> RealGateway:
        """A new gateway process (the caller stops it with :meth:`stop` unless it is cached)."""
        directory: Path = self._tmp.mktemp(f"gw-{backend}-{user}")
        process = GatewayProcess(gateway_env(self.kit, backend, user, **extra), directory)
        try:
            process.wait_ready(timeout=60)
        except Exception:
            process.stop()
            raise
        client = httpx.Client(base_url=process.url, timeout=60)
        return RealGateway(backend, user, process, client)

    @staticmethod
    def stop(gateway: RealGateway) -> str:
        gateway.client.close()
        return gateway.process.stop()

    def close(self) -> None:
        for gateway in self._running.values():
            self.stop(gateway)
        self._running.clear()


@pytest.fixture(scope="session")
def kit() -> Kit:
    return require_kit()


@pytest.fixture(scope="session")
def gateways(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    pool = Gateways(kit, tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(params=COMBOS)
def gw(request: pytest.FixtureRequest, gateways: Gateways) -> RealGateway:
    """The gateway on one backend as one CiviCRM user (all six combinations)."""
    backend, user = str(request.param).split("-")
    return gateways.get(backend, user)


@pytest.fixture(params=BACKENDS)
def admin_gw(request: pytest.FixtureRequest, gateways: Gateways) -> RealGateway:
    """The gateway on each backend as the admin user (for what only a writer can do)."""
    return gateways.get(str(request.param), "admin")


_markers = itertools.count(1)


@pytest.fixture
def marker(gateways: Gateways) -> Iterator[str]:
    """A string unique to this test: every contact a test makes carries it as ``source`` (and
    reads are scoped by it, other engineers' records being on the same site). On leaving, those
    contacts are deleted for good, as admin over the http backend, whatever the test used."""
    value = f"gwreal-{os.getpid()}-{int(time.time())}-{next(_markers)}"
    yield value
    admin = gateways.get("http", "admin")
    response = admin.post(
        "/v4/Contact/delete",
        {"where": [["source", "=", value], ["is_deleted", "IN", [0, 1]]], "useTrash": False},
    )
    assert response.status_code == 200, response.text


def make_contact(gateways: Gateways, marker: str, **values: Any) -> dict[str, Any]:
    """A contact carrying ``marker`` (as ``source`` and ``last_name``), made as admin over http,
    with an email at ``<marker>@example.org``."""
    admin = gateways.get("http", "admin")
    rows = admin.ok(
        "/v4/Contact/create",
        {
            "values": {
                "contact_type": "Individual",
                "first_name": "Real",
                "last_name": marker,
                "source": marker,
                **values,
            },
            "chain": {
                "email": [
                    "Email",
                    "create",
                    {"values": {"contact_id": "$id", "email": f"{marker}@example.org"}},
                ]
            },
        },
    )
    return dict(rows[0])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The real-site figures, in every run's output (CI's included)."""
    from tests.real.kit import SUMMARY

    if SUMMARY:
        terminalreporter.section("real CiviCRM figures")
        for line in SUMMARY:
            terminalreporter.write_line(line)
