"""Subscriptions, their delivery queue and the leases of those who poll and deliver: one
abstraction, two stores (SQLite, Redis).

A subscription keeps its feed's cursor; the changes a poll finds are queued together with the
cursor that follows them (atomically, and only if the cursor is still the one polled from), so
a restart neither loses nor re-queues them, and a poller that lost its lease cannot queue them
twice. A delivery keeps the change (record id, type, its feed cursor), never the record's
values: they are read at delivery time, under the client's policy as it is then.

Leases are named, owned by a random token and timed: ``lease`` takes a free or expired one or
renews one the owner holds; a process that dies loses its leases when they expire. SQLite
(``webhooks.sqlite`` in the state folder) serves one host's workers; Redis serves replicas.
"""

from __future__ import annotations

import base64
import secrets
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

SUB_FIELDS = (
    "id",
    "client",
    "entity",
    "url",
    "query",
    "types",
    "secret",
    "old_secret",
    "old_until",
    "cursor",
    "enabled",
    "disabled_reason",
    "failing_since",
    "created",
)
DELIVERY_FIELDS = (
    "id",
    "subscription",
    "seq",
    "record",
    "type",
    "change_cursor",
    "status",
    "attempts",
    "next_at",
    "last_status",
    "last_error",
    "created",
    "done_at",
)


def new_secret() -> str:
    """``whsec_`` and 24 random bytes in standard, padded base64 (32 characters, no ``=``), as
    Standard Webhooks says: every library, and a receiver checking by hand, decodes it."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_subscription_id() -> str:
    return "wh_" + secrets.token_hex(12)


def new_delivery_id() -> str:
    return "msg_" + secrets.token_hex(12)


class WebhookStore(ABC):
    """Rows are dicts with the fields above (``query`` and ``types`` as JSON text)."""

    # --- subscriptions -------------------------------------------------------------------------
    @abstractmethod
    async def add(
        self, client: str, entity: str, url: str, query: dict[str, Any], types: list[str], cursor: str
    ) -> dict[str, Any]: ...

    @abstractmethod
    async def get(self, sub_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def subscriptions(self, client: str | None = None) -> list[dict[str, Any]]:
        """Oldest first; every client's when ``client`` is None."""

    @abstractmethod
    async def remove(self, sub_id: str) -> None:
        """The subscription and its deliveries."""

    @abstractmethod
    async def rotate(self, sub_id: str, overlap: float) -> str:
        """A new secret; the current one stays valid ``overlap`` seconds."""

    @abstractmethod
    async def set_enabled(self, sub_id: str, enabled: bool, reason: str | None = None) -> None: ...

    @abstractmethod
    async def failing(self, sub_id: str, since: float | None) -> None: ...

    # --- the queue -----------------------------------------------------------------------------
    @abstractmethod
    async def enqueue(
        self, sub_id: str, changes: list[tuple[int, str, str]], cursor: str, *, polled_from: str | None = None
    ) -> bool:
        """Changes (record id, type, change cursor) found by a poll, and the cursor after them.
        With ``polled_from``: only if the subscription's cursor is still that one (False: it
        moved, someone else queued these changes)."""

    @abstractmethod
    async def head(self, sub_id: str) -> dict[str, Any] | None:
        """The subscription's oldest pending delivery (later ones wait: order is kept)."""

    @abstractmethod
    async def outcome(
        self, delivery: str, status: str, *, code: int | None, error: str | None, next_at: float
    ) -> None:
        """One more attempt made: ``pending`` (again at ``next_at``) or settled."""

    @abstractmethod
    async def deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""

    @abstractmethod
    async def retry(self, sub_id: str, delivery: str) -> bool:
        """A settled delivery pending again; False when there is no such settled delivery."""

    @abstractmethod
    async def depth(self) -> int:
        """Pending deliveries, all subscriptions."""

    # --- leases ----------------------------------------------------------------------------------
    @abstractmethod
    async def lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take lease ``name`` for ``seconds`` if it is free, expired or already ``owner``'s."""

    @abstractmethod
    async def release(self, name: str, owner: str) -> None:
        """Give lease ``name`` up if ``owner`` holds it."""

    async def close(self) -> None:
        """Free connections and files."""


def make_webhook_store(kind: str, *, redis_url: str, sqlite_path: Path) -> WebhookStore:
    """The store ``kind`` names (sqlite or redis)."""
    if kind == "redis":
        from gateway.flow.webhooks.redis_store import RedisWebhookStore

        return RedisWebhookStore(redis_url)
    from gateway.flow.webhooks.sqlite_store import SqliteWebhookStore

    return SqliteWebhookStore(sqlite_path)
