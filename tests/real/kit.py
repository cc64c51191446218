"""The real CiviCRM test peer: where the kit built it, and how to reach it.

``CIVI_GATEWAY_TEST_CIVICRM`` names the folder ``tests/real/kit/build.sh`` built (its
``CIVI_PREFIX``): API keys in ``api_key.txt`` / ``api_key_staff.txt``, ``bin/cv``, ``site/``,
ids in ``ids.env``, the URL in ``NOTES.md`` (``CIVI_GATEWAY_TEST_CIVICRM_URL`` overrides it).
Without it the real-site tests are skipped with that reason; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ENV = "CIVI_GATEWAY_TEST_CIVICRM"
# Figures the real-site tests report (the sandbox's parity, the SQL oracle's seed): printed in
# pytest's terminal summary by tests/real/conftest.py, whether the tests pass or not.
SUMMARY: list[str] = []


@dataclass(frozen=True)
class Kit:
    prefix: Path
    url: str
    admin_key: str
    staff_key: str
    ids: dict[str, str]

    @property
    def cv(self) -> Path:
        return self.prefix / "bin" / "cv"

    @property
    def site(self) -> Path:
        return self.prefix / "site"

    def key(self, user: str) -> str:
        return self.admin_key if user == "admin" else self.staff_key

    @property
    def site_key(self) -> str:
        """CiviCRM's site key (NOTES.md), which legacy REST authentication sends."""
        found = re.search(r"site key: (\S+)", (self.prefix / "NOTES.md").read_text())
        if found is None:
            raise RuntimeError(f"no site key in {self.prefix / 'NOTES.md'}")
        return found.group(1)


@cache
def find_kit() -> Kit | None:
    """The kit named by the environment, or None."""
    value = os.environ.get(ENV)
    if not value:
        return None
    prefix = Path(value)
    if not (prefix / "api_key.txt").is_file():
        raise RuntimeError(f"{ENV}={value}: no api_key.txt there (build it with real-civicrm/build.sh)")
    url = os.environ.get(f"{ENV}_URL")
    if not url:
        notes = (prefix / "NOTES.md").read_text()
        found = re.search(r"URL: (http://\S+)", notes)
        url = found.group(1) if found else "http://127.0.0.1:8080"
    ids = {}
    for line in (prefix / "ids.env").read_text().splitlines():
        name, _, val = line.partition("=")
        if name:
            ids[name.strip()] = val.strip()
    return Kit(
        prefix=prefix,
        url=url.rstrip("/"),
        admin_key=(prefix / "api_key.txt").read_text().strip(),
        staff_key=(prefix / "api_key_staff.txt").read_text().strip(),
        ids=ids,
    )


def require_kit() -> Kit:
    """The kit, or a skip that says how to get one (a failure under CI=true)."""
    kit = find_kit()
    if kit is None:
        reason = (
            f"no real CiviCRM: set {ENV} to the folder tests/real/kit/build.sh built "
            "(CIVI_PREFIX, /tmp/civi by default)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return kit
