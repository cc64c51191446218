"""What ``serve`` checks before it says anything is ready, and the sandbox database's in-use lock.

- A taken port is found before the app starts (uvicorn would only fail after the lifespan had
  logged "ready"), with the hint a newcomer needs: another ``--port``.
- A gateway (``serve``) or a sandbox server holds a *shared* lock on a file next to its sandbox
  database (``.sandbox.sqlite.in-use`` in the state folder by default) for as long as it runs;
  ``sandbox --reset`` needs it *exclusively*, so it refuses while any of them runs instead of
  deleting a database under it (whose next write would fail with "readonly database"). The
  operating system drops the lock when the process ends, however it ends.
- A client policy may name a CiviCRM identity the configured backend cannot use: said at start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from gateway.settings import Settings, SettingsError, env_name

MEMORY = ":memory:"


class SandboxInUse(SettingsError):
    """The sandbox database is used by a running gateway or sandbox server."""


def port_problem(host: str, port: int) -> str | None:
    """Why ``serve`` cannot listen on ``host:port`` (taken, or not an address of this
    machine), or None. Bound the way uvicorn binds (``SO_REUSEADDR``), then released."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"{shown}:{port} is already in use (another gateway, or another program): "
                    f"start this one with --port {port + 1 if port < 65535 else 8001} "
                    f"(or {env_name('port')}), or stop the other"
                )
            return f"cannot listen on {shown}:{port}: {exc.strerror}"
    return None


def _in_use_file(db: str) -> Path | None:
    if db == MEMORY:
        return None
    path = Path(db)
    return path.parent / f".{path.name}.in-use"


def hold_sandbox(db: str) -> IO[str] | None:
    """Mark the sandbox database ``db`` as in use until the returned file is closed (or the
    process ends). Nothing to hold for ``:memory:`` or a folder that cannot be written (the
    database itself then fails with a clear message)."""
    marker = _in_use_file(db)
    if marker is None:
        return None
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        held = marker.open("a")
    except OSError:
        return None
    fcntl.flock(held, fcntl.LOCK_SH)  # waits only while a reset runs (it holds it alone)
    return held


@contextlib.contextmanager
def sandbox_unused(db: str) -> Iterator[None]:
    """Held while ``db`` is reset: refused at once if a gateway or sandbox server uses it."""
    held = hold_sandbox(db)
    if held is None:  # nothing can be using it; the reset itself says what is wrong
        yield
        return
    with held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SandboxInUse(
                f"the sandbox database {Path(db).resolve()} is in use by a running gateway "
                "(civicrm-gateway serve) or sandbox server: stop it first, then reset "
                "(resetting under it would break its next write)"
            ) from None
        yield


def identity_warnings(settings: Settings) -> list[str]:
    """Client policy settings the configured backend ignores or refuses (the clients file's
    ``cv_user`` and ``civicrm_api_key_file``)."""
    from gateway.clients_file import load_clients

    warnings = []
    backend = settings.backend
    for client in load_clients(settings):
        identity = client.identity
        if identity is None:
            continue
        if identity.cv_user and backend in ("http", "sandbox"):
            warnings.append(
                f"client {client.name!r}: cv_user applies to the cv and pipe backends only; on the "
                f"{backend} backend its calls run as "
                + (
                    "the user of its civicrm_api_key_file"
                    if identity.api_key
                    else "the gateway's own CiviCRM user"
                    if backend == "http"
                    else "the sandbox's administrator"
                )
            )
        if identity.api_key and backend == "cv":
            warnings.append(
                f"client {client.name!r}: civicrm_api_key_file does not apply to the cv backend "
                "(cv cannot act as an API key): "
                + (
                    "its cv_user is used"
                    if identity.cv_user
                    else "its calls will be refused until it has a cv_user"
                )
            )
        if identity.api_key and backend == "sandbox":
            warnings.append(
                f"client {client.name!r}: civicrm_api_key_file is ignored on the sandbox backend "
                "(every call runs as the sandbox's administrator)"
            )
    return warnings
