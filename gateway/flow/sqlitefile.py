"""One SQLite file in the state folder, opened on first use, shared by the threads that run its
statements (each under the lock): what the change feed's and the webhooks' SQLite stores share."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any


class SqliteFile:
    """The file at ``path`` with ``schema`` (idempotent DDL) applied when it is opened."""

    schema = ""
    pragmas: tuple[str, ...] = ("PRAGMA journal_mode=WAL",)
    row_factory: Any = None

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        """Opened on first use: an app that never uses it creates no file."""
        if self._conn is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=30)
            db.row_factory = self.row_factory
            for pragma in self.pragmas:
                db.execute(pragma)
            db.executescript(self.schema)
            self._conn = db
        return self._conn

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
