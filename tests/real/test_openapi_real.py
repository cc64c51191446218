"""The OpenAPI document built from a real CiviCRM's metadata: valid, with the real site's
entities, fields and (per CiviCRM user) actions.

The whole document (~130 entities) is built on the pipe backend for both users (seconds); on
http and cv, whose metadata fetch takes 25 s to a minute for the whole site, a gateway limited
to a few entities (``CIVI_GATEWAY_OPENAPI_ENTITIES``) shows the same path works there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

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
