"""The answer check on the real CiviCRM 5.77 (tests/real/kit.py), the gateway as its admin user
(issue 25, item 4): everyday reads answer 200 (the check refuses nothing legitimate), and the
chain-index trick that keyed a result by every contact's API key is not passed on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.flow.clients import hash_token
from tests.conftest import gateway_client, http_settings
from tests.real.kit import Kit, require_kit

READER = "cgw_answer-reader-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {READER}"}
ALL = "cgw_answer-all-fedcba9876543210"  # every entity and field but credentials
CONTACT = 4  # a seeded contact with an e-mail, a phone and an address (Alice Smith)


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Kit]]:
    kit = require_kit()
    clients = tmp_path / "clients.toml"
    clients.write_text(f"""
[clients.reader]
token_sha256 = "{hash_token(READER)}"
allow = ["v4:Contact.get", "v4:Email.get", "v3:Contact.get", "v3:Contact.getsingle",
         "v3:Contact.getcount", "v3:Email.get"]
read_only = true

[clients.all]
token_sha256 = "{hash_token(ALL)}"
""")
    settings = http_settings(kit.url, http_api_key=kit.admin_key, clients_file=clients, http_timeout=30)
    async with gateway_client(settings) as gw:
        yield gw, kit


EMAILS = {"select": ["email"], "where": [["contact_id", "=", "$id"]]}
V4_READS: list[dict[str, Any]] = [
    {"select": ["display_name"], "limit": 3},
    {"limit": 2},  # every field (the gateway names them, less the credentials)
    {"select": ["*"], "limit": 2},
    {
        "select": [
            "display_name",
            "contact_type:label",
            "email_primary.email",
            "UPPER(first_name)",
            "CONCAT(first_name, ' ', last_name) AS full",
            "YEAR(birth_date)",
            "(id + 1) AS next_id",
            "ROUND(id, 1)",
        ],
        "where": [["id", "=", CONTACT]],
    },
    {"select": ["contact_type", "COUNT(id) AS n"], "groupBy": ["contact_type"]},
    {"select": ["COUNT(*)"]},
    {
        "select": ["id", "e.email", "e.is_primary"],
        "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
        "where": [["id", "=", CONTACT]],
    },
    {"select": ["id", "e.*"], "join": [["Email AS e", "INNER", ["e.contact_id", "=", "id"]]], "limit": 2},
    {"select": ["display_name"], "where": [["id", "=", CONTACT]], "chain": {"em": ["Email", "get", EMAILS]}},
    {
        "select": ["display_name"],
        "where": [["id", "=", CONTACT]],
        "chain": {"em": ["Email", "get", EMAILS, 0]},
    },
    {
        "select": ["display_name"],
        "where": [["id", "=", CONTACT]],
        "chain": {"em": ["Email", "get", EMAILS, "email"], "ids": ["Email", "get", {"select": ["id"]}, "id"]},
    },
]


@pytest.mark.parametrize("params", V4_READS, ids=lambda p: ",".join(p)[:40])
async def test_everyday_v4_reads_answer_200(
    reader: tuple[httpx.AsyncClient, Kit], params: dict[str, Any]
) -> None:
    gw, kit = reader
    answer = await gw.post("/v4/Contact/get", json=params, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() and kit.admin_key not in answer.text


V3_READS: list[tuple[str, dict[str, Any]]] = [
    ("get", {"return": ["display_name"], "options": {"limit": 3}}),
    (
        "get",
        {"id": CONTACT, "return": ["display_name", "gender_id", "email", "prefix_id", "preferred_language"]},
    ),
    ("get", {"id": CONTACT, "return": ["display_name"], "api.Email.get": {"return": ["email"]}}),
    ("getsingle", {"id": CONTACT, "return": ["display_name", "email"]}),
    ("getcount", {}),
]


@pytest.mark.parametrize(("action", "params"), V3_READS, ids=lambda p: str(p)[:40])
async def test_everyday_v3_reads_answer_200(
    reader: tuple[httpx.AsyncClient, Kit], action: str, params: dict[str, Any]
) -> None:
    gw, kit = reader
    answer = await gw.post(f"/v3/Contact/{action}", json=params, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert kit.admin_key not in answer.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v3/Contact/get", {"options": {"limit": 3}}),
        (
            "/v3/Contact/get",
            {"id": CONTACT, "return": ["display_name", "phone", "country", "state_province"]},
        ),
        ("/v4/Contact/get", {"limit": 3}),
        ("/v4/Email/get", {"limit": 3}),
        ("/v4/Phone/get", {"select": ["*", "contact_id.display_name"], "limit": 3}),
        (
            "/v4/Address/get",
            {"limit": 3, "chain": {"c": ["Country", "get", {"where": [["id", "=", "$country_id"]]}, 0]}},
        ),
    ],
)
async def test_everyday_reads_of_an_unrestricted_client_answer_200(
    reader: tuple[httpx.AsyncClient, Kit], path: str, params: dict[str, Any]
) -> None:
    gw, kit = reader
    answer = await gw.post(path, json=params, headers={"Authorization": f"Bearer {ALL}"})
    assert answer.status_code == 200, answer.text
    assert kit.admin_key not in answer.text


@pytest.mark.parametrize("index", ["api_key", "hash"])
async def test_a_result_keyed_by_credentials_is_not_passed_on(
    reader: tuple[httpx.AsyncClient, Kit], index: str
) -> None:
    """Cause 1 of the issue: the chain index makes every value of the field an object key."""
    gw, kit = reader
    params = {
        "select": ["id"],
        "where": [["id", "=", int(kit.ids["ADMIN_CONTACT_ID"])]],
        "chain": {"c": ["Contact", "get", {"select": ["id"]}, index]},
    }
    answer = await gw.post("/v4/Contact/get", json=params, headers=AUTH)
    assert answer.status_code in (400, 403, 502), answer.text  # refused before or after CiviCRM
    assert kit.admin_key not in answer.text


@pytest.mark.parametrize(
    ("params", "asked"),
    [
        ({"return": ["job_title"], "last_name": {"LIKE": "S%"}}, {"id", "job_title"}),
        ({"return": ["display_name"], "contact_type": "Individual"}, {"id", "display_name"}),
        ({"return": ["last_name"], "last_name": "Smith"}, {"id", "last_name"}),
    ],
)
async def test_an_apiv3_contact_get_answers_what_it_returns_not_what_it_filtered_on(
    reader: tuple[httpx.AsyncClient, Kit], params: dict[str, Any], asked: set[str]
) -> None:
    """CiviCRM 5.77's APIv3 Contact query answers the fields a call filters on with the ones it
    returns (found by the SQL oracle, seed 263283876); the gateway passes on what was asked."""
    gw, _ = reader
    answer = await gw.post("/v3/Contact/get", json=params, headers=AUTH)
    assert answer.status_code == 200, answer.text
    records = answer.json()
    assert records, "the seeded site has contacts matching the filter"
    for record in records:
        assert set(record) - {"contact_is_deleted", "contact_id"} <= asked, record
