"""Subscriptions and their delivery queue in SQLite in the state folder (``webhooks.sqlite``):
see ``store.WebhookStore``. Statements run in a thread; WAL mode lets one host's workers share
the file; a lease is a row (name, owner, until).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from typing import Any

import orjson

from gateway.flow.sqlitefile import SqliteFile
from gateway.flow.webhooks.store import WebhookStore, new_delivery_id, new_secret, new_subscription_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, client TEXT NOT NULL, entity TEXT NOT NULL, url TEXT NOT NULL,
    query TEXT NOT NULL, types TEXT NOT NULL, secret TEXT NOT NULL, old_secret TEXT,
    old_until REAL, cursor TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT, failing_since REAL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, subscription TEXT NOT NULL, seq INTEGER NOT NULL,
    record INTEGER NOT NULL, type TEXT NOT NULL, change_cursor TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    last_status INTEGER, last_error TEXT, created REAL NOT NULL, done_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (subscription, status, seq);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
"""

SUB_COLUMNS = (
    "id, client, entity, url, query, types, secret, old_secret, old_until, cursor, enabled,"
    " disabled_reason, failing_since, created"
)
DELIVERY_COLUMNS = (
    "id, subscription, seq, record, type, change_cursor, status, attempts, next_at,"
    " last_status, last_error, created, done_at"
)


