"""The MCP face (issue 31) on the real CiviCRM 5.77: the SDK's client over real Streamable HTTP
to a uvicorn gateway process whose HTTP backend acts as CiviCRM's administrator (the worst case:
that user can read every contact's ``api_key`` and ``hash``).

The red team's checks through MCP: a client with the smallest policy sees only its entity and
fields, gets no write tool, reaches no credential and no field outside its list, and every
refusal is the problem the same REST call gets. Reads and keyed writes work, and are audited
with the face recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import assert_problem
from tests.mcp.session import clients_toml, mcp_session, ok, refused, tools_of
from tests.real.conftest import Gateways, RealGateway
from tests.real.kit import Kit

pytestmark = pytest.mark.slow

TOKENS = {
    "broad": "cgw_mcpreal-broad-5a4b3c2d1e0f9e8d7c6b",
    "narrow": "cgw_mcpreal-narrow-0a9b8c7d6e5f4a3b2c1d",
    "reader": "cgw_mcpreal-reader-6f1d2c3b4a59687706f1",
}
POLICIES = {
    # everything but credentials (not a trusted client)
    "broad": 'allow = ["*"]\naudit = "all"',
    "narrow": 'allow = ["v4:Contact.get"]\nread_only = true\nfields = {Contact = ["id", "display_name"]}',
    "reader": 'allow = ["v4:Contact.get", "v4:Email.get"]\nread_only = true',
}
READ_TOOLS = {"list_entities", "describe_entity", "get_records", "count_records"}
WRITE_TOOLS = {"create_record", "update_records", "delete_records"}
SECRETS = ("api_key", "hash")


@pytest.fixture(scope="module")
def real(gateways: Gateways, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealGateway]:
    clients = tmp_path_factory.mktemp("mcp-real") / "clients.toml"
    clients.write_text(clients_toml({n: (TOKENS[n], p) for n, p in POLICIES.items()}))
    gateway = gateways.start(
        "http",
        "admin",
        CIVI_GATEWAY_CLIENTS_FILE=str(clients),
        CIVI_GATEWAY_OPENAPI_ENTITIES='["Contact", "Email", "Activity", "Individual"]',
    )
    try:
        yield gateway
    finally:
        Gateways.stop(gateway)


async def rest(gateway: RealGateway, client: str, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            gateway.url + path, json=body, headers={"Authorization": f"Bearer {TOKENS[client]}"}
        )


async def test_tool_lists_and_views_follow_the_policy(real: RealGateway) -> None:
    async with mcp_session(real.url, TOKENS["broad"]) as session:
        assert set(await tools_of(session)) == READ_TOOLS | WRITE_TOOLS
        described = await ok(session, "describe_entity", {"entity": "Contact"})
        fields = {f["name"] for f in described["fields"]}
        assert {"display_name", "contact_type"} <= fields and not fields & set(SECRETS)
    async with mcp_session(real.url, TOKENS["narrow"]) as session:
        tools = await tools_of(session)
        assert set(tools) == READ_TOOLS
        # Individual is a Contact: the rules written for Contact cover it (as on REST)
        assert tools["get_records"].inputSchema["properties"]["entity"]["enum"] == ["Contact", "Individual"]
        entities = await ok(session, "list_entities", {})
        assert [e["name"] for e in entities["entities"]] == ["Contact", "Individual"]
        described = await ok(session, "describe_entity", {"entity": "Contact"})
        assert {f["name"] for f in described["fields"]} == {"id", "display_name"}
        await refused(session, "describe_entity", {"entity": "Email"}, "gateway-policy-denied")
        await refused(session, "describe_entity", {"entity": "Activity"}, "gateway-policy-denied")
    async with mcp_session(real.url, TOKENS["reader"]) as session:
        assert set(await tools_of(session)) == READ_TOOLS
        entities = await ok(session, "list_entities", {})
        assert {e["name"] for e in entities["entities"]} == {"Contact", "Email", "Individual"}


async def test_reads_match_rest(real: RealGateway) -> None:
    query = {
        "select": ["id", "display_name"],
        "where": [["contact_type", "=", "Individual"]],
        "orderBy": {"id": "ASC"},
    }
    async with mcp_session(real.url, TOKENS["reader"]) as session:
        got = await ok(session, "get_records", {"entity": "Contact", **query, "limit": 10, "offset": 2})
        counted = await ok(session, "count_records", {"entity": "Contact", "where": query["where"]})
    expected = await rest(real, "reader", "/v4/Contact/get", {**query, "limit": 10, "offset": 2})
    assert expected.status_code == 200 and got["records"] == expected.json() and got["count"] == 10
    total = await rest(real, "reader", "/v4/Contact/get", {"select": ["row_count"], "where": query["where"]})
    assert counted["count"] == int(total.headers["X-Total-Count"]) > 10


# The red team through MCP: (client, get_records arguments, problem type)
REFUSALS = [
    ("narrow", {"entity": "Contact", "select": ["id", "api_key"]}, "gateway-policy-denied"),
    (
        "narrow",
        {"entity": "Contact", "select": ["id"], "where": [["hash", "IS NOT NULL"]]},
        "gateway-policy-denied",
    ),
    ("narrow", {"entity": "Contact", "select": ["id", "sort_name"]}, "gateway-policy-denied"),
    ("narrow", {"entity": "Contact", "select": ["id", "email_primary.email"]}, "gateway-policy-denied"),
    (
        "narrow",
        {"entity": "Contact", "select": ["id"], "orderBy": {"birth_date": "ASC"}},
        "gateway-policy-denied",
    ),
    ("narrow", {"entity": "Email", "select": ["id", "email"]}, "gateway-policy-denied"),
    (
        "narrow",
        {"entity": "Contact", "select": ["id", "GROUP_CONCAT(sort_name) AS names"]},
        "gateway-policy-denied",
    ),
    ("reader", {"entity": "Contact", "select": ["id", "api_key"]}, "gateway-policy-denied"),
    ("reader", {"entity": "Email", "select": ["id", "contact_id.hash"]}, "gateway-policy-denied"),
    ("broad", {"entity": "Contact", "select": ["id", "api_key"]}, "gateway-policy-denied"),
    ("broad", {"entity": "Contact", "where": [["api_key", "LIKE", "a%"]]}, "gateway-policy-denied"),
]


@pytest.mark.parametrize(("client", "arguments", "slug"), REFUSALS)
async def test_red_team_refusals_equal_rest(
    real: RealGateway, client: str, arguments: dict[str, Any], slug: str
) -> None:
    async with mcp_session(real.url, TOKENS[client]) as session:
        problem = await refused(session, "get_records", arguments, slug)
    params = {k: v for k, v in arguments.items() if k != "entity"}
    response = await rest(real, client, f"/v4/{arguments['entity']}/get", {**params, "limit": 25})
    expected = assert_problem(response, problem["status"], slug)
    assert (problem["title"], problem["detail"]) == (expected["title"], expected["detail"])


async def test_no_credential_in_any_answer(real: RealGateway, kit: Kit) -> None:
    async with mcp_session(real.url, TOKENS["broad"]) as session:
        result = await session.call_tool(
            "get_records", {"entity": "Contact", "select": ["*"], "where": [["id", "=", 2]]}
        )
    assert not result.isError, result.content
    text = str(result.structuredContent) + "".join(getattr(c, "text", "") for c in result.content)
    assert result.structuredContent and result.structuredContent["count"] == 1
    assert not any(f"'{name}'" in text or f'"{name}"' in text for name in SECRETS)
    # the admin's key is the gateway's own credential: in no answer either
    assert kit.key("admin") not in text


async def test_no_write_by_a_read_only_client(real: RealGateway, marker: str) -> None:
    values = {"contact_type": "Individual", "first_name": "Mcp", "last_name": "ReadOnly", "source": marker}
    for client in ("narrow", "reader"):
        async with mcp_session(real.url, TOKENS[client]) as session:
            for name, arguments in (
                ("create_record", {"entity": "Contact", "values": values}),
                ("create_record", {"entity": "Contact", "values": values, "dry_run": True}),
                (
                    "update_records",
                    {"entity": "Contact", "where": [["id", "=", 2]], "values": {"first_name": "X"}},
                ),
                ("delete_records", {"entity": "Contact", "where": [["id", "=", 2]]}),
            ):
                await refused(session, name, arguments, "gateway-policy-denied")
    async with mcp_session(real.url, TOKENS["broad"]) as session:
        found = await ok(session, "count_records", {"entity": "Contact", "where": [["source", "=", marker]]})
    assert found["count"] == 0


async def test_keyed_writes_and_their_audit(real: RealGateway, marker: str) -> None:
    values = {"contact_type": "Individual", "first_name": "Mcp", "last_name": "Writer", "source": marker}
    where = [["source", "=", marker]]
    async with mcp_session(real.url, TOKENS["broad"]) as session:
        checked = await ok(session, "create_record", {"entity": "Contact", "values": values, "dry_run": True})
        assert checked["dry_run"] is True
        assert (await ok(session, "count_records", {"entity": "Contact", "where": where}))["count"] == 0
        key = f"{marker}-create"
        first = await ok(
            session, "create_record", {"entity": "Contact", "values": values, "idempotency_key": key}
        )
        again = await ok(
            session, "create_record", {"entity": "Contact", "values": values, "idempotency_key": key}
        )
        assert (first["replayed"], again["replayed"]) == (False, True)
        assert first["records"][0]["id"] == again["records"][0]["id"]
        updated = await ok(
            session, "update_records", {"entity": "Contact", "where": where, "values": {"first_name": "Ada"}}
        )
        assert updated["count"] == 1
        got = await ok(
            session, "get_records", {"entity": "Contact", "select": ["first_name"], "where": where}
        )
        assert got["records"] == [{"id": first["records"][0]["id"], "first_name": "Ada"}] or got[
            "records"
        ] == [{"first_name": "Ada"}]
        deleted = await ok(session, "delete_records", {"entity": "Contact", "where": where})
        assert deleted["count"] == 1
    async with httpx.AsyncClient(timeout=60) as http:
        trail = await http.get(
            real.url + "/audit",
            params={"client": "broad"},
            headers={"Authorization": f"Bearer {TOKENS['broad']}"},
        )
    assert trail.status_code == 200, trail.text
    mine = [
        r for r in trail.json() if r["entity"] == "Contact" and r["action"] in ("create", "update", "delete")
    ]
    assert mine and all(r["face"] == "mcp" for r in mine)
    assert {(r["action"], r["replayed"]) for r in mine} >= {
        ("create", False),
        ("create", True),
        ("update", False),
        ("delete", False),
    }


async def test_huge_input_is_refused_and_the_gateway_stays_up(real: RealGateway) -> None:
    async with mcp_session(real.url, TOKENS["narrow"]) as session:
        await refused(
            session,
            "get_records",
            {"entity": "Contact", "where": [["id", "=", i] for i in range(5000)]},
            "invalid-request",
        )
        await refused(session, "get_records", {"entity": "Contact", "limit": 100_000}, "invalid-request")
        assert (await ok(session, "count_records", {"entity": "Contact"}))["count"] > 0
