"""The MCP face (issue 31) on the sandbox: the SDK's own client over real Streamable HTTP to a
real uvicorn gateway process. Tool lists per policy, schemas and annotations, refusals equal to
the REST routes' problems, dry_run, idempotency_key, the audit trail's face, limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import McpError

from tests.conftest import GatewayProcess, assert_problem
from tests.mcp.session import mcp_session, ok, problem_of, refused, sandbox_gateway, tools_of

pytestmark = pytest.mark.slow

TOKENS = {
    "admin": "cgw_mcp-admin-5e4d3c2b1a0f9e8d7c6b",
    "narrow": "cgw_mcp-narrow-0a9b8c7d6e5f4a3b2c1d",
    "writer": "cgw_mcp-writer-11223344556677889900",
    "keyed": "cgw_mcp-keyed-ffeeddccbbaa99887766",
    "limited": "cgw_mcp-limited-a1b2c3d4e5f607182930",
}
POLICIES = {
    "admin": 'allow = ["*"]\naudit = "all"',
    # the smallest policy: one read, two fields
    "narrow": 'allow = ["v4:Contact.get"]\nread_only = true\nfields = {Contact = ["id", "display_name"]}',
    # reads and creates contacts, never updates or deletes
    "writer": 'allow = ["v4:Contact.get", "v4:Contact.create"]',
    "keyed": 'allow = ["v4:Contact.*"]\nrequire_idempotency_key = true',
    "limited": 'allow = ["v4:Contact.get"]\nrate_limit = "4/minute"',
}
READ_TOOLS = {"list_entities", "describe_entity", "get_records", "count_records"}
WRITE_TOOLS = {"create_record", "update_records", "delete_records"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    clients = {n: (TOKENS[n], p) for n, p in POLICIES.items()}
    with sandbox_gateway(
        tmp_path_factory.mktemp("mcp"), clients, CIVI_GATEWAY_MAX_BODY_BYTES="200000"
    ) as process:
        yield process


async def rest(gateway: GatewayProcess, client: str, path: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKENS[client]}"}
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(gateway.url + path, json=body, headers=headers)


async def raw(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.request(method, url, **kwargs)


async def test_tool_lists_follow_each_policy(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        admin = await tools_of(session)
    async with mcp_session(gateway.url, TOKENS["narrow"]) as session:
        narrow = await tools_of(session)
    async with mcp_session(gateway.url, TOKENS["writer"]) as session:
        writer = await tools_of(session)
    assert set(admin) == READ_TOOLS | WRITE_TOOLS
    assert set(narrow) == READ_TOOLS
    assert set(writer) == READ_TOOLS | {"create_record"}
    # the entities each tool takes are those the policy lets the client use it on
    assert narrow["get_records"].inputSchema["properties"]["entity"]["enum"] == ["Contact"]
    assert writer["create_record"].inputSchema["properties"]["entity"]["enum"] == ["Contact"]
    assert {"Contact", "Email", "Activity"} <= set(
        admin["get_records"].inputSchema["properties"]["entity"]["enum"]
    )


async def test_annotations_and_schemas(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        tools = await tools_of(session)
    for name in READ_TOOLS:
        hints = tools[name].annotations
        assert hints is not None and hints.readOnlyHint is True and hints.destructiveHint is False
    create, update, delete = tools["create_record"], tools["update_records"], tools["delete_records"]
    assert create.annotations and create.annotations.readOnlyHint is False
    assert create.annotations.destructiveHint is False and create.annotations.idempotentHint is False
    for tool in (update, delete):
        assert (
            tool.annotations
            and tool.annotations.destructiveHint is True
            and tool.annotations.readOnlyHint is False
        )
    get = tools["get_records"].inputSchema
    assert get["required"] == ["entity"] and get["additionalProperties"] is False
    assert set(get["properties"]) == {"entity", "select", "where", "orderBy", "limit", "offset"}
    assert get["properties"]["limit"]["maximum"] == 1000
    assert set(delete.inputSchema["required"]) == {"entity", "where"}
    assert {"dry_run", "idempotency_key"} <= set(update.inputSchema["properties"])
    assert tools["get_records"].outputSchema is not None


async def test_reads(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        got = await ok(
            session,
            "get_records",
            {"entity": "Contact", "select": ["id", "display_name"], "limit": 3, "orderBy": {"id": "ASC"}},
        )
        counted = await ok(
            session, "count_records", {"entity": "Contact", "where": [["contact_type", "=", "Individual"]]}
        )
        entities = await ok(session, "list_entities", {})
        described = await ok(session, "describe_entity", {"entity": "Contact"})
    assert got["count"] == 3 and [set(r) for r in got["records"]] == [{"id", "display_name"}] * 3
    expected = await rest(
        gateway,
        "admin",
        "/v4/Contact/get",
        {"select": ["id", "display_name"], "limit": 3, "orderBy": {"id": "ASC"}},
    )
    assert got["records"] == expected.json()
    total = await rest(
        gateway,
        "admin",
        "/v4/Contact/get",
        {"select": ["row_count"], "where": [["contact_type", "=", "Individual"]]},
    )
    assert counted["count"] == int(total.headers["X-Total-Count"]) > 0
    assert "Contact" in {e["name"] for e in entities["entities"]}
    by_name = {f["name"]: f for f in described["fields"]}
    assert by_name["contact_type"]["options"]  # a pseudoconstant field lists its options
    assert "api_key" not in by_name and "hash" not in by_name  # credentials are in no description


async def test_refusals_are_the_rest_problems(gateway: GatewayProcess) -> None:
    cases = [
        ("narrow", {"entity": "Contact", "select": ["id", "email_primary.email"]}, "gateway-policy-denied"),
        ("narrow", {"entity": "Contact", "select": ["id", "api_key"]}, "gateway-policy-denied"),
        ("narrow", {"entity": "Email", "select": ["id"]}, "gateway-policy-denied"),
        ("admin", {"entity": "Contact", "select": ["no_such_field"]}, "unknown-field"),
        ("admin", {"entity": "NoSuchEntity"}, "unknown-api"),
        ("admin", {"entity": "Contact", "where": [["id", "LIKEWISE", 1]]}, "civicrm-bad-request"),
    ]
    for client, arguments, slug in cases:
        async with mcp_session(gateway.url, TOKENS[client]) as session:
            problem = await refused(session, "get_records", arguments, slug)
        params = {k: v for k, v in arguments.items() if k != "entity"}
        response = await rest(gateway, client, f"/v4/{arguments['entity']}/get", {**params, "limit": 25})
        expected = assert_problem(response, problem["status"], slug)
        assert problem["detail"] == expected["detail"] and problem["title"] == expected["title"]


async def test_malformed_and_huge_input(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        await refused(session, "get_records", {"entity": "Contact", "limit": 0}, "invalid-request")
        await refused(session, "get_records", {"entity": "Contact", "limit": 5000}, "invalid-request")
        await refused(session, "get_records", {"entity": "Contact", "colour": "red"}, "invalid-request")
        await refused(
            session,
            "get_records",
            {"entity": "Contact", "where": [["id", "=", i] for i in range(1000)]},
            "invalid-request",
        )
        deep: Any = 1
        for _ in range(100):
            deep = [deep]
        await refused(
            session, "get_records", {"entity": "Contact", "where": [["id", "=", deep]]}, "invalid-request"
        )
        await refused(session, "no_such_tool", {}, "invalid-request")
        await refused(
            session, "get_records", {"entity": "Contact", "select": ["id"] * 201}, "invalid-request"
        )
        await refused(
            session, "get_records", {"entity": "Contact", "select": ["x" * 100_000]}, "invalid-request"
        )
    # an input larger than the gateway takes at all: refused before MCP reads it
    response = await raw(
        "POST",
        gateway.url + "/mcp",
        content=b"[" * 300_000,
        headers={"Authorization": f"Bearer {TOKENS['admin']}", "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload-too-large")
    # and the gateway still answers
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        assert (await ok(session, "count_records", {"entity": "Contact"}))["count"] > 0


async def test_tokens_as_for_rest(gateway: GatewayProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    for token in (None, "cgw_wrong-token-000000000000000"):
        sent = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        assert_problem(
            await raw("POST", gateway.url + "/mcp", json=body, headers=sent), 401, "unauthenticated"
        )
    with pytest.raises(Exception):  # noqa: B017 (the SDK's client raises on the 401)
        async with mcp_session(gateway.url, "cgw_wrong-token-000000000000000"):
            pass


async def test_dry_run_checks_without_writing(gateway: GatewayProcess) -> None:
    values = {"contact_type": "Individual", "first_name": "Dry", "last_name": "Run-MCP"}
    where = [["last_name", "=", "Run-MCP"]]
    async with mcp_session(gateway.url, TOKENS["admin"]) as session:
        checked = await ok(session, "create_record", {"entity": "Contact", "values": values, "dry_run": True})
        assert checked == {"entity": "Contact", "action": "create", "dry_run": True}
        assert (await ok(session, "count_records", {"entity": "Contact", "where": where}))["count"] == 0
        await refused(
            session,
            "create_record",
            {"entity": "Contact", "values": {"no_such": 1}, "dry_run": True},
            "unknown-field",
        )
        await refused(
            session,
            "delete_records",
            {"entity": "Contact", "where": [["nope", "=", 1]], "dry_run": True},
            "unknown-field",
        )
    async with mcp_session(gateway.url, TOKENS["writer"]) as session:
        # a tool it is not shown is refused by the policy, dry run or not
        await refused(
            session,
            "delete_records",
            {"entity": "Contact", "where": where, "dry_run": True},
            "gateway-policy-denied",
        )
        await refused(
            session,
            "update_records",
            {"entity": "Contact", "where": where, "values": {"first_name": "X"}},
            "gateway-policy-denied",
        )


async def test_writes_idempotency_and_audit(gateway: GatewayProcess) -> None:
    values = {"contact_type": "Individual", "first_name": "Ida", "last_name": "Keyed-MCP"}
    where = [["last_name", "=", "Keyed-MCP"]]
    async with mcp_session(gateway.url, TOKENS["keyed"]) as session:
        await refused(
            session, "create_record", {"entity": "Contact", "values": values}, "idempotency-key-required"
        )
        first = await ok(
            session, "create_record", {"entity": "Contact", "values": values, "idempotency_key": "mcp-k1"}
        )
        again = await ok(
            session, "create_record", {"entity": "Contact", "values": values, "idempotency_key": "mcp-k1"}
        )
        await refused(
            session,
            "create_record",
            {"entity": "Contact", "values": {**values, "first_name": "Other"}, "idempotency_key": "mcp-k1"},
            "idempotency-key-reused",
        )
        assert first["replayed"] is False and again["replayed"] is True
        assert first["records"][0]["id"] == again["records"][0]["id"]
        assert (await ok(session, "count_records", {"entity": "Contact", "where": where}))["count"] == 1
        updated = await ok(
            session,
            "update_records",
            {
                "entity": "Contact",
                "where": where,
                "values": {"first_name": "Ada"},
                "idempotency_key": "mcp-k2",
            },
        )
        assert updated["count"] == 1
        deleted = await ok(
            session, "delete_records", {"entity": "Contact", "where": where, "idempotency_key": "mcp-k3"}
        )
        assert deleted["count"] == 1
    trail = await raw(
        "GET",
        gateway.url + "/audit",
        params={"client": "keyed"},
        headers={"Authorization": f"Bearer {TOKENS['admin']}"},
    )
    assert trail.status_code == 200, trail.text
    records = [r for r in trail.json() if r["entity"] == "Contact"]
    assert records and all(r["face"] == "mcp" for r in records)
    keys = {(r["action"], r["idempotency_key"], r["status"], r["replayed"]) for r in records}
    assert ("create", "mcp-k1", 200, False) in keys and ("create", "mcp-k1", 200, True) in keys
    assert ("update", "mcp-k2", 200, False) in keys and ("delete", "mcp-k3", 200, False) in keys
    assert any(r["problem"] == "idempotency-key-required" for r in records), [
        (r["action"], r["status"], r["problem"]) for r in records
    ]


async def test_narrow_client_sees_only_its_own(gateway: GatewayProcess) -> None:
    async with mcp_session(gateway.url, TOKENS["narrow"]) as session:
        entities = await ok(session, "list_entities", {})
        assert [e["name"] for e in entities["entities"]] == ["Contact"]
        assert entities["entities"][0]["actions"] == ["get"]
        described = await ok(session, "describe_entity", {"entity": "Contact"})
        assert {f["name"] for f in described["fields"]} == {"id", "display_name"}
        hidden = await refused(session, "describe_entity", {"entity": "Email"}, "gateway-policy-denied")
        missing = await refused(
            session, "describe_entity", {"entity": "NoSuchThing"}, "gateway-policy-denied"
        )
        assert hidden["detail"].replace("Email", "X") == missing["detail"].replace("NoSuchThing", "X")
        got = await ok(
            session, "get_records", {"entity": "Contact", "select": ["id", "display_name"], "limit": 5}
        )
        assert got["count"] == 5
        await refused(
            session,
            "get_records",
            {"entity": "Contact", "where": [["api_key", "IS NOT NULL"]]},
            "gateway-policy-denied",
        )
        await refused(
            session,
            "create_record",
            {"entity": "Contact", "values": {"contact_type": "Individual"}},
            "gateway-policy-denied",
        )


async def test_rate_limit_applies(gateway: GatewayProcess) -> None:
    seen: list[str] = []
    async with mcp_session(gateway.url, TOKENS["limited"]) as session:
        for _ in range(6):
            result = await session.call_tool("count_records", {"entity": "Contact"})
            seen.append(problem_of(result)["type"] if result.isError else "ok")
        # listing tools counts too, and is refused as a JSON-RPC error carrying the problem
        with pytest.raises(McpError) as refusal:
            await session.list_tools()
    assert "/problems/rate-limited" in seen and seen[0] == "ok"
    assert refusal.value.error.data["type"] == "/problems/rate-limited"


async def test_tokenless_gateway_serves_loopback(gateway_process: Any, tmp_path: Path) -> None:
    proc = gateway_process(
        {"CIVI_GATEWAY_BACKEND": "sandbox", "CIVI_GATEWAY_STATE_DIR": str(tmp_path / "state")}
    )
    async with mcp_session(proc.url) as session:
        assert set(await tools_of(session)) == READ_TOOLS | WRITE_TOOLS
        assert (await ok(session, "get_records", {"entity": "Contact", "limit": 1}))["count"] == 1
