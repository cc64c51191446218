"""tests/install-system-packages.sh: apt's own words when an install fails, and under CI=true a
failure (or anything still missing) ends the run instead of a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "install-system-packages.sh"
APT_SAYS = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt)"


@pytest.fixture
def bare_path(tmp_path: Path) -> str:
    """A PATH with none of the packages, a root ``id`` and an apt-get that fails like a held
    lock does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mktemp", "tail", "sed", "rm", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "apt-get").write_text(
        f"#!/bin/sh\necho 'Reading package lists...'\necho '{APT_SAYS}' >&2\nexit 100\n"
    )
    for stub in ("id", "apt-get"):
        (bin_dir / stub).chmod(0o755)
    return str(bin_dir)


def _run(path: str, ci: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": path, **({"CI": ci} if ci is not None else {})}
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_failed_install_shows_apt_output_and_fails_under_ci(bare_path: str):
    done = _run(bare_path, "true")
    assert done.returncode == 1
    assert APT_SAYS in done.stderr
    # (nginx is looked for at /usr/sbin/nginx too, so whether it is listed depends on the host)
    assert "could not install chromium chromium-driver redis-server " in done.stderr
    assert " jq nodejs php-cli php-curl npm systemd; apt-get said:\n" in done.stderr
    assert "error: CI=true requires every package the tests use" in done.stderr


def test_failed_install_is_a_warning_outside_ci(bare_path: str):
    done = _run(bare_path, None)
    assert done.returncode == 0
    assert APT_SAYS in done.stderr
    assert "warning: the tests that need them will fail or skip" in done.stderr
