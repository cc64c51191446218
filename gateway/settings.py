"""All configuration, in one place: environment (``CIVI_GATEWAY_*``), ``.env`` and secret files.

Secret values are ``SecretStr`` so that a repr, a log line or a traceback never shows them.
Invalid combinations fail at start-up with a message naming the variable to fix.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from gateway.backends.config import HttpAuth

# Re-exported: where they are looked for.
from gateway.core.errors import ENV_PREFIX as ENV_PREFIX
from gateway.core.errors import SettingsError as SettingsError
from gateway.core.errors import env_name as env_name
from gateway.core.net import is_loopback as is_loopback

log = logging.getLogger("gateway.settings")

DEFAULT_SECRETS_DIR = "/run/secrets"
SANDBOX_DB_NAME = "sandbox.sqlite"

BackendKind = Literal["sandbox", "http", "cv", "pipe"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # load_settings() names the `.env` file, after checking who could have written it.
        env_file=None,
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
    # With several workers on memory:// each worker counts on its own (a client gets up to
    # workers x its rate): `serve` refuses that unless this says it is meant (docs/deploy.md).
    rate_limit_per_worker: bool = False
    client_concurrency: int = Field(16, ge=1, le=10_000)
    cors_origins: list[str] = []
    cors_methods: list[str] = ["GET", "POST"]
    cors_headers: list[str] = ["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"]
    # Browser protections (gateway/web/browsers.py): Host names served (empty: loopback names when
    # tokenless, any with tokens) and whether foreign Origins / non-JSON bodies are refused
    # (None: only when tokenless, where a web page is the threat).
    allowed_hosts: list[str] = []
    browser_checks: bool | None = None
    # Check calls against CiviCRM's metadata before sending them (unknown entity, action or
    # field; required params; value types): docs/production.md says when to turn it off.
    validate_calls: bool = True

    # The client token CLI commands send to a running gateway (``export --url``).
    token: SecretStr | None = None

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
    # Through a context, kill a hung cv where it runs (``timeout -s KILL``, or the pipe
    # worker's reported pid): killing ``docker exec`` or ``ssh`` alone leaves it running.
    cv_context_kill: bool = True
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
    # /readyz: whether CiviCRM's state decides this pod's readiness (default: reported only),
    # and how long it waits for CiviCRM's answer to its check (docs/deploy.md, "Readiness").
    readiness_requires_upstream: bool = False
    readiness_upstream_timeout: float = Field(2.0, gt=0, le=60)
    # Where the gateway keeps what should outlive a restart (the sandbox database, the OpenAPI
    # cache, idempotency and audit stores): one folder, created on first use.
    state_dir: Path = Path(".civicrm-gateway")

    # --- embedded sandbox ------------------------------------------------------------------
    # Default: sandbox.sqlite in state_dir, so data outlives a restart and every CLI command
    # (serve, export, check, openapi, sandbox) sees the same records. ":memory:" forgets.
    sandbox_db: str | None = None
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

    # --- audit trail (docs/audit.md) ---------------------------------------------------------
    # Where each write and each refused call is recorded: "sqlite" (audit.sqlite in state_dir,
    # read by GET /audit and `civicrm-gateway audit`), "file" (JSON lines, rotated by size),
    # "stdout" (JSON lines, for container logs); [] records nothing.
    audit_sinks: list[Literal["sqlite", "file", "stdout"]] = ["sqlite"]
    audit_file: Path | None = None  # default: audit.jsonl in state_dir
    audit_file_max_bytes: int = Field(10_485_760, ge=1024)
    audit_file_backups: int = Field(5, ge=1, le=1000)
    # Values written, besides field names (they may be personal data); credentials never.
    audit_values: bool = False
    # SQLite records older than this many days are deleted (0: kept for ever).
    audit_retention_days: float = Field(90.0, ge=0)

    # --- change feed and webhooks (docs/changes.md) ----------------------------------------
    # Seconds a feed re-reads before its cursor: a transaction that commits this long after
    # its statements ran (CiviCRM stamps modified_date then) is still reported.
    changes_overlap_seconds: float = Field(60.0, ge=0, le=86_400)
    # How often a waiting long-poll, an SSE stream and the webhook poller look again.
    changes_poll_interval: float = Field(2.0, gt=0, le=3600)
    # Longest ``wait`` a client may ask for, and how many long-polls / SSE streams may wait at
    # once (per client and in all): past these a wait is a 400 / a 429.
    changes_max_wait: float = Field(30.0, ge=0, le=600)
    changes_max_waits_per_client: int = Field(4, ge=1, le=10_000)
    changes_max_waits: int = Field(64, ge=1, le=100_000)
    # An SSE stream ends after this long (the client resumes with Last-Event-ID).
    changes_sse_seconds: float = Field(300.0, gt=0, le=86_400)
    # Deletions are seen by comparing the ids a feed knows with those CiviCRM lists, at most
    # this often per feed; feeds (and snapshot feeds) with more records than changes_max_ids
    # do not track them.
    changes_delete_scan_seconds: float = Field(30.0, ge=0, le=86_400)
    changes_max_ids: int = Field(100_000, ge=1, le=10_000_000)
    # Where feed state, subscriptions and the delivery queue live: sqlite (changes.sqlite and
    # webhooks.sqlite in state_dir: one host's workers) or redis (the rate limit's Redis:
    # several replicas, one polling each entity's subscriptions at a time, deliveries shared).
    changes_store: Literal["sqlite", "redis"] = "sqlite"
    # A feed unused this many days is forgotten (its cursors then answer 400).
    changes_retention_days: float = Field(7.0, gt=0, le=3650)
    # Hosts webhooks may be delivered to ("host" or "host:port"); empty: webhooks are off.
    webhook_hosts: list[str] = []
    # Retries: exponential backoff with jitter from webhook_retry_base seconds up to
    # webhook_retry_max, for webhook_retry_hours; then dead-lettered. A subscription whose
    # deliveries have all failed for webhook_disable_hours is disabled.
    webhook_retry_base: float = Field(5.0, gt=0, le=3600)
    webhook_retry_max: float = Field(3600.0, gt=0, le=86_400)
    webhook_retry_hours: float = Field(24.0, gt=0, le=24 * 30)
    webhook_disable_hours: float = Field(72.0, gt=0, le=24 * 365)
    webhook_timeout: float = Field(10.0, gt=0, le=120)
    # How long a rotated secret still signs deliveries beside the new one.
    webhook_secret_overlap_hours: float = Field(24.0, ge=0, le=24 * 30)

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
                "=false explicitly"
            )
        if (
            not is_loopback(self.host)
            and self.client_tokens is None
            and self.clients_file is None
            and not self.allow_anonymous
        ):
            raise ValueError(
                f"{env_name('host')}={self.host} is not a loopback address and no client tokens "
                f"are configured: set {env_name('client_tokens')} (or {env_name('clients_file')}),"
                f" or {env_name('allow_anonymous')}=true to let anyone who can reach it call CiviCRM"
            )
        if self.clients_file is not None and not self.clients_file.is_file():
            raise ValueError(f"{env_name('clients_file')}: no such file {self.clients_file}")
        if not self.rate_limit_storage.get_secret_value().startswith(
            ("memory://", "redis://", "rediss://", "redis+")
        ):
            raise ValueError(f"{env_name('rate_limit_storage')} must be memory:// or a redis:// URL")
        if self.http_ca_bundle is not None and not self.http_ca_bundle.is_file():
            raise ValueError(f"{env_name('http_ca_bundle')}: no such file {self.http_ca_bundle}")
        return self

    # --- Idempotency-Key (gateway/idempotency) ---------------------------------------------
    # Where keys live: sqlite (state_dir/idempotency.sqlite, the default: survives a restart,
    # shared by one host's workers), redis (the rate limit's Redis: shared by replicas) or
    # memory (one process, for tests).
    idempotency_store: Literal["sqlite", "redis", "memory"] = "sqlite"
    # How long a key's answer is kept (seconds; default 24 h).
    idempotency_ttl: float = Field(86_400.0, ge=1, le=30 * 86_400)
    # How long a claimed key may stay in flight before a repeat treats its first request as
    # lost (its process stopped): longer than any call may take. None: the longer of the HTTP
    # and cv timeouts, plus the retry budget, plus a minute (the rate limiter's wait and more).
    idempotency_lease: float | None = Field(None, ge=1, le=86_400)

    @model_validator(mode="after")
    def _check_idempotency(self) -> Settings:
        redis_url = self.rate_limit_storage.get_secret_value().removeprefix("async+")
        for name in ("idempotency_store", "changes_store"):
            if getattr(self, name) == "redis" and not redis_url.startswith(
                ("redis://", "rediss://", "unix://")
            ):
                raise ValueError(
                    f"{env_name(name)}=redis shares the rate limit's "
                    f"Redis: set {env_name('rate_limit_storage')} to a redis:// URL"
                )
        longest = max(self.http_timeout, self.cv_timeout) + self.retry_max_seconds
        if self.idempotency_lease is not None and self.idempotency_lease <= longest:
            raise ValueError(
                f"{env_name('idempotency_lease')} must be longer than a call may "
                f"take ({longest:g} s: the HTTP or cv timeout plus "
                f"{env_name('retry_max_seconds')})"
            )
        return self

    # --- derived ---------------------------------------------------------------------------
    @property
    def idempotency_lease_seconds(self) -> float:
        if self.idempotency_lease is not None:
            return self.idempotency_lease
        return max(self.http_timeout, self.cv_timeout) + self.retry_max_seconds + 60.0

    @property
    def sandbox_db_path(self) -> str:
        """The embedded sandbox's SQLite file (or ``:memory:``)."""
        return self.sandbox_db or str(self.state_dir / SANDBOX_DB_NAME)

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


