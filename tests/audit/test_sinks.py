"""The sinks: JSON lines rotated by size, stdout of a real process, SQLite across a restart,
and a failing sink that costs the request nothing but an error line and a metric."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.audit.helpers import WRITER, audited_gateway, auth, expected, stable
from tests.conftest import free_port


async def test_file_sink_rotates_by_size_and_keeps_the_newest(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "audit.jsonl"
    async with audited_gateway(
        tmp_path,
        audit_sinks=["file"],
        audit_file=log_file,
        audit_file_max_bytes=1024,
        audit_file_backups=2,
        audit_values=True,
    ) as gw:
        for i in range(30):
            answer = await gw.post(
                "/v4/Contact/create",
                headers=auth(WRITER),
                json={"values": {"contact_type": "Individual", "first_name": f"N{i:02d}"}},
            )
            assert answer.status_code == 200
    # the app's shutdown wrote what was queued
    files = sorted(log_file.parent.iterdir())
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(f.stat().st_size <= 1024 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    kept = [orjson.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    names = [r["values"][0]["first_name"] for r in kept]
    # the newest records, in order, with nothing lost between the files
    assert names == [f"N{i:02d}" for i in range(30 - len(names), 30)]
    assert len(names) >= 6
    assert kept[-1]["action"] == "create" and kept[-1]["client"] == "writer"
    assert not (tmp_path / "state" / "audit.sqlite").exists()  # only the sinks named


async def test_a_failing_sink_logs_counts_and_never_fails_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    caplog.set_level(logging.ERROR, logger="gateway.flow.audit")
    async with audited_gateway(
        tmp_path, audit_sinks=["file", "sqlite"], audit_file=blocker / "audit.jsonl"
    ) as gw:
        answer = await gw.post(
            "/v4/Contact/create",
            headers=auth(WRITER),
            json={"values": {"contact_type": "Individual", "first_name": "Ok"}},
        )
        assert answer.status_code == 200
        listing = await gw.get("/audit", headers=auth(WRITER))
        metrics = (await gw.get("/metrics")).text
    # the other sink still has the record
    assert [stable(r, answer) for r in listing.json()] == [
        expected(action="create", ids=[answer.json()[0]["id"]], fields=["contact_type", "first_name"])
    ]
    assert 'gateway_audit_errors_total{sink="file"} 1.0' in metrics
    errors = [r.getMessage() for r in caplog.records if r.name == "gateway.flow.audit"]
    assert len(errors) == 1 and errors[0].startswith(
        "audit trail, file sink: 1 record(s) not written: FileExistsError"
    )


class _Served:
    """``civicrm-gateway serve`` with its standard output and standard error kept apart."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout = (workdir / f"stdout-{self.port}").open("wb")
        self.stderr = (workdir / f"stderr-{self.port}").open("wb")
        full = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
        full.update(
            {
                "CIVI_GATEWAY_PORT": str(self.port),
                "CIVI_GATEWAY_SECRETS_DIR": str(workdir / "none"),
                "CIVI_GATEWAY_OPENAPI_PREBUILD": "false",
                "CIVI_GATEWAY_SANDBOX_DEMO": "0",
                **env,
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=full,
            cwd=workdir,
            stdout=self.stdout,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(Path(self.stderr.name).read_text())
            time.sleep(0.05)

    def stop(self) -> tuple[str, str]:
        """SIGTERM (a graceful shutdown), then what it wrote to stdout and to stderr."""
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.stdout.close()
        self.stderr.close()
        return Path(self.stdout.name).read_text(), Path(self.stderr.name).read_text()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[_Served]]:
    started: list[_Served] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.mark.slow
def test_real_process_stdout_lines_and_sqlite_across_a_restart(tmp_path: Path, served: list[_Served]) -> None:
    env = {
        "CIVI_GATEWAY_STATE_DIR": str(tmp_path / "state"),
        "CIVI_GATEWAY_SANDBOX_DB": str(tmp_path / "state" / "sandbox.sqlite"),
        "CIVI_GATEWAY_AUDIT_SINKS": '["sqlite", "stdout"]',
    }
    first = _Served(tmp_path, env)
    served.append(first)
    created = httpx.post(
        first.url + "/v4/Contact/create",
        timeout=30,
        json={"values": {"contact_type": "Individual", "first_name": "Kept"}},
    )
    assert created.status_code == 200, created.text
    out, err = first.stop()
    lines = out.splitlines()
    assert len(lines) == 1, out
    record = orjson.loads(lines[0])
    assert stable(record, created) == expected(
        client="anonymous",
        ids=[created.json()[0]["id"]],
        action="create",
        fields=["contact_type", "first_name"],
    )
    assert "civicrm-gateway" in err and "Kept" not in err  # logs on stderr, records on stdout

    second = _Served(tmp_path, env)
    served.append(second)
    again = httpx.post(
        second.url + "/v3/Contact/create",
        timeout=30,
        json={"contact_type": "Individual", "first_name": "Later"},
    )
    listing = httpx.get(second.url + "/audit", timeout=30)
    out, _ = second.stop()
    assert listing.status_code == 200, listing.text
    assert [(r["version"], r["action"], r["ids"]) for r in listing.json()] == [
        (3, "create", [int(again.json()[0]["id"])]),
        (4, "create", [created.json()[0]["id"]]),
    ]
    assert listing.json()[1] == {"seq": 1, **record}
    assert len(out.splitlines()) == 1