class SqliteWebhookStore(SqliteFile, WebhookStore):
    schema = _SCHEMA
    row_factory = sqlite3.Row

    # --- subscriptions -----------------------------------------------------------------------
    def _add(
        self, client: str, entity: str, url: str, query: dict[str, Any], types: list[str], cursor: str
    ) -> dict[str, Any]:
        sub_id = new_subscription_id()
        with self._lock:
            self._db.execute(
                "INSERT INTO subscriptions (id, client, entity, url, query, types, secret, cursor, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sub_id,
                    client,
                    entity,
                    url,
                    orjson.dumps(query).decode(),
                    orjson.dumps(types).decode(),
                    new_secret(),
                    cursor,
                    time.time(),
                ),
            )
        found = self._get(sub_id)
        assert found is not None
        return found

    def _get(self, sub_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?",  # noqa: S608
                (sub_id,),
            ).fetchone()
        return None if row is None else dict(row)

    def _subscriptions(self, client: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if client is None:
                rows = self._db.execute(
                    f"SELECT {SUB_COLUMNS} FROM subscriptions ORDER BY created"  # noqa: S608
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE client = ? ORDER BY created",  # noqa: S608
                    (client,),
                ).fetchall()
        return [dict(r) for r in rows]

    def _remove(self, sub_id: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM deliveries WHERE subscription = ?", (sub_id,))
            self._db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
            self._db.execute("COMMIT")

    def _rotate(self, sub_id: str, overlap: float) -> str:
        secret = new_secret()
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET old_secret = secret, old_until = ?, secret = ? WHERE id = ?",
                (time.time() + overlap, secret, sub_id),
            )
        return secret

    def _set_enabled(self, sub_id: str, enabled: bool, reason: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET enabled = ?, disabled_reason = ?, failing_since = NULL WHERE id = ?"
                if enabled
                else "UPDATE subscriptions SET enabled = ?, disabled_reason = ? WHERE id = ?",
                (int(enabled), reason, sub_id),
            )

    def _failing(self, sub_id: str, since: float | None) -> None:
        with self._lock:
            self._db.execute("UPDATE subscriptions SET failing_since = ? WHERE id = ?", (since, sub_id))

    # --- the queue -----------------------------------------------------------------------------
    def _enqueue(
        self, sub_id: str, changes: list[tuple[int, str, str]], cursor: str, polled_from: str | None
    ) -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT cursor FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            if row is None or (polled_from is not None and row[0] != polled_from):
                self._db.execute("ROLLBACK")
                return False
            top = int(
                self._db.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM deliveries WHERE subscription = ?", (sub_id,)
                ).fetchone()[0]
            )
            self._db.executemany(
                "INSERT INTO deliveries (id, subscription, seq, record, type, change_cursor, status,"
                " next_at, created) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                [
                    (new_delivery_id(), sub_id, top + n + 1, *change, now, now)
                    for n, change in enumerate(changes)
                ],
            )
            self._db.execute("UPDATE subscriptions SET cursor = ? WHERE id = ?", (cursor, sub_id))
            self._db.execute("COMMIT")
        return True

    def _head(self, sub_id: str) -> dict[str, Any] | None:
        """The subscription's oldest pending delivery (later ones wait: order is kept)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription = ? AND status = 'pending'"  # noqa: S608
                " ORDER BY seq LIMIT 1",
                (sub_id,),
            ).fetchone()
        return None if row is None else dict(row)

    def _outcome(
        self, delivery: str, status: str, *, code: int | None, error: str | None, next_at: float
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status = ?,"
                " last_error = ?, next_at = ?, done_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END"
                " WHERE id = ?",
                (status, code, error, next_at, status, time.time(), delivery),
            )

    def _deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription = ? ORDER BY seq DESC LIMIT ?",  # noqa: S608
                (sub_id, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def _retry(self, sub_id: str, delivery: str) -> bool:
        with self._lock:
            changed = self._db.execute(
                "UPDATE deliveries SET status = 'pending', next_at = ?, created = ?, done_at = NULL"
                " WHERE id = ? AND subscription = ? AND status != 'pending'",
                (time.time(), time.time(), delivery, sub_id),
            ).rowcount
        return changed > 0

    def _depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()
        return int(n)

    # --- leases --------------------------------------------------------------------------------
    def _lease(self, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO leases (name, owner, until) VALUES (?, ?, 0)", (name, owner)
            )
            got = self._db.execute(
                "UPDATE leases SET owner = ?, until = ? WHERE name = ? AND (until < ? OR owner = ?)",
                (owner, now + seconds, name, now, owner),
            ).rowcount
            self._db.execute("COMMIT")
        return got > 0

    def _release(self, name: str, owner: str) -> None:
        with self._lock:
            self._db.execute("UPDATE leases SET until = 0 WHERE name = ? AND owner = ?", (name, owner))

    # --- the interface: each statement in a thread ----------------------------------------------
    async def add(
        self, client: str, entity: str, url: str, query: dict[str, Any], types: list[str], cursor: str
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._add, client, entity, url, query, types, cursor)

    async def get(self, sub_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, sub_id)

    async def subscriptions(self, client: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._subscriptions, client)

    async def remove(self, sub_id: str) -> None:
        await asyncio.to_thread(self._remove, sub_id)

    async def rotate(self, sub_id: str, overlap: float) -> str:
        return await asyncio.to_thread(self._rotate, sub_id, overlap)

    async def set_enabled(self, sub_id: str, enabled: bool, reason: str | None = None) -> None:
        await asyncio.to_thread(self._set_enabled, sub_id, enabled, reason)

    async def failing(self, sub_id: str, since: float | None) -> None:
        await asyncio.to_thread(self._failing, sub_id, since)

    async def enqueue(
        self, sub_id: str, changes: list[tuple[int, str, str]], cursor: str, *, polled_from: str | None = None
    ) -> bool:
        return await asyncio.to_thread(self._enqueue, sub_id, changes, cursor, polled_from)

    async def head(self, sub_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._head, sub_id)

    async def outcome(
        self, delivery: str, status: str, *, code: int | None, error: str | None, next_at: float
    ) -> None:
        await asyncio.to_thread(
            functools.partial(self._outcome, delivery, status, code=code, error=error, next_at=next_at)
        )

    async def deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._deliveries, sub_id, limit)

    async def retry(self, sub_id: str, delivery: str) -> bool:
        return await asyncio.to_thread(self._retry, sub_id, delivery)

    async def depth(self) -> int:
        return await asyncio.to_thread(self._depth)

    async def lease(self, name: str, owner: str, seconds: float) -> bool:
        return await asyncio.to_thread(self._lease, name, owner, seconds)

    async def release(self, name: str, owner: str) -> None:
        await asyncio.to_thread(self._release, name, owner)
