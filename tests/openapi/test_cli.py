"""``civicrm-gateway openapi``: the document to stdout or a file, a spec file to document
CiviCRM later without reaching it, and a clear failure when CiviCRM cannot be reached."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from gateway.cli.main import main
from tests.conftest import free_port


@pytest.fixture(autouse=True)
def no_demo(clean_env, monkeypatch):
    monkeypatch.setenv("CIVI_GATEWAY_SANDBOX_DEMO", "0")


def test_writes_the_document_to_stdout_and_a_spec_file(capsys, tmp_path, monkeypatch):
    spec = tmp_path / "spec.json"
    assert main(["openapi", "--save-spec", str(spec)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    validate(doc)
    assert "/v4/Contact/create" in doc["paths"]
    assert "spec file written" in err and spec.is_file()

    # the spec file documents a CiviCRM that cannot be reached
    monkeypatch.setenv("CIVI_GATEWAY_BACKEND", "http")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_API_KEY", "unused-key-123")
    monkeypatch.setenv("CIVI_GATEWAY_OPENAPI_SPEC_FILE", str(spec))
    target = tmp_path / "openapi.json"
    assert main(["openapi", "-o", str(target)]) == 0
    from_spec = json.loads(target.read_text())
    assert from_spec["paths"].keys() == doc["paths"].keys()
    assert from_spec["components"]["schemas"] == doc["components"]["schemas"]


def test_unreachable_civicrm_fails_unless_generic(capsys, monkeypatch):
    monkeypatch.setenv("CIVI_GATEWAY_BACKEND", "http")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CIVI_GATEWAY_HTTP_API_KEY", "unused-key-123")
    assert main(["openapi", "--timeout", "20"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "cannot get CiviCRM's metadata" in err and "--generic" in err
    assert main(["openapi", "--generic"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "/v4/{entity}/{action}" in doc["paths"] and "/v4/Contact/get" not in doc["paths"]


def test_a_missing_spec_file_is_a_settings_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CIVI_GATEWAY_OPENAPI_SPEC_FILE", str(tmp_path / "missing.json"))
    assert main(["openapi"]) == 2
    assert "CIVI_GATEWAY_OPENAPI_SPEC_FILE" in capsys.readouterr().err
