"""API consumers (the callers of this gateway, not HTTP clients): bearer tokens configured only
as SHA-256 hashes, each with a name and a policy.

Tokens are long random strings (``civicrm-gateway token create``), so a plain SHA-256 is a
sufficient one-way hash; a stolen config does not reveal them. Comparison is constant-time and
covers every configured hash, so timing tells nothing about which one matched.

Configuration:
- ``CIVI_GATEWAY_CLIENT_TOKENS``: lines (or commas) of ``name:sha256:<hex>``, full-access clients;
- ``CIVI_GATEWAY_CLIENTS_FILE``: a TOML file with a ``[clients.NAME]`` table per client
  (``token_sha256`` plus policy keys, see ``policy.py``) and optional ``[defaults]``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import GatewayError
from gateway.core.identity import Identity
from gateway.core.policy import Policy
from gateway.settings import Settings, SettingsError, env_name, is_loopback

TOKEN_PREFIX = "cgw_"  # noqa: S105 (a prefix, not a secret)
_HASH_LINE = re.compile(r"(?P<name>[A-Za-z0-9_.@-]{1,64}):sha256:(?P<hex>[0-9a-fA-F]{64})")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Client:
    name: str
    policy: Policy
    identity: Identity | None = None
    token_hash: bytes = field(default=b"", repr=False)


ANONYMOUS = Client("anonymous", Policy())


def _parse_token_lines(text: str) -> list[tuple[str, str]]:
    entries = []
    for raw in re.split(r"[\n,]", text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _HASH_LINE.fullmatch(line)
        if not match:
            # Don't echo the line: someone may have pasted a plaintext token by mistake.
            raise SettingsError(
                f"{env_name('client_tokens')}: each entry must be NAME:sha256:<64 hex digits> "
                "(create one with `civicrm-gateway token create NAME`)"
            )
        entries.append((match["name"], match["hex"].lower()))
    return entries


def _read_secret_file(path: str, setting: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _client_from_table(
    name: str, table: Mapping[str, Any], defaults: Mapping[str, Any], where: str
) -> Client:
    merged = {**defaults, **table}
    token_hash = str(merged.pop("token_sha256", "")).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise SettingsError(f"{where}: clients.{name}.token_sha256 must be 64 hex digits")
    api_key = merged.pop("civicrm_api_key_file", None)
    cv_user = merged.pop("cv_user", None)
    identity = None
    if api_key or cv_user:
        identity = Identity(
            api_key=_read_secret_file(api_key, f"{where}: clients.{name}.civicrm_api_key_file")
            if api_key
            else None,
            cv_user=str(cv_user) if cv_user else None,
        )
    try:
        policy = Policy.from_mapping(merged)
    except ValueError as exc:
        raise SettingsError(f"{where}: clients.{name}: {exc}") from None
    return Client(name, policy, identity, bytes.fromhex(token_hash))


def load_clients(settings: Settings) -> list[Client]:
    """Every configured client; an empty list means the gateway runs without client auth."""
    clients: list[Client] = []
    defaults: dict[str, Any] = {}
    if settings.clients_file is not None:
        where = env_name("clients_file")
        try:
            data = tomllib.loads(settings.clients_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{where}: cannot read {settings.clients_file}: {exc}") from None
        defaults = dict(data.get("defaults", {}))
        for name, table in data.get("clients", {}).items():
            if not isinstance(table, dict):
                raise SettingsError(f"{where}: clients.{name} must be a table")
            clients.append(_client_from_table(name, table, defaults, where))
    if settings.client_tokens is not None:
        default_policy = Policy.from_mapping(defaults) if defaults else Policy()
        for name, hex_hash in _parse_token_lines(settings.client_tokens.get_secret_value()):
            clients.append(Client(name, default_policy, None, bytes.fromhex(hex_hash)))
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise SettingsError(
            f"client names must be unique across {env_name('client_tokens')} and {env_name('clients_file')}"
        )
    return clients


class Authenticator:
    """Maps an ``Authorization: Bearer`` header to a configured client."""

    def __init__(self, clients: list[Client], *, allow_anonymous: bool) -> None:
        self.clients = clients
        self.allow_anonymous = allow_anonymous

    @property
    def enabled(self) -> bool:
        return bool(self.clients)

    def authenticate(self, authorization: str | None, peer: str | None, *, proxied: bool = False) -> Client:
        """``proxied``: the request names an original client (Forwarded, X-Forwarded-For,
        X-Real-IP), so a loopback peer is a reverse proxy speaking for someone else."""
        if not self.clients:
            # No tokens: only loopback callers, unless the operator explicitly allowed anyone.
            if self.allow_anonymous or (peer is not None and is_loopback(peer) and not proxied):
                return ANONYMOUS
            detail = "This gateway has no client tokens and serves loopback callers only."
            if proxied:
                detail = (
                    "This gateway has no client tokens and serves loopback callers only; "
                    "this request came through a proxy (it carries a Forwarded or "
                    "X-Forwarded-For header). Configure client tokens."
                )
            raise GatewayError(
                "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="civicrm-gateway"'}
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError(
                "unauthenticated",
                "Send 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": 'Bearer realm="civicrm-gateway"'},
            )
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Client | None = None
        for client in self.clients:  # no early exit: the same work whichever client matches
            if hmac.compare_digest(digest, client.token_hash):
                found = client
        if found is None:
            raise GatewayError(
                "unauthenticated",
                "The bearer token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="civicrm-gateway", error="invalid_token"'},
            )
        return found
