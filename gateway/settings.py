"""All configuration, in one place: environment (``CIVI_GATEWAY_*``), ``.env`` and secret files.

Secret values are ``SecretStr`` so that a repr, a log line or a traceback never shows them.
Invalid combinations fail at start-up with a message naming the variable to fix.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shlex
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CIVI_GATEWAY_"
DEFAULT_SECRETS_DIR = "/run/secrets"

BackendKind = Literal["sandbox", "http", "cv", "pipe"]
HttpAuth = Literal["x-civi-auth", "bearer", "basic", "legacy"]


class SettingsError(Exception):
    """Configuration that cannot work; the message names the variable(s) to fix."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- service ---------------------------------------------------------------------------
    backend: BackendKind = "sandbox"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_json_depth: int = Field(32, ge=2, le=512)

    # --- clients and limits --------------------------------------------------------------
    client_tokens: SecretStr | None = None
    clients_file: Path | None = None
    allow_anonymous: bool = False
    rate_limit_storage: SecretStr = SecretStr("memory://")
    default_rate_limit: str | None = None
    client_concurrency: int = Field(16, ge=1, le=10_000)
    cors_origins: list[str] = []
    cors_methods: list[str] = ["GET", "POST"]
    cors_headers: list[str] = ["Authorization", "Content-Type", "X-Request-ID"]

    # --- HTTP backend ----------------------------------------------------------------------
    http_url: str | None = None
    http_api_key: SecretStr | None = None
    http_site_key: SecretStr | None = None
    http_auth: HttpAuth = "x-civi-auth"
    http_username: str | None = None
    http_password: SecretStr | None = None
    http_htaccess_user: str | None = None
    http_htaccess_password: SecretStr | None = None
    http_verify_ssl: bool = True
    http_ca_bundle: Path | None = None
    http_timeout: float = Field(30.0, gt=0, le=3600)
    http_v3_path: str = "civicrm/ajax/rest"
    http_max_connections: int = Field(100, ge=1, le=10_000)

    # --- cv backends (one process per call, or a pool of `cv pipe` workers) -----------------
    cv_command: str = "cv"
    cv_cwd: str | None = None
    cv_context: str | None = None
    cv_user: str | None = None
    cv_check_permissions: bool = True
    cv_timeout: float = Field(30.0, gt=0, le=3600)
    cv_concurrency: int = Field(4, ge=1, le=256)
    pipe_size: int = Field(2, ge=1, le=64)
    pipe_max_calls: int = Field(1000, ge=1)
    pipe_start_timeout: float = Field(60.0, gt=0, le=600)

    # --- resilience, caching, streaming, shutdown ------------------------------------------
    retry_max_attempts: int = Field(3, ge=1, le=20)
    retry_max_seconds: float = Field(5.0, ge=0, le=600)
    retry_backoff: float = Field(0.1, ge=0, le=60)
    breaker_threshold: int = Field(5, ge=1, le=10_000)
    breaker_cooldown: float = Field(10.0, gt=0, le=3600)
    metadata_cache_ttl: float = Field(300.0, ge=0, le=86_400)
    metadata_cache_size: int = Field(1024, ge=1, le=1_000_000)
    batch_max_calls: int = Field(100, ge=1, le=10_000)
    batch_concurrency: int = Field(8, ge=1, le=1024)
    export_page_size: int = Field(1000, ge=1, le=100_000)
    shutdown_grace: float = Field(30.0, ge=0, le=3600)
    metrics_enabled: bool = True
    # Where the gateway keeps what should outlive a restart (the sandbox database, the OpenAPI
    # cache, idempotency and audit stores): one folder, created on first use.
    state_dir: Path = Path(".civicrm-gateway")

    # --- embedded sandbox ------------------------------------------------------------------
    sandbox_db: str = ":memory:"
    sandbox_demo: int = Field(200, ge=0, le=1_000_000)

    # --- OpenAPI document (docs/openapi.md) ------------------------------------------------
    openapi_spec_file: FilePath | None = None
    openapi_cache_ttl: float = Field(3600.0, ge=0)
    openapi_entities: list[str] = []
    # Metadata kept in state_dir between restarts, and the document built at start-up; None:
    # on for every backend but the in-memory sandbox (whose metadata costs nothing to fetch).
    openapi_disk_cache: bool | None = None
    openapi_prebuild: bool | None = None
    # What a caller without a token sees in token mode: the generic routes, or nothing (401).
    openapi_anonymous: Literal["generic", "none"] = "generic"
    # JSON answers, the document and the docs assets above this size are gzipped for clients
    # that accept it (0: never); streamed answers never are.
    gzip_min_bytes: int = Field(1024, ge=0)

    # --- validators ------------------------------------------------------------------------
    @field_validator("http_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("http_v3_path")
    @classmethod
    def _strip_path(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _check_backend(self) -> Settings:
        if self.backend == "http":
            missing = []
            if not self.http_url:
                missing.append(env_name("http_url"))
            if self.http_auth == "basic":
                if not self.http_username:
                    missing.append(env_name("http_username"))
                if self.http_password is None:
                    missing.append(env_name("http_password"))
            elif self.http_api_key is None or not self.http_api_key.get_secret_value():
                missing.append(env_name("http_api_key"))
            if self.http_auth == "legacy" and self.http_site_key is None:
                missing.append(env_name("http_site_key"))
            if missing:
                raise ValueError(
                    f"{', '.join(missing)} required when {env_name('backend')}=http"
                    f" and {env_name('http_auth')}={self.http_auth}"
                )
        if self.backend in ("cv", "pipe") and self.cv_check_permissions and not self.cv_user:
            raise ValueError(
                f"{env_name('cv_user')} is required when {env_name('backend')}={self.backend}: "
                "the gateway runs cv as that CiviCRM user with permission checks on. To run "
                f"with full access instead (cv's own default), set {env_name('cv_check_permissions')}"
                "=false explicitly")
        if (not is_loopback(self.host) and self.client_tokens is None and self.clients_file is None
                and not self.allow_anonymous):
            raise ValueError(
                f"{env_name('host')}={self.host} is not a loopback address and no client tokens "
                f"are configured: set {env_name('client_tokens')} (or {env_name('clients_file')}),"
                f" or {env_name('allow_anonymous')}=true to let anyone who can reach it call CiviCRM")
        if self.clients_file is not None and not self.clients_file.is_file():
            raise ValueError(f"{env_name('clients_file')}: no such file {self.clients_file}")
        if not self.rate_limit_storage.get_secret_value().startswith(("memory://", "redis://",
                                                                       "rediss://", "redis+")):
            raise ValueError(f"{env_name('rate_limit_storage')} must be memory:// or a redis:// URL")
        if self.http_ca_bundle is not None and not self.http_ca_bundle.is_file():
            raise ValueError(f"{env_name('http_ca_bundle')}: no such file {self.http_ca_bundle}")
        return self

    # --- derived ---------------------------------------------------------------------------
    @cached_property
    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, for redaction of logs and error bodies."""
        values = []
        for name, field in type(self).model_fields.items():
            if field.annotation in (SecretStr, SecretStr | None):
                secret = getattr(self, name)
                if secret is not None and len(secret.get_secret_value()) >= 4:
                    values.append(secret.get_secret_value())
        return tuple(values)


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str) -> bool:
    """Cached: asked for the peer address of every tokenless request."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secrets_dir() -> str | None:
    path = os.environ.get(env_name("secrets_dir"), DEFAULT_SECRETS_DIR)
    return path if path and Path(path).is_dir() else None


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, ``.env`` and the secrets directory.

    Raises ``SettingsError`` with a readable message naming each bad variable.
    """
    try:
        return Settings(_secrets_dir=_secrets_dir(), **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = [str(part) for part in err["loc"] if part != "__root__"]
            where = env_name(loc[0]) + ": " if loc else ""
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}{msg}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def split_command(value: str | list[str] | None) -> list[str]:
    """An argv prefix from a setting, split like a shell would (but never run by one)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(part) for part in value]
    return shlex.split(value)
