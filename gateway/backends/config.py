"""What each backend is configured with: the few values it reads, named as the settings name
them (``CIVI_GATEWAY_HTTP_TIMEOUT`` is ``http_timeout`` here too). The composition root
(:mod:`gateway.services`) builds them from :class:`gateway.settings.Settings`, the one place
that reads the environment; a backend never sees the other settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

HttpAuth = Literal["x-civi-auth", "bearer", "basic", "legacy"]


@dataclass(frozen=True)
class HttpConfig:
    """CiviCRM over HTTP: where, how to authenticate, TLS, limits."""

    http_url: str
    http_api_key: SecretStr | None = field(default=None, repr=False)
    http_site_key: SecretStr | None = field(default=None, repr=False)
    http_auth: HttpAuth = "x-civi-auth"
    http_username: str | None = None
    http_password: SecretStr | None = field(default=None, repr=False)
    http_htaccess_user: str | None = None
    http_htaccess_password: SecretStr | None = field(default=None, repr=False)
    http_verify_ssl: bool = True
    http_ca_bundle: Path | None = None
    http_timeout: float = 30.0
    http_v3_path: str = "civicrm/ajax/rest"
    http_max_connections: int = 100


@dataclass(frozen=True)
class CvConfig:
    """``cv`` and ``cv pipe``: the command (split into argv, never run by a shell), where it
    runs, as whom, and the limits."""

    cv_command: tuple[str, ...] = ("cv",)
    cv_context: tuple[str, ...] = ()
    cv_cwd: str | None = None
    cv_context_kill: bool = True
    cv_user: str | None = None
    cv_check_permissions: bool = True
    cv_timeout: float = 30.0
    cv_concurrency: int = 4
    pipe_size: int = 2
    pipe_max_calls: int = 1000
    pipe_start_timeout: float = 60.0
    max_body_bytes: int = 1_048_576
    retry_max_attempts: int = 3


@dataclass(frozen=True)
class SandboxConfig:
    """The embedded emulator: its SQLite file (or ``:memory:``) and demo contacts."""

    sandbox_db_path: str = ":memory:"
    sandbox_demo: int = 0
