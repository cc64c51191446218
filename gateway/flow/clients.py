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
from dataclasses import dataclass, field

from gateway.core.errors import GatewayError
from gateway.core.identity import Identity
from gateway.core.net import is_loopback
from gateway.core.policy import Policy

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
