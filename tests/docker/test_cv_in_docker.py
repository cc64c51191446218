"""The cv and pipe backends through a real `docker exec` into a container running the project's
cv stand-in as `cv` (issue 15, item 4; issue 19, items 2 and 3).

The gateway runs in this process (httpx on the ASGI app); CiviCRM's side is the stand-in
container, reached with CIVI_GATEWAY_CV_CONTEXT="docker exec -i <container>".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import assert_problem, free_port
from tests.cv.conftest import clients_file, eventually, gateway
from tests.docker.conftest import container, docker, logs, stand_in_pids, state, wait_healthz

pytestmark = pytest.mark.slow

BACKENDS = ("cv", "pipe")
GET_ONE = {"select": ["id", "display_name"], "where": [["id", "=", 2]]}
NEW_CONTACT = {"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Hung"}}
DOCKER_SOCKET = "/var/run/docker.sock"


def host_socket() -> str:
    """The engine's socket on this host: DOCKER_HOST's when it names one (a second engine), else
    the usual path. Inside the container it is always at the usual path."""
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else DOCKER_SOCKET


def settings(name: str, backend: str, *, exec_options: str = "", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": backend,
        "cv_command": "cv",
        "cv_cwd": "/var/www/html",
        "cv_user": "admin",
        "cv_context": f"docker exec -i {exec_options} {name}".replace("  ", " "),
        "cv_timeout": 20,
        "pipe_size": 1,
        "pipe_start_timeout": 30,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def shared(standin_image: str) -> Iterator[str]:
    """A stand-in container for the tests that leave it as they found it."""
    with container(standin_image, "--init") as name:
        yield name


@pytest.fixture
def own(standin_image: str) -> Iterator[str]:
    """A stand-in container the test may stop, restart or remove."""
    with container(standin_image, "--init") as name:
        yield name


@pytest.mark.parametrize("backend", BACKENDS)
async def test_error_table_through_docker_exec(shared: str, backend: str) -> None:
    async with gateway(settings(shared, backend)) as gw:
        ok = await gw.post("/v4/Contact/get", json=GET_ONE)
        assert ok.status_code == 200, ok.text
        assert ok.json() == [{"id": 2, "display_name": "Standalone Admin"}]
        assert_problem(await gw.post("/v4/Nosuch/get", json={}), 404, "unknown-api")
        assert_problem(
            await gw.post("/v4/Contact/get", json={"where": [["nosuch", "=", 1]]}), 400, "unknown-field"
        )
        assert_problem(
            await gw.post("/v3/Contact/create", json={"first_name": "X"}), 422, "civicrm-validation"
        )
        v3 = await gw.post("/v3/Contact/getvalue", json={"id": 2, "return": "display_name"})
        assert v3.status_code == 200 and v3.json() == "Standalone Admin", v3.text


@pytest.mark.parametrize("backend", BACKENDS)
async def test_identity_through_docker_exec(shared: str, backend: str, tmp_path: Path) -> None:
    """A client with its own cv_user acts as that CiviCRM user inside the container."""
    path, tokens = clients_file(tmp_path, boss=None, staff="staff")
    async with gateway(settings(shared, backend, clients_file=path)) as gw:
        as_staff = await gw.post(
            "/v4/Contact/create", json=NEW_CONTACT, headers={"Authorization": tokens["staff"]}
        )
        assert_problem(as_staff, 403, "civicrm-permission-denied")
        as_gateway_user = await gw.post(
            "/v4/Contact/get", json=GET_ONE, headers={"Authorization": tokens["boss"]}
        )
        assert as_gateway_user.status_code == 200, as_gateway_user.text


@pytest.mark.parametrize("backend", ["cv", "pipe"])
async def test_hung_cv_is_killed_inside_the_container(own: str, backend: str) -> None:
    """Issue 19.3: after the 504, no stand-in process is left in the container (killing the
    `docker exec` client alone leaves it running until its work ends)."""
    options = "-e CV_SANDBOX_CALL_DELAY=60"
    async with gateway(settings(own, backend, exec_options=options, cv_timeout=2)) as gw:
        before = stand_in_pids(own)  # the pipe worker, started with the pool
        assert len(before) == (1 if backend == "pipe" else 0), before
        assert_problem(await gw.post("/v4/Contact/create", json=NEW_CONTACT), 504, "upstream-timeout")
        hung = before or stand_in_pids(own)
        assert await eventually(lambda: not set(hung) & set(stand_in_pids(own)), within=10), hung
    # Closing the gateway ends the pipe pool's replacement worker too. One still starting when
    # the pool closes has its `docker exec` client killed and ends on the EOF that follows, a
    # moment later (seen: about 1 s under load): wait for that, but nothing may be left.
    assert await eventually(lambda: stand_in_pids(own) == [], within=10), stand_in_pids(own)


async def test_container_restarted_under_a_pipe_pool(own: str) -> None:
    """The workers die with the container; the pool replaces them and calls recover."""
    async with gateway(settings(own, "pipe", pipe_size=2)) as gw:
        assert (await gw.post("/v4/Contact/get", json=GET_ONE)).status_code == 200
        old = set(stand_in_pids(own))
        assert len(old) == 2
        docker("restart", "-t", "1", own)
        statuses = []
        for _attempt in range(60):
            response = await gw.post("/v4/Contact/get", json=GET_ONE)
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            assert response.status_code in (502, 503), response.text
        assert statuses[-1] == 200, statuses
        assert response.json() == [{"id": 2, "display_name": "Standalone Admin"}]
        backend: Any = gw.backend  # type: ignore[attr-defined]
        assert await eventually(lambda: backend.stats()["idle"] == 2, within=30), backend.stats()
        assert backend.stats()["restarts"] >= 1
        for _call in range(4):  # every worker in turn: none is left pointing at the old container
            assert (await gw.post("/v4/Contact/get", json=GET_ONE)).status_code == 200
        assert stand_in_pids(own)


@pytest.mark.parametrize("how", ["stopped", "removed"])
@pytest.mark.parametrize("backend", ["cv", "pipe"])
async def test_container_gone_is_503_without_daemon_text(own: str, backend: str, how: str) -> None:
    """cv/docker cannot reach the container: 503 upstream-unavailable, as docs/cv.md says, and
    nothing of the docker daemon's stderr (which names the container) reaches the client."""
    container_id = state(own, "{{.Id}}")
    async with gateway(settings(own, backend)) as gw:
        assert (await gw.post("/v4/Contact/get", json=GET_ONE)).status_code == 200
        if how == "stopped":
            docker("stop", "-t", "1", own)
        else:
            docker("rm", "-f", own)
        response = await gw.post("/v4/Contact/get", json=GET_ONE)
        body = assert_problem(response, 503, "upstream-unavailable")
        text = response.text
        assert own not in text and container_id[:12] not in text, body
        assert "daemon" not in text.lower(), body


