"""Logs as ``civicrm-gateway serve`` writes them: one access line per request, with method,
path, status, duration, client name and request id, in the text and JSON formats alike."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from gateway.flow.clients import hash_token, new_token

pytestmark = pytest.mark.slow


def _requests(url: str, token: str) -> None:
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        ok = client.post("/v4/Contact/get", json={"limit": 1}, headers={"X-Request-ID": "trace-ok-1"})
        assert ok.status_code == 200
        bad = client.post("/v4/Contact/delete", json={}, headers={"X-Request-ID": "trace-bad-2"})
        assert bad.status_code == 400


def _env(log_format: str) -> tuple[dict[str, str], str]:
    token = new_token()
    return (
        {
            "CIVI_GATEWAY_LOG_FORMAT": log_format,
            "CIVI_GATEWAY_SANDBOX_DEMO": "3",
            "CIVI_GATEWAY_CLIENT_TOKENS": f"reporting:sha256:{hash_token(token)}",
        },
        token,
    )


def test_text_log_one_access_line_per_request_with_its_facts(gateway_process):
    env, token = _env("text")
    gw = gateway_process(env)
    _requests(gw.url, token)
    log = gw.stop()
    lines = log.splitlines()
    access = [line for line in lines if "/v4/Contact/" in line]
    assert len(access) == 2, log  # no second line from uvicorn.access
    assert not any("uvicorn.access" in line for line in lines)
    ok, bad = access
    assert re.search(
        r" INFO gateway\.access: POST /v4/Contact/get 200 duration_ms=\d+(\.\d+)? "
        r"client=reporting request_id=trace-ok-1 route=/v4/\{entity\}/\{action\}$",
        ok,
    )
    assert re.search(
        r"gateway\.access: POST /v4/Contact/delete 400 duration_ms=\S+ "
        r"client=reporting request_id=trace-bad-2 ",
        bad,
    )
    assert token not in log and "\x1b" not in log


def test_json_log_every_line_an_object_without_colours(gateway_process):
    env, token = _env("json")
    gw = gateway_process(env)
    _requests(gw.url, token)
    log = gw.stop()
    entries = [orjson.loads(line) for line in log.splitlines() if line.strip()]
    assert not any("color_message" in entry for entry in entries)
    assert "\x1b" not in log and "\\u001b" not in log
    assert not any(entry["logger"] == "uvicorn.access" for entry in entries)
    access = [e for e in entries if e["logger"] == "gateway.access" and e["path"].startswith("/v4/")]
    assert len(access) == 2
    ok = access[0]
    assert {
        k: ok[k] for k in ("level", "msg", "method", "path", "status", "client", "request_id", "route")
    } == {
        "level": "info",
        "msg": "POST /v4/Contact/get 200",
        "method": "POST",
        "path": "/v4/Contact/get",
        "status": 200,
        "client": "reporting",
        "request_id": "trace-ok-1",
        "route": "/v4/{entity}/{action}",
    }
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] > 0
    assert access[1]["status"] == 400 and access[1]["request_id"] == "trace-bad-2"
    # Start-up says where the docs are.
    port = gw.url.rsplit(":", 1)[1]
    assert any(
        e["msg"].endswith(f"API docs at http://127.0.0.1:{port}/docs, index at http://127.0.0.1:{port}/")
        for e in entries
    )


def test_records_logged_during_a_request_carry_its_id():
    """Whatever logger writes while a request runs (the backend, a library), its id is there."""
    import logging

    from gateway.telemetry.logs import RequestContextFilter, TextFormatter, request_id_var

    record = logging.LogRecord(
        "gateway.backend", logging.WARNING, __file__, 1, "retrying %s", ("Contact.get",), None
    )
    token = request_id_var.set("trace-77")
    try:
        assert RequestContextFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = TextFormatter().format(record)
    assert line.endswith(" WARNING gateway.backend: retrying Contact.get request_id=trace-77")
    outside = logging.LogRecord("gateway", logging.INFO, __file__, 1, "ready", None, None)
    RequestContextFilter().filter(outside)
    assert TextFormatter().format(outside).endswith(" INFO gateway: ready")
