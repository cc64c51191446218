"""The audit trail's SQLite file (``audit.sqlite`` in the state directory): the table, its
indexes, retention, and the one query ``GET /audit`` and ``civicrm-gateway audit`` both run.

Each record is kept whole as JSON, with the columns the filters need beside it; the ids a call
affected get a row each in ``audit_ids``, so "what happened to Contact 42" is an index lookup.
WAL mode and a busy timeout let several workers write and the CLI read at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

FILE_NAME = "audit.sqlite"
_BUSY_MS = 5000
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        client TEXT,
        entity TEXT,
        action TEXT NOT NULL,
        status INTEGER NOT NULL,
        record TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_ids (
        id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (id, seq)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS audit_by_client ON audit_records (client, seq)",
    "CREATE INDEX IF NOT EXISTS audit_by_entity ON audit_records (entity, seq)",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_records (time)",
)
OUTCOMES = ("ok", "denied", "error")
_OUTCOME_SQL = {
    "ok": "status < 400",
    "denied": "status IN (401, 403)",
    "error": "status >= 400 AND status NOT IN (401, 403)",
}


def store_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_MS / 1000)
    else:
        conn = sqlite3.connect(path, timeout=_BUSY_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


class AuditStore:
    """The writing side, used by the writer thread only (one connection, one thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # personal data may be in it: owner only
        self.path = path
        self.conn = _connect(path)
        self.conn.execute("PRAGMA journal_mode = WAL")
        with self.conn:
            for statement in _SCHEMA:
                self.conn.execute(statement)

    def insert(self, records: list[dict[str, Any]]) -> None:
        with self.conn:
            for record in records:
                cursor = self.conn.execute(
                    "INSERT INTO audit_records (time, client, entity, action, status, record) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record["time"],
                        record["client"],
                        record["entity"],
                        record["action"],
                        record["status"],
                        orjson.dumps(record).decode(),
                    ),
                )
                self.conn.executemany(
                    "INSERT OR IGNORE INTO audit_ids (id, seq) VALUES (?, ?)",
                    [(i, cursor.lastrowid) for i in record["ids"]],
                )

    def prune(self, older_than: str) -> int:
        """Delete the records from before ``older_than`` (an ISO time); how many went."""
        with self.conn:
            self.conn.execute(
                "DELETE FROM audit_ids WHERE seq IN (SELECT seq FROM audit_records WHERE time < ?)",
                (older_than,),
            )
            return self.conn.execute("DELETE FROM audit_records WHERE time < ?", (older_than,)).rowcount

    def close(self) -> None:
        self.conn.close()


def retention_cutoff(days: float) -> str:
    when = datetime.now(UTC) - timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_time(value: str) -> str:
    """An ISO 8601 date or time (``2026-11-29``, ``2026-11-29T10:00``, with ``Z`` or an offset;
    none means UTC) as the stored form. ValueError names what was wrong."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value[:40]!r} is not an ISO 8601 date or time (e.g. 2026-11-29 or 2026-11-29T10:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Query:
    """Filters of a listing; every one is optional. ``before``: the cursor, a ``seq``."""

    client: str | None = None
    entity: str | None = None
    id: int | None = None
    action: str | None = None
    since: str | None = None
    until: str | None = None
    outcome: str | None = None
    limit: int = 100
    before: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for column in ("client", "entity", "action"):
            value = getattr(self, column)
            if value is not None:
                # CiviCRM matches entity and action names in any case; so do these filters.
                clauses.append(f"{column} = ?" + (" COLLATE NOCASE" if column != "client" else ""))
                args.append(value)
        if self.id is not None:
            clauses.append("seq IN (SELECT seq FROM audit_ids WHERE id = ?)")
            args.append(self.id)
        if self.since is not None:
            clauses.append("time >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("time < ?")
            args.append(self.until)
        if self.outcome is not None:
            clauses.append(_OUTCOME_SQL[self.outcome])
        if self.before is not None:
            clauses.append("seq < ?")
            args.append(self.before)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def search(path: Path, query: Query) -> tuple[list[dict[str, Any]], int | None]:
    """Records matching ``query``, newest first, each with its ``seq``; and the cursor of the
    next page (None: this was the last)."""
    if not path.exists():
        return [], None
    where, args = query.where()
    with contextlib.closing(_connect(path, read_only=True)) as conn:
        rows = conn.execute(
            f"SELECT seq, record FROM audit_records{where} "  # noqa: S608
            "ORDER BY seq DESC LIMIT ?",
            [*args, query.limit + 1],
        ).fetchall()
    records = [{"seq": seq, **orjson.loads(text)} for seq, text in rows[: query.limit]]
    more = len(rows) > query.limit
    return records, (records[-1]["seq"] if more and records else None)