def test_cv_image_in_a_container_reaches_the_stand_in(cv_image: str, shared: str) -> None:
    """The compose `cv` profile's setup for real: the cv image (gateway + docker CLI, non-root,
    the socket's group added) runs the pipe backend through `docker exec` into another
    container, and answers from it."""
    socket = host_socket()
    socket_gid = os.stat(socket).st_gid
    port = free_port()
    env = {
        "CIVI_GATEWAY_BACKEND": "pipe",
        "CIVI_GATEWAY_CV_COMMAND": "cv",
        "CIVI_GATEWAY_CV_CONTEXT": f"docker exec -i {shared}",
        "CIVI_GATEWAY_CV_CWD": "/var/www/html",
        "CIVI_GATEWAY_CV_USER": "admin",
        "CIVI_GATEWAY_HOST": "127.0.0.1",
        "CIVI_GATEWAY_PORT": str(port),
    }
    options = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    with container(
        cv_image, *options, "--init", "-v", f"{socket}:{DOCKER_SOCKET}", "--group-add", str(socket_gid)
    ) as name:
        wait_healthz(port)
        assert state(name, "{{.Config.User}}") == "10001:10001"
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text + logs(name)
        response = httpx.post(f"http://127.0.0.1:{port}/v4/Contact/get", json=GET_ONE, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == [{"id": 2, "display_name": "Standalone Admin"}]
        assert len(stand_in_pids(shared)) == 2  # the pool's two workers, in the stand-in
