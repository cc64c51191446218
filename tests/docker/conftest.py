"""A real Docker engine for the container tests: started here when none runs (and stopped after),
the local base image, the wheelhouse, the gateway image and the cv stand-in image.

Safety, whatever the test: dockerd runs with ``--bridge=none --iptables=false`` (no bridge, no
NAT, no firewall rules, no ip_forward change), every build and container uses ``--network host``
and every server in a container binds 127.0.0.1; nothing is pulled (no registry is needed).

Without a Docker engine the tests skip with the reason printed (``-ra``); a missing tool under
``CI=true`` fails instead, since tests/install-system-packages.sh provides it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
CI = os.environ.get("CI", "").lower() == "true"
BASE_IMAGE = "civicrm-gateway-base:bookworm"
GATEWAY_IMAGE = "civicrm-gateway:test"
STANDIN_IMAGE = "civicrm-gateway-cv-standin:test"
CV_IMAGE = "civicrm-gateway:test-cv"
DOCKER_CLI_IMAGE = "civicrm-gateway-docker-cli:test"
PREFIX = "cgw-test-"  # every container these tests make is named so
DAEMON_FLAGS = ["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                "--ip-masq=false"]


def missing(tool: str) -> None:
    """A tool the install script provides: fail under CI, else skip saying what to install."""
    message = f"{tool} is not installed (bash tests/install-system-packages.sh installs it)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``docker ARGS`` (no shell), output captured as text; raises with stderr on failure."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.strip()[-2000:]}")
    return result


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    """A Docker engine: the one running, or a dockerd started (and stopped) by this session."""
    if shutil.which("docker") is None:
        missing("docker (Debian package docker.io)")
    if _engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists()
                                          else None)
    if dockerd is None:
        missing("dockerd (Debian package docker.io)")
    if os.geteuid() != 0:
        pytest.skip("Docker cannot start: no engine runs and dockerd needs root")
    log = tempfile.NamedTemporaryFile(prefix="dockerd-", suffix=".log", delete=False)
    proc = subprocess.Popen([dockerd, *DAEMON_FLAGS], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not _engine_answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=30)
            tail = Path(log.name).read_text(errors="replace").strip().splitlines()[-5:]
            pytest.skip("Docker cannot start: dockerd " + ("exited" if proc.returncode else
                        "did not answer within 60 s") + ": " + " | ".join(tail))
        time.sleep(0.2)  # polling the engine's start, not ordering events
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def base_image(engine: None) -> str:
    """The Debian bookworm + Python base made by deploy/docker/base-image.sh (kept between runs:
    debootstrap is the slow part). The official python image is never pulled here."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
            missing("debootstrap")
        result = subprocess.run(["bash", str(ROOT / "deploy/docker/base-image.sh"), BASE_IMAGE],
                                capture_output=True, text=True, timeout=900,
                                env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin"})
        assert result.returncode == 0, result.stdout + result.stderr
    return BASE_IMAGE


def _base_python(image: str) -> str:
    return docker("run", "--rm", "--network", "host", image, "python3", "-c",
                  "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()


@pytest.fixture(scope="session")
def wheelhouse(base_image: str) -> Path:
    """deploy/docker/wheelhouse/ filled by deploy/docker/wheelhouse.sh with this Python, which
    must be the base image's version (binary wheels); redone when pyproject.toml changes."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    there = _base_python(base_image)
    if there != here:
        pytest.fail(f"the wheelhouse is made with this Python ({here}); the base image has "
                    f"Python {there}: run the tests with that version")
    folder = ROOT / "deploy/docker/wheelhouse"
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + here.encode()).hexdigest()
    if (folder / ".stamp").exists() and (folder / ".stamp").read_text() == stamp:
        return folder
    result = subprocess.run(["bash", str(ROOT / "deploy/docker/wheelhouse.sh"), sys.executable],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    (folder / ".stamp").write_text(stamp)
    return folder


@dataclass
class Build:
    image: str
    output: str
    canary: str  # a secret-looking value that was in the build context, never in the image


def build(tag: str, context: Path, *args: str) -> str:
    """The classic builder (what Docker 20.10 without buildx runs), host network, no pulls."""
    result = subprocess.run(["docker", "build", "--network", "host", "--pull=false", "-t", tag,
                             *args, str(context)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def gateway_image(base_image: str, wheelhouse: Path) -> Build:
    """`docker build .` of the project, offline (wheelhouse) on the local base image. A canary
    secret sits in deploy/compose/secrets/ (where first-run.sh writes real ones) meanwhile."""
    canary_value = f"canary-secret-{uuid.uuid4().hex}"
    canary = ROOT / "deploy/compose/secrets" / f"zz_test_canary_{uuid.uuid4().hex[:8]}"
    canary.write_text(canary_value + "\n")
    try:
        output = build(GATEWAY_IMAGE, ROOT, "--build-arg", f"PYTHON_IMAGE={base_image}")
    finally:
        canary.unlink()
    return Build(GATEWAY_IMAGE, output, canary_value)


@pytest.fixture(scope="session")
def standin_image(gateway_image: Build) -> str:
    """The gateway image plus `cv` = the project's cv stand-in, on a site in /var/www/html."""
    build(STANDIN_IMAGE, HERE / "cv-standin", "--build-arg", f"GATEWAY_IMAGE={gateway_image.image}")
    return STANDIN_IMAGE


def container_name() -> str:
    return PREFIX + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def container(image: str, *args: str, name: str | None = None,
              command: list[str] | None = None) -> Iterator[str]:
    """``docker run -d --network host`` ... ; removed (with its anonymous volumes) afterwards."""
    name = name or container_name()
    docker("run", "-d", "--network", "host", "--name", name, *args, image, *(command or []))
    try:
        yield name
    finally:
        docker("rm", "-f", "-v", name, check=False)


def wait_healthz(port: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered /healthz on 127.0.0.1:{port} in {within:g} s")
        time.sleep(0.2)


def state(name: str, template: str) -> str:
    return docker("inspect", "--format", template, name).stdout.strip()


def logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr


def stand_in_pids(name: str) -> list[int]:
    """The cv stand-in processes running inside the container (zombies do not count), read
    from /proc by a Python inside it: the images have no ps."""
    script = ("import os\n"
              "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
              "    if int(pid) == os.getpid():\n        continue\n"
              "    try:\n"
              "        cmd = open('/proc/%s/cmdline' % pid, 'rb').read()\n"
              "        stat = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()\n"
              "    except OSError:\n        continue\n"
              "    if b'gateway.sandbox.cv' in cmd and stat[0] not in 'ZX':\n        print(pid)\n")
    result = docker("exec", "-u", "0", name, "python", "-c", script)
    return [int(pid) for pid in result.stdout.split()]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in these tests are only what the test says (and nothing leaks into the
    containers' docker commands)."""
    for name in list(os.environ):
        if name.startswith(("CV_SANDBOX_", "CIVI_GATEWAY_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def cv_image(gateway_image: Build) -> str:
    """deploy/docker/cv.Dockerfile on the gateway image. Its docker CLI image cannot be pulled
    here, so DOCKER_CLI_IMAGE is a local one holding this host's docker client (Debian's is
    linked against libc only, which the bookworm-based gateway image has)."""
    client = Path("/usr/bin/docker") if Path("/usr/bin/docker").exists() else Path(shutil.which("docker") or "")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(client, Path(tmp) / "docker")
        (Path(tmp) / "Dockerfile").write_text("FROM scratch\nCOPY docker /usr/local/bin/docker\n")
        build(DOCKER_CLI_IMAGE, Path(tmp))
    build(CV_IMAGE, ROOT / "deploy/docker", "-f", str(ROOT / "deploy/docker/cv.Dockerfile"),
          "--build-arg", f"GATEWAY_IMAGE={gateway_image.image}",
          "--build-arg", f"DOCKER_CLI_IMAGE={DOCKER_CLI_IMAGE}")
    return CV_IMAGE
