"""Documents per reader: each client sees only the entities, actions and fields its policy lets
it use; a reader without a token sees the generic routes (or nothing); credential fields are in
no document, whoever reads it; documents are shared by readers with the same rights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from gateway.flow.clients import hash_token
from gateway.settings import Settings
from tests.conftest import gateway_client
from tests.openapi.conftest import operations

READER = "cgw_reader-token-0123456789abcdef"
TWIN = "cgw_twin-token-0123456789abcdef"  # the reader's rights, another name
ADMIN = "cgw_admin-token-0123456789abcdef"
OTHER = "cgw_other-token-0123456789abcdef"  # the reader's rights, its own CiviCRM user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    (tmp_path / "other.key").write_text("other-civicrm-key-1234\n")
    path = tmp_path / "clients.toml"
    reader = 'allow = ["v4:Contact.get", "v4:Email.get*", "v4:Contact.create"]\nread_only = true'
    path.write_text(f"""
[clients.reader]
token_sha256 = "{hash_token(READER)}"
{reader}

[clients.twin]
token_sha256 = "{hash_token(TWIN)}"
{reader}

[clients.other]
token_sha256 = "{hash_token(OTHER)}"
{reader}
civicrm_api_key_file = "{tmp_path / "other.key"}"

[clients.admin]
token_sha256 = "{hash_token(ADMIN)}"
credential_fields = true
""")
    return path


def v4_paths(doc: dict[str, Any]) -> set[str]:
    return {p for p in doc["paths"] if p.startswith("/v4/") and "{" not in p and not p.endswith("/batch")}


async def test_a_client_sees_only_what_its_policy_allows(clients_file):
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file)) as gw:
        doc = (await gw.get("/openapi.json", headers=bearer(READER))).json()
        validate(doc)
        # read-only: Contact.create is allowed by the globs, but not to this client
        assert v4_paths(doc) == {
            "/v4/Contact/get",
            "/v4/Email/get",
            "/v4/Email/getFields",
            "/v4/Email/getActions",
            "/v4/Email/getLinks",
        }
        assert {t["name"] for t in doc["tags"]} >= {"Contact", "Email"}
        assert "Activity" not in {t["name"] for t in doc["tags"]}
        assert not any(name.startswith("Activity") for name in doc["components"]["schemas"])

        full = (await gw.get("/openapi.json", headers=bearer(ADMIN))).json()
        assert {"/v4/Contact/create", "/v4/Activity/get", "/v4/Contact/getChecksum"} <= v4_paths(full)

        index = (await gw.get("/openapi/index.json", headers=bearer(READER))).json()
        assert [e["name"] for e in index["entities"]] == ["Contact", "Email"]
        contact = (await gw.get("/openapi/Contact.json", headers=bearer(READER))).json()
        validate(contact)
        assert set(contact["paths"]) == {"/v4/Contact/get"}
        missing = await gw.get("/openapi/Activity.json", headers=bearer(READER))
        assert missing.status_code == 404
        assert missing.json()["type"] == "/problems/route-not-found"
        assert (await gw.get("/openapi/Activity.json", headers=bearer(ADMIN))).status_code == 200


async def test_without_a_token_the_generic_routes_only_or_nothing(clients_file):
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file)) as gw:
        doc = (await gw.get("/openapi.json")).json()
        validate(doc)
        assert v4_paths(doc) == set()
        assert {"/v4/{entity}/{action}", "/v3/{entity}/{action}", "/v4/batch", "/healthz"} <= set(
            doc["paths"]
        )
        assert "Authorize" in doc["info"]["description"]
        assert (await gw.get("/openapi/index.json")).json()["entities"] == []
        assert (await gw.get("/openapi/Contact.json")).status_code == 404
        generic = (await gw.get("/openapi/generic.json")).json()
        assert v4_paths(generic) == set() and "/v4/{entity}/{action}" in generic["paths"]
        wrong = await gw.get("/openapi.json", headers=bearer("cgw_not-a-token"))
        assert wrong.status_code == 401
        assert wrong.json()["type"] == "/problems/unauthenticated"

    async with gateway_client(
        Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file, openapi_anonymous="none")
    ) as gw:
        for path in ("/openapi.json", "/openapi/index.json", "/openapi/generic.json"):
            refused = await gw.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (await gw.get("/openapi.json", headers=bearer(READER))).status_code == 200


async def test_tokenless_loopback_reader_sees_everything():
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0)) as gw:
        doc = (await gw.get("/openapi.json")).json()
    assert {"/v4/Contact/create", "/v4/Activity/get"} <= v4_paths(doc)


async def test_documents_are_shared_by_what_they_depend_on(clients_file):
    """Keyed by the rights and the CiviCRM identity, not by the client's name."""
    settings = Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file)
    async with gateway_client(settings) as gw:
        docs = gw._transport.app.state.docs  # type: ignore[attr-defined]
        clients = {c.name: c for c in gw._transport.app.state.services.authenticator.clients}  # type: ignore[attr-defined]
        reader = await docs.full(clients["reader"])
        assert await docs.full(clients["twin"]) is reader
        other = await docs.full(clients["other"])  # same rights, its own CiviCRM user
        assert other is not reader and other.doc["paths"].keys() == reader.doc["paths"].keys()
        assert await docs.full(clients["admin"]) is not reader
        served = await gw.get("/openapi.json", headers=bearer(TWIN))
        assert json.loads(served.content)["paths"].keys() == reader.doc["paths"].keys()


def _names_and_values(node: Any, found: set[str]) -> None:
    """Every property name, and every string, anywhere in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            _names_and_values(value, found)
    elif isinstance(node, list):
        for value in node:
            _names_and_values(value, found)
    elif isinstance(node, str):
        found.add(node)


async def test_credential_fields_are_in_no_schema_and_no_example(clients_file):
    """Not even for a client allowed to use them (credential_fields = true)."""
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0, clients_file=clients_file)) as gw:
        for token in (ADMIN, READER):
            doc = (await gw.get("/openapi.json", headers=bearer(token))).json()
            schemas = doc["components"]["schemas"]
            fields = {name for schema in schemas.values() for name in schema.get("properties", {})}
            assert "display_name" in fields
            assert {"api_key", "hash"} & fields == set()
            texts: set[str] = set()
            for _, _, operation in operations(doc):
                _names_and_values(operation.get("requestBody", {}), texts)
                _names_and_values(operation.get("x-codeSamples", []), texts)
            assert not [t for t in texts if "api_key" in t or '"hash"' in t]
