"""Writing the audit trail: a queue the routes add records to without waiting, one writer
thread, and the sinks it writes them to (``CIVI_GATEWAY_AUDIT_SINKS``):

- ``sqlite``: ``audit.sqlite`` in the state directory (:mod:`.store`), what ``GET /audit`` and
  ``civicrm-gateway audit`` read; older records are deleted after the retention period;
- ``file``: JSON lines, rotated by size (stdlib ``RotatingFileHandler``; one process per file);
- ``stdout``: JSON lines on standard output, for container logs (the gateway's own log lines
  go to standard error).

Every record is serialised once and passed through the log redactor, so no configured secret
reaches any sink whatever a client wrote. A sink that fails logs an error and counts in
``gateway_audit_errors{sink}``; the request it records has been answered already. The queue is
flushed on graceful shutdown (the app's lifespan) and before ``GET /audit`` reads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.core.redact import REDACTOR
from gateway.flow.audit.record import AuditRecord
from gateway.flow.audit.store import AuditStore, retention_cutoff, store_path

if TYPE_CHECKING:
    from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.flow.audit")

FILE_NAME = "audit.jsonl"
# Records waiting for the writer beyond this are dropped (and counted): a stuck sink must not
# grow the gateway's memory without bound.
MAX_QUEUED = 10_000
_BATCH = 500
_PRUNE_EVERY = 3600.0  # seconds between retention passes over the SQLite file
_STOP = object()


class Sink(Protocol):
    name: str

    def write(self, lines: list[str], records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class _OwnerOnlyRotatingFile(RotatingFileHandler):
    """Files created 0600 (records may hold personal data); a failure raised, not printed."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding="utf-8")

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # called inside emit's except block: re-raises what emit caught


class FileSink:
    name = "file"

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.handler: _OwnerOnlyRotatingFile | None = None

    def write(self, lines: list[str], records: list[dict[str, Any]]) -> None:
        if self.handler is None:  # opened by the writer thread, on first use
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handler = _OwnerOnlyRotatingFile(
                self.path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8", delay=True
            )
        for line in lines:
            self.handler.emit(logging.makeLogRecord({"msg": line}))

    def close(self) -> None:
        if self.handler is not None:
            self.handler.close()


class StdoutSink:
    name = "stdout"

    def write(self, lines: list[str], records: list[dict[str, Any]]) -> None:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

    def close(self) -> None:
        pass


class SqliteSink:
    name = "sqlite"

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = path
        self.retention_days = retention_days
        self.store: AuditStore | None = None
        self.pruned: float | None = None  # monotonic time of the last retention pass

    def write(self, lines: list[str], records: list[dict[str, Any]]) -> None:
        if self.store is None:  # opened by the writer thread, on first use
            self.store = AuditStore(self.path)
        if self.retention_days and (self.pruned is None or time.monotonic() - self.pruned > _PRUNE_EVERY):
            self.store.prune(retention_cutoff(self.retention_days))
            self.pruned = time.monotonic()
        self.store.insert(records)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@dataclass(frozen=True)
class AuditConfig:
    """Where records go (``sinks``: sqlite, file, stdout) and what they hold."""

    sinks: tuple[str, ...]
    state_dir: Path
    with_values: bool = False
    retention_days: float = 90.0
    file: Path | None = None
    file_max_bytes: int = 10_000_000
    file_backups: int = 5


def make_sinks(config: AuditConfig) -> list[Sink]:
    sinks: list[Sink] = []
    for kind in dict.fromkeys(config.sinks):
        if kind == "sqlite":
            sinks.append(SqliteSink(store_path(config.state_dir), config.retention_days))
        elif kind == "file":
            sinks.append(
                FileSink(
                    config.file or config.state_dir / FILE_NAME, config.file_max_bytes, config.file_backups
                )
            )
        else:
            sinks.append(StdoutSink())
    return sinks


class AuditTrail:
    """The app's audit trail (``Services.audit``)."""

    def __init__(self, config: AuditConfig, metrics: Metrics | None = None) -> None:
        self.with_values = config.with_values
        self.sqlite_path = store_path(config.state_dir) if "sqlite" in config.sinks else None
        self._config = config
        self._metrics = metrics
        self._sinks: list[Sink] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if metrics is not None:
            # Exported at 0 from the start, so rate() and alerts see the first failure.
            for sink in [*config.sinks, "queue"]:
                metrics.audit_errors.labels(sink)

    @property
    def enabled(self) -> bool:
        return bool(self._config.sinks)

    def add(self, record: AuditRecord) -> None:
        """Queue a record for the writer; never blocks, never raises."""
        if not self.enabled:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self._failed("queue", "the writer is behind: record dropped")
            return
        self._ensure_started()
        self._queue.put(record)

    async def flush(self, wait: float = 10.0) -> None:
        """Wait (off the event loop) until every record added so far has been written."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        await asyncio.to_thread(done.wait, wait)

    async def close(self, wait: float = 10.0) -> None:
        """Write what is queued, close the sinks and stop the writer (graceful shutdown)."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join, wait)
        self._thread = None

    # --- the writer thread -------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        sinks = self._sinks = make_sinks(self._config)
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [item for item in batch if isinstance(item, AuditRecord)]
            if records:
                self._write(sinks, records)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
                stop = stop or item is _STOP
        for sink in sinks:
            try:
                sink.close()
            except Exception as exc:
                self._failed(sink.name, f"closing: {type(exc).__name__}: {exc}")

    def _write(self, sinks: list[Sink], records: list[AuditRecord]) -> None:
        # Serialised once, and through the redactor: no configured secret in any sink.
        lines = [REDACTOR.text(orjson.dumps(r.as_dict()).decode()) for r in records]
        data = [orjson.loads(line) for line in lines] if self.sqlite_path else []
        for sink in sinks:
            try:
                sink.write(lines, data)
            except Exception as exc:
                self._failed(sink.name, f"{len(records)} record(s) not written: {type(exc).__name__}: {exc}")

    def _failed(self, sink: str, why: str) -> None:
        log.error("audit trail, %s sink: %s", sink, why)
        if self._metrics is not None:
            self._metrics.audit_errors.labels(sink).inc()
