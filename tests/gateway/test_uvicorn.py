"""The gateway as users run it: ``civicrm-gateway serve`` in a real uvicorn process on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_KEY, SITE_KEY

pytestmark = pytest.mark.slow


def test_sandbox_backend_end_to_end(gateway_process):
    gw = gateway_process({"CIVI_GATEWAY_SANDBOX_DEMO": "20"})
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        created = client.post(
            "/v4/Contact/create",
            json={"contact_type": "Individual", "first_name": "Uvi", "last_name": "Corn"},
        )
        assert created.status_code == 200, created.text
        cid = created.json()[0]["id"]
        got = client.get("/v4/Contact/get", params={"id": str(cid), "select": "display_name"})
        assert got.json() == [{"id": cid, "display_name": "Uvi Corn"}]
        assert got.headers["x-request-id"]
        assert client.get("/v3/Contact/getcount").json() >= 22
        missing = client.post("/v4/Nope/get", json={})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert (
            client.post(
                "/v4/Contact/get", content=b"[", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        echoed = client.get("/healthz", headers={"X-Request-ID": "trace-123"})
        assert echoed.headers["x-request-id"] == "trace-123"
    log = gw.stop()
    assert "Traceback" not in log


def test_http_backend_end_to_end(gateway_process, upstream):
    gw = gateway_process(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": upstream.url,
            "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
            "CIVI_GATEWAY_LOG_LEVEL": "debug",
        }
    )
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/readyz").json()["backend"] == "http"
        response = client.post(
            "/v4/Contact/get", json={"select": ["id", "display_name"], "where": [["id", "=", 2]]}
        )
        assert response.json() == [{"id": 2, "display_name": "Standalone Admin"}]
        assert client.post("/v4/Contact/get", json={"where": [["bad", "=", 1]]}).status_code == 400
    log = gw.stop()
    assert ADMIN_KEY not in log
    assert "/v4/Contact/get" in log  # access log lines were written


def test_invalid_settings_fail_at_start(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    env.update({"CIVI_GATEWAY_BACKEND": "http", "CIVI_GATEWAY_SECRETS_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "CIVI_GATEWAY_HTTP_URL" in result.stderr


def test_check_command(upstream, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVI_GATEWAY_")}
    env.update(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": upstream.url,
            "CIVI_GATEWAY_HTTP_API_KEY": ADMIN_KEY,
            "CIVI_GATEWAY_SECRETS_DIR": str(tmp_path),
        }
    )
    ok = subprocess.run(
        [sys.executable, "-m", "gateway", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # An administrator can read contacts' keys: warned about (least privilege).
    assert ok.stdout.startswith("OK") and "WARN" in ok.stdout and "API keys" in ok.stdout
    assert ADMIN_KEY not in ok.stdout + ok.stderr
    # The staff user (no admin rights) is not shown keys: no warning.
    staff = upstream.sandbox.ensure_staff()
    upstream.config.api_keys[staff["api_key"]] = staff["contact_id"]
    least = subprocess.run(
        [sys.executable, "-m", "gateway", "check"],
        env={**env, "CIVI_GATEWAY_HTTP_API_KEY": staff["api_key"], "CIVI_GATEWAY_HTTP_SITE_KEY": SITE_KEY},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert least.returncode == 0, least.stdout + least.stderr
    assert least.stdout.startswith("OK") and "WARN" not in least.stdout
    env["CIVI_GATEWAY_HTTP_API_KEY"] = "wrong-key-000"
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and bad.stdout.startswith("FAIL")
    assert "wrong-key-000" not in bad.stdout + bad.stderr
