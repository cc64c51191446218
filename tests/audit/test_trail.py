"""The writer behind the sinks: what is queued at shutdown is written, and a writer that falls
behind drops records with an error and a metric instead of growing without bound."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.flow.audit import AuditRecord, AuditTrail
from gateway.flow.audit import trail as trail_module
from gateway.services import audit_config
from gateway.settings import Settings
from gateway.telemetry.metrics import Metrics


def _record(i: int) -> AuditRecord:
    return AuditRecord(
        time="2026-11-29T10:00:00.000Z",
        request_id=f"r{i}",
        client="c",
        source="127.0.0.1",
        version=4,
        entity="Contact",
        action="create",
        ids=(i,),
        fields=("first_name",),
        status=200,
        duration_ms=1.0,
    )


async def test_close_writes_everything_queued(tmp_path: Path) -> None:
    settings = Settings(backend="sandbox", state_dir=tmp_path, audit_sinks=["sqlite", "file"])
    trail = AuditTrail(audit_config(settings))
    for i in range(3000):  # added without yielding: most are still queued at close()
        trail.add(_record(i))
    await trail.close()
    with sqlite3.connect(tmp_path / "audit.sqlite") as conn:
        stored = [row[0] for row in conn.execute("SELECT id FROM audit_ids ORDER BY seq")]
    assert stored == list(range(3000))
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3000


async def test_a_writer_behind_drops_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(trail_module, "MAX_QUEUED", 0)
    metrics = Metrics()
    trail = AuditTrail(audit_config(Settings(backend="sandbox", state_dir=tmp_path)), metrics)
    caplog.set_level(logging.ERROR, logger="gateway.flow.audit")
    trail.add(_record(1))
    trail.add(_record(2))
    await trail.close()
    assert metrics.registry.get_sample_value("gateway_audit_errors_total", {"sink": "queue"}) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "audit trail, queue sink: the writer is behind: record dropped"
    ] * 2
    assert not (tmp_path / "audit.sqlite").exists()