def _who() -> str:
    return f"uid {os.geteuid()} (gid {os.getegid()})"


def _secrets_dir() -> str | None:
    path = os.environ.get(env_name("secrets_dir"), DEFAULT_SECRETS_DIR)
    if not path or not Path(path).is_dir():
        return None
    _check_secrets_readable(Path(path))
    return path


def _check_secrets_readable(directory: Path) -> None:
    """Fail with one line naming what this process cannot read.

    pydantic-settings lists the folder and reads every file named like a setting; a permission
    error there surfaces as a traceback naming an unrelated field. Secret files mounted from a
    root-only folder (0700/0600) are the usual cause when the gateway runs unprivileged."""
    hint = (
        "the gateway's user must be able to read them (e.g. group-readable for its group, "
        "or compose/Kubernetes secrets); see docs/deploy.md"
    )
    if not os.access(directory, os.R_OK | os.X_OK):
        raise SettingsError(
            f"secrets directory {directory} ({env_name('secrets_dir')}) is not readable by {_who()}: {hint}"
        )
    names = {f"{ENV_PREFIX}{name}".lower() for name in Settings.model_fields}
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise SettingsError(f"secrets directory {directory}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name.lower() in names and not os.access(entry, os.R_OK):
            raise SettingsError(f"secret file {entry} is not readable by {_who()}: {hint}")


def _env_file() -> Path | None:
    """``.env`` in the working directory, unless someone else could have written it.

    A world-writable directory (``/tmp``) lets any local user plant a ``.env`` (e.g.
    ``CIVI_GATEWAY_ALLOW_ANONYMOUS=true``); such a file, or a world-writable one, is ignored
    with a warning."""
    path = Path(".env")
    try:
        folder, found = os.stat("."), os.stat(path)
    except OSError:
        return None
    if folder.st_mode & stat.S_IWOTH or found.st_mode & stat.S_IWOTH:
        where = "its directory" if folder.st_mode & stat.S_IWOTH else "the file"
        log.warning("ignoring %s: %s is writable by every user", path.resolve(), where)
        return None
    return path


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, ``.env`` and the secrets directory.

    Raises ``SettingsError`` with a readable message naming each bad variable.
    """
    try:
        return Settings(_secrets_dir=_secrets_dir(), _env_file=_env_file(), **overrides)  # type: ignore[arg-type]
    except PydanticSettingsError as exc:
        # Anything else the sources could not read (a file vanished, a folder in the way).
        raise SettingsError(f"cannot read the settings: {exc}") from None
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
