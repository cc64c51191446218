"""The call flow's two bugs of issue 27, on the real CiviCRM 5.77 (tests/real/kit.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.core.call import parse
from tests.conftest import gateway_client, http_settings
from tests.real.kit import require_kit


async def test_a_batch_with_legacy_auth_runs_as_the_gateways_user() -> None:
    """``CIVI_GATEWAY_HTTP_AUTH=legacy``: a multi-call batch carries ``key`` and ``api_key``
    like a single call. Without them CiviCRM runs it as an anonymous visitor and answers an
    empty list, not an error."""
    kit = require_kit()
    admin = int(kit.ids["ADMIN_CONTACT_ID"])
    settings = http_settings(
        kit.url, http_api_key=kit.admin_key, http_auth="legacy", http_site_key=kit.site_key
    )
    read = {"select": ["id"], "where": [["id", "=", admin]]}
    async with gateway_client(settings) as gw:
        single = await gw.post("/v4/Contact/get", json=read)
        batch = await gw.post(
            "/v4/batch", json={"one": ["Contact", "get", read], "two": ["Contact", "get", read]}
        )
    assert single.status_code == 200 and single.json() == [{"id": admin}]
    assert batch.status_code == 200, batch.text
    assert batch.json() == {
        "one": {"status": 200, "values": [{"id": admin}]},
        "two": {"status": 200, "values": [{"id": admin}]},
    }


async def test_both_spellings_of_a_v3_chain_are_one_call() -> None:
    """CiviCRM reads ``api.Email.get`` and ``api_Email_get`` alike (a chained call); so does
    every layer of the gateway, which asks the parsed call: both answer the same on the real
    site, and neither is taken for plain metadata."""
    kit = require_kit()
    admin = int(kit.ids["ADMIN_CONTACT_ID"])
    answers = []
    settings = http_settings(kit.url, http_api_key=kit.admin_key)
    async with gateway_client(settings) as gw:
        for key in ("api.Email.get", "api_Email_get"):
            params = {"id": admin, "return": ["display_name"], key: {"return": ["email"]}}
            response = await gw.post("/v3/Contact/get", json=params)
            assert response.status_code == 200, response.text
            [record] = response.json()
            answers.append(record[key]["values"])
            assert not parse(3, "Contact", "getfields", {key: {}}).is_metadata
    assert answers[0] == answers[1] and answers[0], answers


EMPTY_REQUIRED = [
    ("Address", "replace", {"where": [], "records": []}),
    ("Address", "replace", {"where": [], "records": [{"street_address": "x"}]}),
    ("Address", "delete", {"where": []}),
    ("Contact", "save", {"records": []}),
    ("Contact", "update", {"values": {"first_name": "A"}, "where": []}),
]


@pytest.mark.parametrize(("entity", "action", "params"), EMPTY_REQUIRED, ids=lambda v: str(v)[:30])
async def test_an_empty_required_param_is_refused_in_civicrms_words(
    entity: str, action: str, params: dict[str, Any]
) -> None:
    """CiviCRM checks required params with PHP's empty(): an empty ``where`` or ``records`` is
    missing. The gateway says so itself, in CiviCRM's words (a least-privileged user would
    otherwise get CiviCRM's masked error, a 502)."""
    kit = require_kit()
    async with httpx.AsyncClient(base_url=kit.url, timeout=30) as site:
        raw = await site.post(
            f"/civicrm/ajax/api4/{entity}/{action}",
            data={"params": json.dumps(params)},
            headers={"X-Civi-Auth": f"Bearer {kit.admin_key}", "X-Requested-With": "XMLHttpRequest"},
        )
    settings = http_settings(kit.url, http_api_key=kit.admin_key)
    async with gateway_client(settings) as gw:
        answer = await gw.post(f"/v4/{entity}/{action}", json=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == raw.json()["error_message"]
