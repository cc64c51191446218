"""The embedded sandbox's database file: opened (created on first use) and reset.

By default it lives in the state directory, so records outlive a restart and every command
(``serve``, ``export``, ``check``, ``openapi``, ``sandbox``) sees the same data. Creating it is
done under a file lock: several workers or commands starting at once on a fresh state directory
must not each try to create the tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.core.errors import SettingsError

if TYPE_CHECKING:
    from gateway.sandbox.engine import Sandbox

MEMORY = ":memory:"


class SandboxDbError(SettingsError):
    """The sandbox database cannot be opened or created where the settings say."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (path.parent / f".{path.name}.lock").open("a")
    except OSError as exc:
        raise SandboxDbError(
            f"cannot create the sandbox database {path}: {exc.strerror}. Set "
            "CIVI_GATEWAY_STATE_DIR to a writable folder (or "
            "CIVI_GATEWAY_SANDBOX_DB=:memory: to keep nothing)"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def schema_version() -> int:
    """A fingerprint of the sandbox's tables, kept in the file's ``user_version``: a file made
    by a gateway with other tables would fail in odd ways, so it is refused up front."""
    from gateway.sandbox.schema import ddl

    digest = hashlib.sha256("\n".join(ddl()).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


def _create(path: Path, demo: int) -> Sandbox:
    from gateway.sandbox.engine import Sandbox

    sandbox = Sandbox(str(path), demo=demo)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {schema_version()}")
    return sandbox


def open_sandbox(db: str, demo: int) -> Sandbox:
    """The sandbox on ``db`` (a file, created with ``demo`` demo contacts if new, or
    ``:memory:``)."""
    from gateway.sandbox.engine import Sandbox

    if db == MEMORY:
        return Sandbox(MEMORY, demo=demo)
    path = Path(db)
    with _locked(path):
        if not path.exists() or path.stat().st_size == 0:
            return _create(path, demo)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found != schema_version():
            raise SandboxDbError(
                f"the sandbox database {path.resolve()} was made by another version of the "
                "gateway (its tables differ): 'civicrm-gateway sandbox --reset' starts afresh"
            )
        return Sandbox(str(path), demo=demo)


def reset_sandbox(db: str, demo: int) -> Path:
    """Delete the sandbox database file and create it afresh (base records plus ``demo``)."""
    if db == MEMORY:
        raise SandboxDbError(
            "the sandbox database is in memory (CIVI_GATEWAY_SANDBOX_DB=:memory:): there is nothing to reset"
        )
    path = Path(db)
    with _locked(path):
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
        _create(path, demo).close()
    return path.resolve()
