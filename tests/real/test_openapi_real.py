"""The OpenAPI document built from a real CiviCRM's metadata: valid, with the real site's
entities, fields and (per CiviCRM user) actions.

The whole document (~130 entities) is built on the pipe backend for both users (seconds); on
http and cv, whose metadata fetch takes 25 s to a minute for the whole site, a gateway limited
to a few entities (``CIVI_GATEWAY_OPENAPI_ENTITIES``) shows the same path works there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from gateway.flow.clients import ANONYMOUS
from gateway.settings import Settings
from gateway.web.app import create_app
from gateway.web.openapi.document import Skeleton, _apart
from gateway.web.openapi.metadata import Metadata
from gateway.web.openapi.samples import BASE_URL
from gateway.web.openapi.views import narrow
from tests.real.conftest import Gateways, RealGateway


def built_document(gw: RealGateway, wanted: str, limit: float = 120) -> dict[str, Any]:
    """``/openapi.json`` once it holds ``wanted`` (until the metadata is fetched the gateway
    serves the generic routes only, after a 15 s wait)."""
    deadline = time.monotonic() + limit
    while True:
        response = gw.get("/openapi.json", timeout=limit)
        assert response.status_code == 200, response.text[:300]
        document: dict[str, Any] = response.json()
        if wanted in document["paths"] or time.monotonic() > deadline:
            return document
        time.sleep(0.5)


@pytest.mark.parametrize("user", ["admin", "staff"])
def test_whole_document_from_the_real_site(gateways: Gateways, user: str) -> None:
    gw = gateways.get("pipe", user)
    document = built_document(gw, "/v4/SavedSearch/get")
    paths = document["paths"]
    entities = {path.split("/")[2] for path in paths if path.startswith("/v4/")}
    # entities of a real 5.77 site that the sandbox does not emulate
    assert {"SavedSearch", "Afform", "UFGroup", "LocationType", "Mailing"} <= entities
    assert "/v4/Contact/get" in paths and "/v4/batch" in paths
    # CiviCRM's getActions per user: staff may not create contacts, so no operation for it
    assert ("/v4/Contact/create" in paths) == (user == "admin")
    # Each entity's own document (what /docs loads) is valid OpenAPI, with the real fields;
    # validating the whole 3 MB document would take most of a minute.
    for entity, field in (("Contact", "preferred_communication_method"), ("SavedSearch", "api_entity")):
        response = gw.get(f"/openapi/{entity}.json")
        assert response.status_code == 200, response.text[:300]
        validate(response.json())
        assert f'"{field}"' in response.text
        assert '"api_key"' not in response.text  # credential fields never


@pytest.fixture(params=["http", "cv"])
def limited(request: pytest.FixtureRequest, gateways: Gateways) -> Iterator[RealGateway]:
    gw = gateways.start(
        str(request.param), "admin", CIVI_GATEWAY_OPENAPI_ENTITIES='["Contact", "SavedSearch"]'
    )
    yield gw
    gateways.stop(gw)


def test_document_on_http_and_cv(limited: RealGateway) -> None:
    document = built_document(limited, "/v4/SavedSearch/get")
    validate(document)
    entities = {path.split("/")[2] for path in document["paths"] if path.startswith("/v4/")}
    assert {"Contact", "SavedSearch"} <= entities
    assert "/v4/Contact/create" in document["paths"]
    one = limited.get("/openapi/SavedSearch.json")
    assert one.status_code == 200 and "/v4/SavedSearch/get" in one.json()["paths"]


def test_the_document_built_ahead_is_the_one_pass_document(gateways: Gateways, tmp_path: Path) -> None:
    """A gateway building its documents at start-up builds each entity's part as its group of
    metadata lands; what it serves is, byte for byte, the document one pass over the same
    metadata gives (the real site's ~145 entities: no two parts claim one name)."""
    state = tmp_path / "state"
    gw = gateways.start(
        "pipe",
        "admin",
        CIVI_GATEWAY_OPENAPI_PREBUILD="true",
        CIVI_GATEWAY_STATE_DIR=str(state),
        CIVI_GATEWAY_LOG_LEVEL="info",
    )
    try:
        deadline = time.monotonic() + 120
        while "document(s) built in the background" not in gw.process.log.read_text():
            assert time.monotonic() < deadline, gw.process.log.read_text()[-2000:]
            time.sleep(0.2)
        served = gw.get("/openapi.json", headers={"Accept-Encoding": "identity"})
        assert served.status_code == 200
        saved = state / "openapi-metadata.json"
        metadata = Metadata.from_json(json.loads(saved.read_text()), source="pipe backend")
    finally:
        gateways.stop(gw)
    assert len(metadata.entities) > 100
    narrowed = narrow(metadata, ANONYMOUS.policy)  # the tokenless gateway's loopback reader
    base = FastAPI.openapi(create_app(Settings(backend="sandbox", sandbox_demo=0)))
    skeleton = Skeleton(base, auth_required=False, parts_kept=1000)
    parts = [skeleton.part(ent) for ent in sorted(narrowed.entities, key=lambda e: e["name"])]
    assert _apart(parts)
    one_pass = Skeleton(base, auth_required=False).document(narrowed, one_pass=True)
    assert orjson.dumps(skeleton.document(narrowed)) == orjson.dumps(one_pass)
    assert skeleton.document_json(narrowed)[1] == orjson.dumps(one_pass)
    # The served document's entities, as the one-pass build describes them (its own routes
    # are those of the served gateway's settings, the components' too: compared apart).
    mine = orjson.loads(orjson.dumps(one_pass).replace(BASE_URL.encode(), gw.url.encode()))
    document = served.json()
    entity_paths = [p for p in mine["paths"] if p.startswith("/v4/") and "{" not in p and p != "/v4/batch"]
    assert [p for p in document["paths"] if p in set(entity_paths)] == entity_paths
    assert all(document["paths"][p] == mine["paths"][p] for p in entity_paths)
    entity_schemas = [s for s in mine["components"]["schemas"] if s not in skeleton.schema_names]
    assert all(
        document["components"]["schemas"][s] == mine["components"]["schemas"][s] for s in entity_schemas
    )
    assert document["tags"] == mine["tags"]
