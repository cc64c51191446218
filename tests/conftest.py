"""Shared test fixtures: a real loopback CiviCRM stand-in (the sandbox wire server), gateways
built on it (in-process ASGI and real uvicorn processes), and helpers."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import uvicorn

from gateway.settings import Settings
from gateway.web.app import create_app

ADMIN_KEY = "adminkey-7f3c9a1e5b2d4f60"
SITE_KEY = "sitekey-1a2b3c4d5e6f7a8b"
ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"
# A client trusted with everything: its calls go to the backend without metadata look-ups.
TRUSTED_TOKEN = "cgw_trusted-test-client-9f8e7d6c5b4a"
TRUSTED_CLIENTS = ROOT / "tests" / "fixtures" / "trusted-client.toml"


def trusted(settings: Settings) -> Settings:
    """settings with the trusted test client configured (send TRUSTED_TOKEN)."""
    return settings.model_copy(update={"clients_file": TRUSTED_CLIENTS})


def clear_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop every CIVI_GATEWAY_* variable, so a test's settings are only what it sets."""
    for key in [k for k in os.environ if k.startswith("CIVI_GATEWAY_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CIVI_GATEWAY_* variables, no secrets directory, no .env: settings from the test only."""
    clear_gateway_env(monkeypatch)
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)


def free_port() -> int:
    """A loopback port free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of exactly this status and type; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status and body["title"] and body["detail"], body
    return body


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate and key for ``host`` (an IP address or a DNS name), by openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    kind = "IP" if host.replace(".", "").isdigit() else "DNS"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName={kind}:{host}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class ThreadServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in a thread of the test process, so tests can
    change the served app's state between requests."""

    def __init__(self, app: Any, port: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: certificate and key files, to serve HTTPS."""
        self.port = port or free_port()
        self.tls = tls
        cert, key = (str(tls[0]), str(tls[1])) if tls else (None, None)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                ssl_certfile=cert,
                ssl_keyfile=key,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Upstream:
    """The sandbox CiviCRM served over its HTTP wire protocol on a loopback port."""

    url: str
    sandbox: Any
    config: Any
    server: ThreadServer


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from gateway.sandbox.engine import Sandbox

    sb = Sandbox(":memory:", demo=0)
    yield sb
    sb.close()


@pytest.fixture
def upstream(sandbox: Any) -> Iterator[Upstream]:
    from gateway.sandbox.wire import WireConfig, create_wire_app

    config = WireConfig(api_keys={ADMIN_KEY: 2}, site_key=SITE_KEY)
    server = ThreadServer(create_wire_app(sandbox, config)).start()
    yield Upstream(server.url, sandbox, config, server)
    server.stop()


def http_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "http",
        "http_url": url,
        "http_api_key": ADMIN_KEY,
        "http_timeout": 5,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def gateway_client(
    settings: Settings, *, token: str | None = None, **app_kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the gateway's ASGI app, with the app's lifespan running; token:
    sent as a bearer token on every request."""
    app = create_app(settings, **app_kwargs)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as client:
            yield client


@pytest.fixture
async def gw(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on its HTTP backend, talking to the sandbox over a real loopback socket."""
    async with gateway_client(http_settings(upstream.url)) as client:
        yield client


@pytest.fixture
async def gw_sandbox() -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on its embedded sandbox backend (no demo data)."""
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0)) as client:
        yield client


class GatewayProcess:
    """``civicrm-gateway serve`` as a real uvicorn process on 127.0.0.1."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *, module: str = "gateway") -> None:
        """``module``: what ``python -m ... serve`` runs (a benchmark's wrapper of the gateway)."""
        self.port = free_port()
        self.log = tmp_path / f"gateway-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
        full_env.update(
            {
                "CIVI_GATEWAY_PORT": str(self.port),
                "CIVI_GATEWAY_HOST": "127.0.0.1",
                "CIVI_GATEWAY_SECRETS_DIR": str(tmp_path / "none"),
                # no metadata calls at start-up unless a test asks: they would
                # reach the stand-in upstreams that tests count calls on
                "CIVI_GATEWAY_OPENAPI_PREBUILD": "false",
                **env,
            }
        )
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            env=full_env,
            cwd=tmp_path,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 20) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.log.read_text()}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.log.read_text()


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def start(env: dict[str, str]) -> GatewayProcess:
        proc = GatewayProcess(env, tmp_path)
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(autouse=True)
def _own_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test gets its own state directory, and the embedded sandbox stays in memory (fast,
    nothing shared between tests) unless a test sets CIVI_GATEWAY_SANDBOX_DB itself. Tests
    that use ``clean_env`` or start ``serve`` from a clean environment get the real default:
    a sandbox.sqlite in a state directory under their own tmp_path."""
    monkeypatch.setenv("CIVI_GATEWAY_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("CIVI_GATEWAY_SANDBOX_DB", ":memory:")


@contextlib.contextmanager
def redactor_restored() -> Iterator[None]:
    """The process-wide log redactor (``gateway.core.redact``) and the log record factory are, on
    leaving, as they were on entering: a test's secrets do not stay masked for good."""
    from gateway.core import redact

    secrets, pattern = list(redact.REDACTOR._secrets), redact.REDACTOR._pattern
    factory, installed = logging.getLogRecordFactory(), redact._installed
    try:
        yield
    finally:
        redact.REDACTOR._secrets[:] = secrets
        redact.REDACTOR._pattern = pattern
        logging.setLogRecordFactory(factory)
        redact._installed = installed


@pytest.fixture
def restore_redactor() -> Iterator[None]:
    """For tests that add secrets to the process-wide redactor or install its record factory."""
    with redactor_restored():
        yield


def missing_tool(reason: str) -> NoReturn:
    """A tool a test drives is not installed: a skip with the reason, but under CI=true a
    failure (tests/install-system-packages.sh must have installed it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: tests/install-system-packages.sh installs it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium driven by selenium (tests/openapi/browser.py); CI must have it."""
    from tests.openapi import browser

    reason = browser.missing()
    if reason is not None:
        missing_tool(reason)
    with browser.chromium() as driver:
        yield driver


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """redis-server (tests/install-system-packages.sh installs it) on a free loopback port."""
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        missing_tool("redis-server is not on PATH (apt-get install redis-server)")
    try:
        import coredis  # noqa: F401 (the driver limits' async Redis storage loads)
    except ImportError:
        missing_tool("coredis is not installed: limits[async-redis], the 'redis' extra")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
