"""What a newcomer meets in the first hour, on real processes: ``sandbox --reset`` refused
while a gateway uses the database (instead of breaking its writes), a taken port refused
before anything says "ready" with the ``--port`` hint, ``--version``, and a warning when a
client policy names an identity the configured backend does not use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway import __version__
from gateway.cli.startup import identity_warnings
from gateway.flow.clients import hash_token
from gateway.settings import Settings
from tests.conftest import GatewayProcess
from tests.gateway.test_state_dir import _cli, _create

pytestmark = pytest.mark.slow


def test_reset_is_refused_while_a_gateway_uses_the_database(tmp_path: Path):
    gw = GatewayProcess({"CIVI_GATEWAY_SANDBOX_DEMO": "0"}, tmp_path).wait_ready()
    db = tmp_path / ".civicrm-gateway" / "sandbox.sqlite"
    try:
        assert _create(gw.url, "Lovelace") == 3
        refused = _cli(tmp_path, "sandbox", "--reset")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr == (
            f"civicrm-gateway: the sandbox database {db} is in use by a running gateway "
            "(civicrm-gateway serve) or sandbox server: stop it first, then reset (resetting "
            "under it would break its next write)\n"
        )
        assert _create(gw.url, "Byron") == 4  # the database is whole, and still writable
    finally:
        gw.stop()
    done = _cli(tmp_path, "sandbox", "--reset", "--demo", "0")
    assert done.returncode == 0, done.stderr
    again = GatewayProcess({"CIVI_GATEWAY_SANDBOX_DEMO": "0"}, tmp_path).wait_ready()
    try:
        assert _create(again.url, "Lovelace") == 3
    finally:
        again.stop()


def test_reset_is_refused_while_a_sandbox_server_uses_the_database(tmp_path: Path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sandbox", "--port", str(port), "--demo", "0"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "Sandbox CiviCRM at" in server.stderr.readline()
        refused = _cli(tmp_path, "sandbox", "--reset")
        assert refused.returncode == 2 and "is in use by a running gateway" in refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert _cli(tmp_path, "sandbox", "--reset").returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_taken_port_is_refused_before_ready_with_the_port_hint(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli(tmp_path, "serve", "--port", str(port), "--backend", "sandbox")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"civicrm-gateway serve: 127.0.0.1:{port} is already in use (another gateway, or another "
        f"program): start this one with --port {port + 1} (or CIVI_GATEWAY_PORT), or stop the other"
    )
    assert "ready on the" not in done.stdout + done.stderr  # the app never started


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout == f"civicrm-gateway {__version__}\n"


def _clients(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "clients.toml"
    (tmp_path / "key").write_text("a-civicrm-api-key-of-the-reporting-user\n")
    path.write_text(f'[clients.reporting]\ntoken_sha256 = "{hash_token("cgw_x")}"\n{policy}\n')
    return path


@pytest.mark.parametrize(
    ("backend", "policy", "said"),
    [
        (
            "http",
            'cv_user = "reporting"',
            "cv_user applies to the cv and pipe backends only; on the "
            "http backend its calls run as the gateway's own CiviCRM user",
        ),
        (
            "sandbox",
            'cv_user = "reporting"',
            "on the sandbox backend its calls run as the sandbox's administrator",
        ),
        ("cv", 'civicrm_api_key_file = "key"', "its calls will be refused until it has a cv_user"),
        ("cv", 'civicrm_api_key_file = "key"\ncv_user = "reporting"', "its cv_user is used"),
        ("sandbox", 'civicrm_api_key_file = "key"', "civicrm_api_key_file is ignored on the sandbox backend"),
        ("http", 'civicrm_api_key_file = "key"', None),
        ("cv", 'cv_user = "reporting"', None),
        ("pipe", 'civicrm_api_key_file = "key"', None),
    ],
)
def test_a_policy_identity_the_backend_does_not_use_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, policy: str, said: str | None
):
    monkeypatch.chdir(tmp_path)  # the key file's relative path
    extra = {"http_url": "http://127.0.0.1:9", "http_api_key": "the-gateways-key", "cv_user": "admin"}
    settings = Settings(backend=backend, clients_file=_clients(tmp_path, policy), **extra)
    warnings = identity_warnings(settings)
    if said is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith("client 'reporting': ")
        assert said in warnings[0]


def test_serve_logs_the_warning(tmp_path: Path):
    clients = _clients(tmp_path, 'cv_user = "reporting"')
    gw = GatewayProcess({"CIVI_GATEWAY_CLIENTS_FILE": str(clients)}, tmp_path).wait_ready()
    try:
        assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        log = gw.stop()
    assert "client 'reporting': cv_user applies to the cv and pipe backends only" in log
