"""A real Docker engine for the container tests: started here when none runs (and stopped after),
the local base image, the wheelhouse, the gateway image and the cv stand-in image.

They are made in the background (tests/docker/prepare.py) from the end of collection on, while
the rest of the suite runs; the docker tests run last and their fixtures wait for what they need.

Safety, whatever the test: dockerd runs with ``--bridge=none --iptables=false`` (no bridge, no
NAT, no firewall rules, no ip_forward change), every build and container uses ``--network host``
and every server in a container binds 127.0.0.1; nothing is pulled (no registry is needed).

Without a Docker engine the tests skip with the reason printed (``-ra``); a missing tool under
``CI=true`` fails instead, since tests/install-system-packages.sh provides it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docker.prepare import HERE, ROOT, Build, Cancelled, Missing, Preparation, Unavailable

__all__ = ["ROOT", "Build", "container", "docker", "logs", "stand_in_pids", "state", "wait_healthz"]

CI = os.environ.get("CI", "").lower() == "true"
PREFIX = "cgw-test-"  # every container these tests make is named so
PREPARATION = Preparation()


def _is_docker_test(item: pytest.Item) -> bool:
    return HERE in Path(item.path).parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The docker tests last (a stable sort), so that their preparation overlaps the rest."""
    items.sort(key=_is_docker_test)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start preparing as soon as the session knows it will run a docker test."""
    if not session.config.option.collectonly and any(map(_is_docker_test, session.items)):
        _begin(session.config)


def _begin(config: pytest.Config) -> None:
    if not PREPARATION.started:
        config.add_cleanup(PREPARATION.stop)
        PREPARATION.start()


PHASE: list[float] = []  # when the first docker test started, when the last one ended
WAITED: list[float] = []  # seconds the docker tests' fixtures waited for the preparation


def pytest_runtest_logstart(nodeid: str) -> None:
    if nodeid.startswith("tests/docker/") and not PHASE:
        PHASE[:] = [time.monotonic()] * 2


def pytest_runtest_logfinish(nodeid: str) -> None:
    if nodeid.startswith("tests/docker/") and PHASE:
        PHASE[1] = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the docker tests cost: when each preparation step ran, how long the tests waited
    for it, and the wall time of the docker tests themselves (waits included)."""
    if PREPARATION.timings:
        terminalreporter.write_line(
            f"docker test preparation (s after collection): {PREPARATION.summary()}; "
            f"the docker tests waited {sum(WAITED):.0f} s for it and ran "
            f"{(PHASE[1] - PHASE[0]) if PHASE else 0:.0f} s in all"
        )


def missing(tool: str) -> None:
    """A tool the install script provides: fail under CI, else skip saying what to install."""
    message = f"{tool} is not installed (bash tests/install-system-packages.sh installs it)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def prepared(step: str) -> Any:
    """The result of a preparation step, waited for; its failure as a skip or a failure."""
    started = time.monotonic()
    try:
        return PREPARATION.result(step)
    except Unavailable as reason:
        pytest.skip(str(reason))
    except Missing as tool:
        missing(str(tool))
    except Cancelled as error:
        pytest.fail(str(error), pytrace=False)
    except Exception as error:
        pytest.fail(f"preparing {step} failed: {type(error).__name__}: {error}", pytrace=False)
    finally:
        WAITED.append(time.monotonic() - started)


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``docker ARGS`` (no shell), output captured as text; raises with stderr on failure."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> None:
    """A Docker engine: the one running, or a dockerd started (and stopped) by this session."""
    _begin(request.config)  # already done after collection, unless a plugin changed the items
    prepared("engine")


@pytest.fixture(scope="session")
def base_image(engine: None) -> str:
    """The Debian bookworm + Python base made by deploy/docker/base-image.sh (kept between runs:
    making it is the slow part). The official python image is never pulled here."""
    return prepared("base")


@pytest.fixture(scope="session")
def wheelhouse(base_image: str) -> Path:
    """deploy/docker/wheelhouse/ filled by deploy/docker/wheelhouse.sh with this Python, which
    must be the base image's version (binary wheels); redone when pyproject.toml changes."""
    return prepared("wheelhouse")


@pytest.fixture(scope="session")
def gateway_image(base_image: str, wheelhouse: Path) -> Build:
    """`docker build .` of the project, offline (wheelhouse) on the local base image. A canary
    secret sits in deploy/compose/secrets/ (where first-run.sh writes real ones) meanwhile."""
    return prepared("gateway")


@pytest.fixture(scope="session")
def standin_image(gateway_image: Build) -> str:
    """The gateway image plus `cv` = the project's cv stand-in, on a site in /var/www/html."""
    return prepared("standin")


def container_name() -> str:
    return PREFIX + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def container(
    image: str, *args: str, name: str | None = None, command: list[str] | None = None
) -> Iterator[str]:
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
    script = (
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    if int(pid) == os.getpid():\n        continue\n"
        "    try:\n"
        "        cmd = open('/proc/%s/cmdline' % pid, 'rb').read()\n"
        "        stat = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()\n"
        "    except OSError:\n        continue\n"
        "    if b'gateway.sandbox.cv' in cmd and stat[0] not in 'ZX':\n        print(pid)\n"
    )
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
    """deploy/docker/cv.Dockerfile on the gateway image, with a local docker CLI image (none can
    be pulled here): prepare.py says how."""
    return prepared("cv")
