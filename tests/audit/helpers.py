"""Shared by the audit tests: three clients with different audit policies, a gateway on the
embedded sandbox with them, and the volatile parts of a record checked apart."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from gateway.flow.clients import hash_token
from gateway.settings import Settings
from tests.conftest import gateway_client

WRITER = "cgw_audit-writer-0123456789abcdef"
ADMIN = "cgw_audit-admin-fedcba9876543210"
READER = "cgw_audit-reader-aaaabbbbccccdddd"
OTHER = "cgw_audit-other-eeeeffff00001111"
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_clients(path: Path) -> Path:
    """writer: may write, reads its own records; other: the same; admin: reads every client's;
    reader: read-only, no audit access (the default)."""
    path.write_text(f"""
[clients.writer]
token_sha256 = "{hash_token(WRITER)}"
audit = "own"

[clients.other]
token_sha256 = "{hash_token(OTHER)}"
audit = "own"

[clients.admin]
token_sha256 = "{hash_token(ADMIN)}"
audit = "all"

[clients.reader]
token_sha256 = "{hash_token(READER)}"
allow = ["v4:Contact.get*", "v4:*.getFields"]
read_only = true
""")
    return path


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "backend": "sandbox",
        "sandbox_demo": 0,
        "clients_file": write_clients(tmp_path / "clients.toml"),
        "state_dir": tmp_path / "state",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def audited_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(settings(tmp_path, **overrides)) as client:
        yield client


async def trail(gw: httpx.AsyncClient, token: str = ADMIN, **params: Any) -> list[dict]:
    """The records as GET /audit answers them (newest first)."""
    response = await gw.get("/audit", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def stable(record: dict[str, Any], response: httpx.Response | None = None) -> dict[str, Any]:
    """The record less its time, duration and sequence number, after checking them (and the
    request id against the answer's X-Request-ID)."""
    assert _TIME.fullmatch(record["time"]), record["time"]
    assert isinstance(record["duration_ms"], float | int) and record["duration_ms"] >= 0
    if response is not None:
        assert record["request_id"] == response.headers["x-request-id"]
    return {k: v for k, v in record.items() if k not in ("time", "duration_ms", "seq", "request_id")}


def expected(**fields: Any) -> dict[str, Any]:
    """A record's stable part: the defaults of a call by the writer client over ASGI."""
    base: dict[str, Any] = {
        "client": "writer",
        "source": "127.0.0.1",
        "version": 4,
        "entity": "Contact",
        "batch": None,
        "face": "rest",
        "ids": [],
        "fields": [],
        "values": None,
        "status": 200,
        "problem": None,
        "idempotency_key": None,
        "replayed": False,
    }
    base.update(fields)
    return base
