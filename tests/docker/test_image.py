"""The gateway image, built and run for real (issue 15, item 3; issue 19, items 1, 5, 7)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.sandbox.engine import Sandbox
from tests.conftest import free_port
from tests.docker.conftest import ROOT, Build, container, docker, logs, state, wait_healthz

pytestmark = pytest.mark.slow


def serve_args(port: int) -> list[str]:
    """Loopback only, on the host's network (the containers get no network of their own)."""
    return [
        "-e",
        "CIVI_GATEWAY_HOST=127.0.0.1",
        "-e",
        f"CIVI_GATEWAY_PORT={port}",
        "-e",
        "CIVI_GATEWAY_SANDBOX_DEMO=5",
    ]


@pytest.fixture(scope="module")
def running(gateway_image: Build) -> Iterator[tuple[str, int]]:
    """One gateway container on the sandbox default, with a fast health check."""
    port = free_port()
    with container(gateway_image.image, *serve_args(port), "--health-interval", "1s") as name:
        wait_healthz(port)
        yield name, port


def test_plain_build_with_the_classic_builder_pulls_nothing(gateway_image: Build, wheelhouse: Path):
    """`docker build .` (no --target, no BuildKit, no registry, no PyPI: pip cannot verify TLS
    inside a build here) on the local base: every stage comes from PYTHON_IMAGE, and every
    dependency in the image is the wheelhouse's."""
    output = gateway_image.output
    assert "Pulling" not in output and "docker:27-cli" not in output
    assert "Successfully tagged civicrm-gateway:test" in output
    config = json.loads(docker("image", "inspect", gateway_image.image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["civicrm-gateway"] and config["Cmd"] == ["serve"]
    wheels = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        wheels[name.lower().replace("_", "-")] = version
    installed = json.loads(
        docker(
            "run",
            "--rm",
            "--network",
            "host",
            "--entrypoint",
            "python",
            gateway_image.image,
            "-c",
            "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower()"
            ".replace('_', '-'): d.version for d in m.distributions()}))",
        ).stdout
    )
    assert installed.pop("civicrm-gateway") == "0.1.0"
    assert installed and all(wheels.get(name) == version for name, version in installed.items()), {
        name: (version, wheels.get(name))
        for name, version in installed.items()
        if wheels.get(name) != version
    }


def test_runs_as_the_unprivileged_user_and_goes_healthy(running: tuple[str, int]):
    name, _port = running
    assert state(name, "{{.Config.User}}") == "10001:10001"
    status = docker("exec", name, "python", "-c", "print(open('/proc/1/status').read())").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["10001"] * 4
    deadline = time.monotonic() + 60
    while state(name, "{{.State.Health.Status}}") != "healthy":
        assert time.monotonic() < deadline, state(name, "{{json .State.Health}}")
        time.sleep(0.5)


def test_sandbox_default_answers_contact_get(running: tuple[str, int]):
    _name, port = running
    response = httpx.get(
        f"http://127.0.0.1:{port}/v4/Contact/get",
        params={"select": "id,display_name", "limit": "2"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    records = response.json()
    assert len(records) == 2 and set(records[0]) == {"id", "display_name"}
    assert response.headers["x-result-count"] == "2"


def test_settings_from_environment_and_mounted_secret_files(gateway_image: Build):
    """Secrets mounted as the docs say (folder 0750 and files 0640, group 10001, owned by root):
    the gateway user reads the client tokens; CIVI_GATEWAY_SANDBOX_DEMO comes from -e."""
    token = "cgw_" + "t" * 40
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets"
        secrets.mkdir()
        tokens = secrets / "civi_gateway_client_tokens"
        tokens.write_text(f"app:sha256:{hashlib.sha256(token.encode()).hexdigest()}\n")
        if os.geteuid() == 0:
            os.chown(secrets, 0, 10001)
            os.chown(tokens, 0, 10001)
        secrets.chmod(0o750)
        tokens.chmod(0o640)
        Path(tmp).chmod(0o755)
        port = free_port()
        with container(gateway_image.image, *serve_args(port), "-v", f"{secrets}:/run/secrets:ro") as name:
            wait_healthz(port)
            url = f"http://127.0.0.1:{port}/v4/Contact/get"
            anonymous = httpx.get(url, params={"select": "row_count"}, timeout=30)
            assert anonymous.status_code == 401, anonymous.text
            with_token = httpx.get(
                url, params={"select": "row_count"}, timeout=30, headers={"Authorization": f"Bearer {token}"}
            )
            assert with_token.status_code == 200, with_token.text + logs(name)
    local = Sandbox(":memory:", demo=5)
    expected = local.api4("Contact", "get", {"select": ["row_count"]})["count"]
    local.close()
    assert with_token.headers["x-total-count"] == str(expected)


def test_root_only_secrets_stop_start_up_with_one_line(gateway_image: Build):
    """Issue 19.1: a folder made 0700 by root, mounted at /run/secrets: exit 2 and one line
    naming the folder and the uid, not a traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp) / "secrets"
        secrets.mkdir(mode=0o700)
        (secrets / "civi_gateway_client_tokens").write_text("app:sha256:" + "ab" * 32 + "\n")
        (secrets / "civi_gateway_client_tokens").chmod(0o600)
        if os.geteuid() != 0:
            pytest.fail("the container would see the test user's files; run as root (CI does)")
        result = docker(
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{secrets}:/run/secrets:ro",
            *serve_args(free_port()),
            gateway_image.image,
            check=False,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "civicrm-gateway: secrets directory /run/secrets (CIVI_GATEWAY_SECRETS_DIR) is not "
        "readable by uid 10001 (gid 10001): the gateway's user must be able to read them (e.g. "
        "group-readable for its group, or compose/Kubernetes secrets); see docs/deploy.md"
    ]


def test_sigterm_stops_it_within_the_grace_period(gateway_image: Build):
    port = free_port()
    with container(gateway_image.image, *serve_args(port), "--stop-timeout", "40") as name:
        wait_healthz(port)
        assert state(name, "{{.Config.StopTimeout}}") == "40"
        started = time.monotonic()
        docker("stop", name, timeout=60)
        elapsed = time.monotonic() - started
        assert state(name, "{{.State.ExitCode}}") == "0", logs(name)  # not 137: no SIGKILL
        assert elapsed < 10, elapsed
        assert "Finished server process" in logs(name)


def test_working_directory_is_not_writable_and_a_planted_env_is_ignored(gateway_image: Build):
    """Issue 19.5: the image's working directory is root's; a `.env` in a world-writable
    directory (here /tmp, as the working directory used to be) is not read."""
    probe = (
        "import os; from gateway.settings import load_settings; "
        'print(os.getcwd(), os.access(".", os.W_OK), load_settings().allow_anonymous)'
    )
    loopback = ["-e", "CIVI_GATEWAY_HOST=127.0.0.1"]
    default = docker(
        "run",
        "--rm",
        "--network",
        "host",
        *loopback,
        "--entrypoint",
        "python",
        gateway_image.image,
        "-c",
        probe,
    )
    assert default.stdout.split() == ["/opt/civicrm-gateway", "False", "False"]
    planted = docker(
        "run",
        "--rm",
        "--network",
        "host",
        *loopback,
        "-w",
        "/tmp",
        "--entrypoint",
        "sh",
        gateway_image.image,
        "-c",
        f"echo CIVI_GATEWAY_ALLOW_ANONYMOUS=true > /tmp/.env && python -c '{probe}'",
    )
    assert planted.stdout.split() == ["/tmp", "True", "False"]
    assert "ignoring /tmp/.env: its directory is writable by every user" in planted.stderr


def _layer_members(image: str) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Every file of every layer of ``image`` (docker save: layer.tar files or OCI blobs)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        docker("save", "-o", str(archive), image, timeout=300)
        with tarfile.open(archive) as outer:
            for member in outer.getmembers():
                if not member.isfile():
                    continue
                handle = outer.extractfile(member)
                assert handle is not None
                try:
                    layer = tarfile.open(fileobj=handle)
                except tarfile.TarError:
                    continue  # a manifest or config, not a layer
                with layer:
                    for item in layer.getmembers():
                        yield member.name, layer, item


def test_image_holds_no_tests_no_git_no_secrets(gateway_image: Build):
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "deploy", "docs", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked
    canary = gateway_image.canary.encode()
    paths: list[str] = []
    for _layer_name, layer, item in _layer_members(gateway_image.image):
        path = "/" + item.name.lstrip("./")
        paths.append(path)
        if item.isfile() and 0 < item.size < 50_000_000:
            handle = layer.extractfile(item)
            assert handle is not None
            assert canary not in handle.read(), f"a secret from the build context is in {path}"
    assert len(paths) > 1000
    for path in paths:
        parts = path.split("/")
        assert ".git" not in parts, path
        assert not parts[-1].startswith(("civi_gateway_", "zz_test_canary_")), path
        assert parts[-1] != ".env", path
        assert not path.startswith(("/src", "/wheels", "/wheelhouse")), path
        # A project file anywhere, or installed as a top-level package (site-packages/tests/...);
        # a dependency's own tests (site-packages/certifi/tests/__init__.py) are not ours.
        installed = path.partition("/site-packages/")[2]
        for name in tracked:
            assert installed != name if installed else not path.endswith("/" + name), path
    inspect = json.loads(docker("image", "inspect", gateway_image.image).stdout)[0]["Config"]
    for variable in inspect["Env"]:
        assert not any(word in variable.split("=")[0] for word in ("KEY", "TOKEN", "PASSWORD")), variable
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", gateway_image.image).stdout
    assert gateway_image.canary not in history
