"""Fixtures for the cv and cv pipe backends: the cv stand-in (``python -m gateway.sandbox.cv``)
on a SQLite "site" shared by every process, gateways built on it (httpx on the ASGI app, with
its lifespan), wrapper scripts standing in for ``docker exec``, and process helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from gateway.web.app import create_app

STAFF_KEY = "staffkey-0c1d2e3f4a5b6c7d"
BACKENDS = ("cv", "pipe")


@dataclass
class Site:
    """A stand-in CiviCRM site: its directory (holding ``civicrm.sandbox.sqlite``)."""

    dir: Path

    @property
    def db(self) -> Path:
        return self.dir / "civicrm.sandbox.sqlite"

    def sandbox(self) -> Any:
        from gateway.sandbox.engine import Sandbox

        return Sandbox(str(self.db))

    def count(self, entity: str, where: list[Any]) -> int:
        sb = self.sandbox()
        try:
            return len(sb.api4(entity, "get", {"select": ["id"], "where": where})["values"])
        finally:
            sb.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CV_SANDBOX_", "CIVI_GATEWAY_", "CIVICRM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", "")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh site: the admin (contact 2, user ``admin``) and a ``staff`` user (contact 3)
    who may only ``access CiviCRM``."""
    site = Site(tmp_path / "site")
    site.dir.mkdir()
    sb = site.sandbox()
    staff = sb.api4(
        "Contact",
        "create",
        {"values": {"contact_type": "Individual", "first_name": "Sam", "last_name": "Staff"}},
    )["values"][0]
    sb.add_user("staff", "pw", staff["id"], ["access CiviCRM"], api_key=STAFF_KEY)
    sb.close()
    yield site


def stand_in(*extra: str) -> str:
    """``cv_command`` running the stand-in (which finds its site like cv: from the cwd)."""
    return shlex.join([sys.executable, "-m", "gateway.sandbox.cv", *extra])


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def cv_settings(site: Site, backend: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": backend,
        "cv_command": stand_in(),
        "cv_cwd": str(site.dir),
        "cv_user": "admin",
        "cv_timeout": 10,
        "pipe_size": 1,
        "pipe_start_timeout": 15,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def gateway(
    settings: Settings, *, token: str | None = None, **app_kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the gateway's ASGI app, with its lifespan (backend start/close).
    ``client.backend`` is the app's backend, for its stats and workers; ``token``: a bearer
    token sent on every request."""
    app = create_app(settings, **app_kwargs)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=60, headers=headers
        ) as client:
            client.backend = app.state.services.backend  # type: ignore[attr-defined]
            yield client


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs and is not left unreaped by us.

    A dead child of ours still in the table is a zombie we failed to reap: not gone. A dead
    grandchild (a cv started by a context process, killed with its group) is re-parented to
    PID 1, whose job reaping it is: gone, as far as the gateway is concerned."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state, parent = fields[0], int(fields[1])
    if state in ("Z", "X"):
        return parent != os.getpid()
    return False


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    """``wait_until`` for async tests: lets the event loop run (and reap) meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def clients_file(tmp_path: Path, **clients: str | None) -> tuple[Path, dict[str, str]]:
    """A clients file giving each named client a token and, when not None, a cv_user.
    Returns the file and each client's Authorization header value."""
    lines, tokens = [], {}
    for name, cv_user in clients.items():
        token = f"token-{name}-{'x' * 24}"
        tokens[name] = f"Bearer {token}"
        lines.append(f"[clients.{name}]")
        lines.append(f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"')
        if cv_user:
            lines.append(f'cv_user = "{cv_user}"')
    path = tmp_path / "clients.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, tokens
