"""Subscriptions and their delivery queue, in SQLite in the state folder (``webhooks.sqlite``).

A subscription keeps its feed's cursor; the changes a poll finds are queued together with the
cursor that follows them (one transaction), so a restart neither loses nor re-queues them. A
delivery keeps the change (record id, type, its feed cursor), never the record's values: they
are read at delivery time, under the client's policy as it is then. A lease row makes one
process of those sharing the file the one that polls and delivers.
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

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


def new_secret() -> str:
    """``whsec_`` and 24 random bytes in standard, padded base64 (32 characters, no ``=``), as
    Standard Webhooks says: every library, and a receiver checking by hand, decodes it."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        """Opened on first use: an app that never uses it creates no file."""
        if self._conn is None:
            path = self._path
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._conn = db
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- subscriptions -----------------------------------------------------------------------
    def add(
        self, client: str, entity: str, url: str, query: dict[str, Any], types: list[str], cursor: str
    ) -> dict[str, Any]:
        sub_id = "wh_" + secrets.token_hex(12)
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
        found = self.get(sub_id)
        assert found is not None
        return found

    def get(self, sub_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?",  # noqa: S608
                (sub_id,),
            ).fetchone()
        return None if row is None else dict(row)

    def subscriptions(self, client: str | None = None) -> list[dict[str, Any]]:
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

    def remove(self, sub_id: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM deliveries WHERE subscription = ?", (sub_id,))
            self._db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
            self._db.execute("COMMIT")

    def rotate(self, sub_id: str, overlap: float) -> str:
        secret = new_secret()
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET old_secret = secret, old_until = ?, secret = ? WHERE id = ?",
                (time.time() + overlap, secret, sub_id),
            )
        return secret

    def set_enabled(self, sub_id: str, enabled: bool, reason: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET enabled = ?, disabled_reason = ?, failing_since = NULL WHERE id = ?"
                if enabled
                else "UPDATE subscriptions SET enabled = ?, disabled_reason = ? WHERE id = ?",
                (int(enabled), reason, sub_id),
            )

    def failing(self, sub_id: str, since: float | None) -> None:
        with self._lock:
            self._db.execute("UPDATE subscriptions SET failing_since = ? WHERE id = ?", (since, sub_id))

    # --- the queue -----------------------------------------------------------------------------
    def enqueue(self, sub_id: str, changes: list[tuple[int, str, str]], cursor: str) -> None:
        """Changes (record id, type, change cursor) found by a poll, and the cursor after them."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            top = int(
                self._db.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM deliveries WHERE subscription = ?", (sub_id,)
                ).fetchone()[0]
            )
            self._db.executemany(
                "INSERT INTO deliveries (id, subscription, seq, record, type, change_cursor, status,"
                " next_at, created) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                [
                    ("msg_" + secrets.token_hex(12), sub_id, top + n + 1, *change, now, now)
                    for n, change in enumerate(changes)
                ],
            )
            self._db.execute("UPDATE subscriptions SET cursor = ? WHERE id = ?", (cursor, sub_id))
            self._db.execute("COMMIT")

    def head(self, sub_id: str) -> dict[str, Any] | None:
        """The subscription's oldest pending delivery (later ones wait: order is kept)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription = ? AND status = 'pending'"  # noqa: S608
                " ORDER BY seq LIMIT 1",
                (sub_id,),
            ).fetchone()
        return None if row is None else dict(row)

    def outcome(
        self, delivery: str, status: str, *, code: int | None, error: str | None, next_at: float
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status = ?,"
                " last_error = ?, next_at = ?, done_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END"
                " WHERE id = ?",
                (status, code, error, next_at, status, time.time(), delivery),
            )

    def deliveries(self, sub_id: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE subscription = ? ORDER BY seq DESC LIMIT ?",  # noqa: S608
                (sub_id, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def retry(self, sub_id: str, delivery: str) -> bool:
        with self._lock:
            changed = self._db.execute(
                "UPDATE deliveries SET status = 'pending', next_at = ?, created = ?, done_at = NULL"
                " WHERE id = ? AND subscription = ? AND status != 'pending'",
                (time.time(), time.time(), delivery, sub_id),
            ).rowcount
        return changed > 0

    def depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()
        return int(n)

    # --- one active deliverer ----------------------------------------------------------------
    def lease(self, owner: str, seconds: float) -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO leases (name, owner, until) VALUES ('deliverer', ?, 0)", (owner,)
            )
            got = self._db.execute(
                "UPDATE leases SET owner = ?, until = ?"
                " WHERE name = 'deliverer' AND (until < ? OR owner = ?)",
                (owner, now + seconds, now, owner),
            ).rowcount
            self._db.execute("COMMIT")
        return got > 0

    def release(self, owner: str) -> None:
        with self._lock:
            self._db.execute("UPDATE leases SET until = 0 WHERE name = 'deliverer' AND owner = ?", (owner,))
