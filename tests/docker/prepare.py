"""The Docker engine and images of tests/docker, prepared in the background.

On a fresh machine making them takes minutes, mostly waiting (package downloads, dpkg, pip, image
layers), while the rest of the suite runs for many more. So ``tests/docker/conftest.py`` starts a
`Preparation` as soon as collection ends (and runs the docker tests last); their fixtures then
only wait for its results. What is built, and how, is exactly what the fixtures built before:
only the moment changes.

Steps, each in a worker thread (two at once), each waiting for what it needs:

    engine ──> base image ──┐
    wheelhouse ─────────────┴──> gateway image ──> cv stand-in image, cv image

Failures are kept and raised again in every fixture that needs that step. `Unavailable` (Docker
cannot start here) and `Missing` (a tool the install script provides) become a skip or, for a
missing tool under ``CI=true``, a failure, in the fixtures. `Preparation.stop` (at the end of
the session) ends what is still running and stops the dockerd it started.
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
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "civicrm-gateway-base:bookworm"
GATEWAY_IMAGE = "civicrm-gateway:test"
STANDIN_IMAGE = "civicrm-gateway-cv-standin:test"
CV_IMAGE = "civicrm-gateway:test-cv"
DOCKER_CLI_IMAGE = "civicrm-gateway-docker-cli:test"
DAEMON_FLAGS = [
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
]
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


class Unavailable(Exception):
    """Docker cannot start on this machine (the docker tests skip, saying why)."""


class Missing(Exception):
    """A tool tests/install-system-packages.sh provides is not installed."""


class Cancelled(Exception):
    """The session ended before this step started."""


@dataclass
class Build:
    image: str
    output: str
    canary: str  # a secret-looking value that was in the build context, never in the image


def _find(tool: str) -> str | None:
    return shutil.which(tool, path=SBIN_PATH)


def _engine_answers() -> bool:
    return (
        subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30
        ).returncode
        == 0
    )


class Preparation:
    """The background work: started once, its steps' results (or errors) kept as futures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[str, Future[Any]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._processes: set[subprocess.Popen[str]] = set()
        self._cancelled = threading.Event()
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._dockerd_log: Path | None = None
        self.timings: dict[str, tuple[float, float]] = {}  # step: (started, ended), monotonic
        self.began = time.monotonic()

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._pool is not None or self._cancelled.is_set():
                return
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="docker-tests")
            self.began = time.monotonic()
            # Submitted in dependency order: a step only waits for earlier ones, which are
            # running or done, so two workers never wait for each other.
            self._submit("engine", self._start_engine)
            self._submit("wheelhouse", self._make_wheelhouse)
            self._submit("base", self._make_base_image)
            self._submit("gateway", self._build_gateway)
            self._submit("standin", self._build_standin)
            self._submit("cv", self._build_cv)

    @property
    def started(self) -> bool:
        return self._pool is not None or self._cancelled.is_set()

    def result(self, step: str) -> Any:
        """What ``step`` made; raises its error (again) if it failed."""
        self.start()
        return self._steps[step].result()

    def stop(self) -> None:
        """End the session's work: steps not started are dropped, running commands killed, the
        dockerd this session started stopped."""
        self._cancelled.set()
        with self._lock:
            for process in list(self._processes):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._dockerd is not None:
            self._dockerd.send_signal(signal.SIGTERM)
            try:
                self._dockerd.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._dockerd.kill()
                self._dockerd.wait(timeout=30)
            self._dockerd = None
        if self._dockerd_log is not None:
            self._dockerd_log.unlink(missing_ok=True)

    def _submit(self, step: str, work: Callable[[], Any]) -> None:
        def guarded() -> Any:
            if self._cancelled.is_set():
                raise Cancelled(f"the session ended before {step} was prepared")
            started = time.monotonic()
            try:
                return work()
            finally:
                self.timings[step] = (started, time.monotonic())

        assert self._pool is not None
        self._steps[step] = self._pool.submit(guarded)

    def summary(self) -> str:
        """When each step ran, in seconds from the start of the preparation."""
        return ", ".join(
            f"{step} {start - self.began:.0f}-{end - self.began:.0f} s"
            for step, (start, end) in self.timings.items()
        )

    def run(
        self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None, nice: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` (no shell) in its own process group, killed by `stop`; output captured.
        ``nice``: host-side work that must not slow the tests running meanwhile."""
        if nice:
            argv = ["nice", "-n", "10", *argv]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        with self._lock:
            self._processes.add(process)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            raise AssertionError(
                f"{' '.join(argv)} took more than {timeout:g} s: {(stdout + stderr)[-3000:]}"
            ) from None
        finally:
            with self._lock:
                self._processes.discard(process)
        if self._cancelled.is_set():
            raise Cancelled(f"the session ended during {' '.join(argv)}")
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    # --- the steps ----------------------------------------------------------------------------

    def _start_engine(self) -> None:
        """The Docker engine running, or a dockerd started (and stopped by `stop`) here."""
        if shutil.which("docker") is None:
            raise Missing("docker (Debian package docker.io)")
        if _engine_answers():
            return
        dockerd = _find("dockerd")
        if dockerd is None:
            raise Missing("dockerd (Debian package docker.io)")
        if os.geteuid() != 0:
            raise Unavailable("Docker cannot start: no engine runs and dockerd needs root")
        fd, log_name = tempfile.mkstemp(prefix="dockerd-", suffix=".log")
        self._dockerd_log = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                [dockerd, *DAEMON_FLAGS], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._dockerd = proc
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline or self._cancelled.is_set():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=30)
                self._dockerd = None
                tail = self._dockerd_log.read_text(errors="replace").strip().splitlines()[-5:]
                raise Unavailable(
                    "Docker cannot start: dockerd "
                    + ("exited" if proc.returncode else "did not answer within 60 s")
                    + ": "
                    + " | ".join(tail)
                )
            time.sleep(0.2)  # polling the engine's start, not ordering events

    def docker(self, *args: str, timeout: float = 120) -> str:
        result = self.run(["docker", *args], timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def _make_base_image(self) -> str:
        """Debian bookworm + Python by deploy/docker/base-image.sh (mmdebstrap, or debootstrap),
        kept in the engine between runs. The official python image is never pulled here."""
        self.result("engine")
        if self.run(["docker", "image", "inspect", BASE_IMAGE], timeout=60).returncode != 0:
            if _find("mmdebstrap") is None and _find("debootstrap") is None:
                raise Missing("mmdebstrap (or debootstrap)")
            result = self.run(
                ["bash", str(ROOT / "deploy/docker/base-image.sh"), BASE_IMAGE],
                timeout=900,
                env={**os.environ, "PATH": SBIN_PATH},
                nice=True,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        return BASE_IMAGE

    def _make_wheelhouse(self) -> Path:
        """deploy/docker/wheelhouse/ filled by deploy/docker/wheelhouse.sh with this Python
        (which must be the base image's version: binary wheels); redone when pyproject.toml
        changes. Needs no engine, so it runs while the base image is made."""
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        folder = ROOT / "deploy/docker/wheelhouse"
        stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + here.encode()).hexdigest()
        if (folder / ".stamp").exists() and (folder / ".stamp").read_text() == stamp:
            return folder
        result = self.run(
            ["bash", str(ROOT / "deploy/docker/wheelhouse.sh"), sys.executable], timeout=900, nice=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (folder / ".stamp").write_text(stamp)
        return folder

    def build(self, tag: str, context: Path, *args: str) -> str:
        """The classic builder (what Docker 20.10 without buildx runs), host network, no pulls."""
        result = self.run(
            ["docker", "build", "--network", "host", "--pull=false", "-t", tag, *args, str(context)],
            timeout=900,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    def _build_gateway(self) -> Build:
        """`docker build .` of the project, offline (wheelhouse) on the local base image. A
        canary secret sits in deploy/compose/secrets/ (where first-run.sh writes real ones)
        meanwhile."""
        base = self.result("base")
        self.result("wheelhouse")
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        there = self.docker(
            "run",
            "--rm",
            "--network",
            "host",
            base,
            "python3",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ).strip()
        if there != here:
            raise AssertionError(
                f"the wheelhouse is made with this Python ({here}); the base "
                f"image has Python {there}: run the tests with that version"
            )
        canary_value = f"canary-secret-{uuid.uuid4().hex}"
        canary = ROOT / "deploy/compose/secrets" / f"zz_test_canary_{uuid.uuid4().hex[:8]}"
        canary.write_text(canary_value + "\n")
        try:
            output = self.build(GATEWAY_IMAGE, ROOT, "--build-arg", f"PYTHON_IMAGE={base}")
        finally:
            canary.unlink()
        return Build(GATEWAY_IMAGE, output, canary_value)

    def _build_standin(self) -> str:
        """The gateway image plus `cv` = the project's cv stand-in, on a site in /var/www/html."""
        gateway: Build = self.result("gateway")
        self.build(STANDIN_IMAGE, HERE / "cv-standin", "--build-arg", f"GATEWAY_IMAGE={gateway.image}")
        return STANDIN_IMAGE

    def _build_cv(self) -> str:
        """deploy/docker/cv.Dockerfile on the gateway image. Its docker CLI image cannot be pulled
        here, so DOCKER_CLI_IMAGE is a local one holding this host's docker client (Debian's is
        linked against libc only, which the bookworm-based gateway image has)."""
        gateway: Build = self.result("gateway")
        client = Path("/usr/bin/docker")
        if not client.exists():
            client = Path(shutil.which("docker") or "")
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(client, Path(tmp) / "docker")
            (Path(tmp) / "Dockerfile").write_text("FROM scratch\nCOPY docker /usr/local/bin/docker\n")
            self.build(DOCKER_CLI_IMAGE, Path(tmp))
        self.build(
            CV_IMAGE,
            ROOT / "deploy/docker",
            "-f",
            str(ROOT / "deploy/docker/cv.Dockerfile"),
            "--build-arg",
            f"GATEWAY_IMAGE={gateway.image}",
            "--build-arg",
            f"DOCKER_CLI_IMAGE={DOCKER_CLI_IMAGE}",
        )
        return CV_IMAGE
