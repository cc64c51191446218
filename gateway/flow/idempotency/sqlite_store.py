"""Idempotency entries in SQLite in the state directory: the default, survives a restart and
is shared by the workers of one host (not by replicas on other hosts: use Redis there).

sqlite3 blocks, so every statement runs on one thread of its own (the connection is used by
that thread only); the event loop only awaits it. A claim is one ``BEGIN IMMEDIATE``
transaction: drop the scope's expired entry, ``INSERT ... ON CONFLICT DO NOTHING``, and read
back what is there when the insert did nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.core.errors import SettingsError, env_name
from gateway.flow.idempotency.store import Entry, Store

T = TypeVar("T")

_DDL = """
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    answered INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    entry BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires_at);
"""
_PURGE_EVERY = 60.0  # seconds between sweeps of expired entries


class SqliteStore(Store):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idempotency")
        self._purged = 0.0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise SettingsError(
                    f"cannot open the idempotency database {self.path}: {exc}. "
                    f"Set {env_name('state_dir')} to a writable folder"
                ) from None
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed entry
            db.executescript(_DDL)
            self._db = db
        return self._db

    def _claim(self, scope: str, entry: Entry) -> Entry | None:
        db = self._connect()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            if now - self._purged > _PURGE_EVERY:
                db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
                self._purged = now
            else:
                db.execute("DELETE FROM idempotency WHERE scope = ? AND expires_at <= ?", (scope, now))
            inserted = db.execute(
                "INSERT INTO idempotency (scope, owner, answered, expires_at, entry) "
                "VALUES (?, ?, 0, ?, ?) "
                "ON CONFLICT (scope) DO NOTHING",
                (scope, entry.owner, entry.expires_at, entry.encode()),
            ).rowcount
            found = (
                None
                if inserted
                else db.execute("SELECT entry FROM idempotency WHERE scope = ?", (scope,)).fetchone()
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Entry.decode(found[0]) if found else None

    def _finish(self, scope: str, owner: str, entry: Entry) -> bool:
        cursor = self._connect().execute(
            "UPDATE idempotency SET answered = 1, expires_at = ?, entry = ? WHERE scope = ? AND owner = ?",
            (entry.expires_at, entry.encode(), scope, owner),
        )
        return cursor.rowcount == 1

    def _release(self, scope: str, owner: str) -> None:
        # In flight only: an entry whose answer is stored is never released.
        self._connect().execute(
            "DELETE FROM idempotency WHERE scope = ? AND owner = ? AND answered = 0", (scope, owner)
        )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def claim(self, scope: str, entry: Entry) -> Entry | None:
        return await self._run(self._claim, scope, entry)

    async def finish(self, scope: str, owner: str, entry: Entry) -> bool:
        return await self._run(self._finish, scope, owner, entry)

    async def release(self, scope: str, owner: str) -> None:
        await self._run(self._release, scope, owner)

    async def close(self) -> None:
        await self._run(self._close)
        self._thread.shutdown(wait=False)
