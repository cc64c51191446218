"""Feed state in SQLite in the state folder (``changes.sqlite``): see ``state.FeedState``.

Statements are blocking and short; each runs in a thread (``asyncio.to_thread``). WAL mode
and a busy timeout let the workers of one host share the file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from gateway.flow.changes.state import FeedState, Lineage
from gateway.flow.sqlitefile import SqliteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lineages (
    id TEXT PRIMARY KEY, client TEXT NOT NULL, entity TEXT NOT NULL, mode TEXT NOT NULL,
    query TEXT NOT NULL, next_seq INTEGER NOT NULL DEFAULT 1, tracked INTEGER NOT NULL,
    scanned_at REAL NOT NULL DEFAULT 0, used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    lineage TEXT NOT NULL, id INTEGER NOT NULL, modified TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (lineage, id, modified)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS known (
    lineage TEXT NOT NULL, id INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (lineage, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tombstones (
    lineage TEXT NOT NULL, id INTEGER NOT NULL, seq INTEGER, found_at REAL NOT NULL,
    PRIMARY KEY (lineage, id)
) WITHOUT ROWID;
"""


class SqliteFeedState(SqliteFile, FeedState):
    schema = _SCHEMA
    pragmas = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")

    def _create(self, lineage: str, client: str, entity: str, mode: str, query: str, tracked: bool) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO lineages (id, client, entity, mode, query, tracked, scanned_at, used_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (lineage, client, entity, mode, query, int(tracked), time.time(), time.time()),
            )

    def _lineage(self, lineage: str) -> Lineage | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, client, entity, mode, query, tracked, scanned_at FROM lineages WHERE id = ?",
                (lineage,),
            ).fetchone()
            if row is not None:
                self._db.execute("UPDATE lineages SET used_at = ? WHERE id = ?", (time.time(), lineage))
        return None if row is None else Lineage(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])

    def _numbers(self, lineage: str, count: int) -> int:
        """``count`` new change numbers for the feed: the first of them."""
        with self._lock:
            (after,) = self._db.execute(
                "UPDATE lineages SET next_seq = next_seq + ? WHERE id = ? RETURNING next_seq",
                (count, lineage),
            ).fetchone()
        return int(after) - count

    def _seen(self, lineage: str, versions: Iterable[tuple[int, str]], upto: int) -> set[tuple[int, str]]:
        """Which of these versions were reported with a number the holder has received."""
        found = set()
        with self._lock:
            for id_, modified in versions:
                row = self._db.execute(
                    "SELECT 1 FROM seen WHERE lineage = ? AND id = ? AND modified = ? AND seq <= ?",
                    (lineage, id_, modified, upto),
                ).fetchone()
                if row is not None:
                    found.add((id_, modified))
        return found

    def _reported(self, lineage: str, versions: Iterable[tuple[int, str, int]], forget_before: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO seen (lineage, id, modified, seq) VALUES (?, ?, ?, ?)",
                [(lineage, i, m, s) for i, m, s in versions],
            )
            self._db.execute("DELETE FROM seen WHERE lineage = ? AND modified < ?", (lineage, forget_before))
            self._db.execute("COMMIT")

    def _known(self, lineage: str) -> dict[int, str]:
        with self._lock:
            return dict(self._db.execute("SELECT id, hash FROM known WHERE lineage = ?", (lineage,)))

    def _know(self, lineage: str, items: Iterable[tuple[int, str]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO known (lineage, id, hash) VALUES (?, ?, ?)",
                [(lineage, i, h) for i, h in items],
            )

    def _gone(self, lineage: str, ids: Iterable[int]) -> None:
        """These ids are no longer listed: forgotten, and a deletion to report."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            for id_ in ids:
                self._db.execute("DELETE FROM known WHERE lineage = ? AND id = ?", (lineage, id_))
                self._db.execute(
                    "INSERT OR IGNORE INTO tombstones (lineage, id, seq, found_at) VALUES (?, ?, NULL, ?)",
                    (lineage, id_, now),
                )
            self._db.execute("UPDATE lineages SET scanned_at = ? WHERE id = ?", (now, lineage))
            self._db.execute("COMMIT")

    def _deletions(self, lineage: str, after: int, limit: int) -> list[int]:
        """Deletions the holder of change number ``after`` has not received, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM tombstones WHERE lineage = ? AND (seq IS NULL OR seq > ?)"
                " ORDER BY found_at, id LIMIT ?",
                (lineage, after, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def _number_deletions(self, lineage: str, numbered: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE tombstones SET seq = ? WHERE lineage = ? AND id = ?",
                [(s, lineage, i) for i, s in numbered],
            )

    def _forget_unused(self, days: float) -> int:
        """Feeds unused for ``days``, with everything they kept."""
        before = time.time() - days * 86_400
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM lineages WHERE used_at < ?", (before,))]
            for delete in (
                "DELETE FROM seen WHERE lineage = ?",
                "DELETE FROM known WHERE lineage = ?",
                "DELETE FROM tombstones WHERE lineage = ?",
            ):
                self._db.executemany(delete, [(i,) for i in ids])
            self._db.executemany("DELETE FROM lineages WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    # --- the interface: each statement in a thread ----------------------------------------------
    async def create(
        self, lineage: str, client: str, entity: str, mode: str, query: str, tracked: bool
    ) -> None:
        await asyncio.to_thread(self._create, lineage, client, entity, mode, query, tracked)

    async def lineage(self, lineage: str) -> Lineage | None:
        return await asyncio.to_thread(self._lineage, lineage)

    async def numbers(self, lineage: str, count: int) -> int:
        return await asyncio.to_thread(self._numbers, lineage, count)

    async def seen(
        self, lineage: str, versions: Iterable[tuple[int, str]], upto: int
    ) -> set[tuple[int, str]]:
        return await asyncio.to_thread(self._seen, lineage, list(versions), upto)

    async def reported(
        self, lineage: str, versions: Iterable[tuple[int, str, int]], forget_before: str
    ) -> None:
        await asyncio.to_thread(self._reported, lineage, list(versions), forget_before)

    async def known(self, lineage: str) -> dict[int, str]:
        return await asyncio.to_thread(self._known, lineage)

    async def know(self, lineage: str, items: Iterable[tuple[int, str]]) -> None:
        await asyncio.to_thread(self._know, lineage, list(items))

    async def gone(self, lineage: str, ids: Iterable[int]) -> None:
        await asyncio.to_thread(self._gone, lineage, list(ids))

    async def deletions(self, lineage: str, after: int, limit: int) -> list[int]:
        return await asyncio.to_thread(self._deletions, lineage, after, limit)

    async def number_deletions(self, lineage: str, numbered: Iterable[tuple[int, int]]) -> None:
        await asyncio.to_thread(self._number_deletions, lineage, list(numbered))

    async def forget_unused(self, days: float) -> int:
        return await asyncio.to_thread(self._forget_unused, days)
