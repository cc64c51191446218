"""The document served at /openapi.json: built from the sandbox CiviCRM's own metadata, valid
OpenAPI, per-entity operations whose schemas name the real fields, errors, security and
examples on every operation, and examples that really work against the gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from gateway.core.credentials import is_credential_action
from gateway.core.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES
from gateway.core.policy import Policy
from gateway.flow.clients import hash_token
from gateway.settings import Settings
from gateway.web.openapi.document import OPTIONS_LIMIT, field_schema
from tests.conftest import gateway_client
from tests.openapi.conftest import operations, properties, resolve


@pytest.fixture
async def sandbox_doc(gw_sandbox) -> tuple[Any, dict[str, Any]]:
    response = await gw_sandbox.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return gw_sandbox, response.json()


async def test_document_is_valid_openapi(sandbox_doc):
    _, doc = sandbox_doc
    validate(doc)
    assert doc["openapi"].startswith("3.1")


async def test_every_entity_and_action_of_the_metadata_has_its_operation(sandbox_doc):
    gw, doc = sandbox_doc
    entities = (await gw.post("/v4/Entity/get", json={"select": ["name"]})).json()
    assert len(entities) >= 10
    tags = {t["name"] for t in doc["tags"]}
    for entity in entities:
        name = entity["name"]
        assert name in tags
        actions = (await gw.post(f"/v4/{name}/getActions", json={"select": ["name"]})).json()
        for action in actions:
            path = f"/v4/{name}/{action['name']}"
            if is_credential_action(action["name"]) or not Policy().offers(4, name, action["name"]):
                # no client may call it by default (credentials; unchecked; secret entities)
                assert path not in doc["paths"]
                continue
            operation = doc["paths"][path]["post"]
            assert operation["tags"] == [name]
    # the generic routes stay for anything else
    for path in ("/v4/{entity}/{action}", "/v3/{entity}/{action}"):
        assert set(doc["paths"][path]) == {"get", "post"}


async def test_contact_schemas_name_its_real_fields(sandbox_doc):
    _, doc = sandbox_doc
    schemas = doc["components"]["schemas"]
    record = schemas["ContactRecord"]["properties"]
    assert record["id"]["type"] == ["integer", "null"] and record["id"]["readOnly"] is True
    assert record["first_name"]["type"] == ["string", "null"]
    assert record["is_deleted"]["type"] == ["boolean", "null"]
    assert record["employer_id"]["x-civicrm-fk-entity"] == "Contact"
    assert "Refers to a Contact" in record["employer_id"]["description"]
    # the custom field group on Contact, with its options
    issue = record["Constituent_Information.Most_Important_Issue"]
    assert issue["x-civicrm-custom-group"] == "Constituent_Information"
    assert issue["x-civicrm-options"] == {"Edu": "Education", "Env": "Environment", "Cul": "Arts and Culture"}
    assert "Edu = Education" in issue["description"]

    create = doc["paths"]["/v4/Contact/create"]["post"]
    body = properties(doc, create["requestBody"]["content"]["application/json"]["schema"])
    # simple form: fields at the top; defaults described, never a 'default' that a generated
    # client would send with every update
    # (5.77's getFields(create) gives preferred_mail_format the default "Both" and
    # contact_type none)
    assert body["preferred_mail_format"]["x-civicrm-default"] == "Both"
    assert 'Default on create: "Both"' in body["preferred_mail_format"]["description"]
    # contact_type is readonly in 5.77's metadata (not changed after create) but is what a new
    # contact is made as: create bodies name it, update bodies do not
    assert "Individual = Individual" in body["contact_type"]["description"]
    assert "may be given on create" in body["contact_type"]["description"]
    update = doc["paths"]["/v4/Contact/update"]["post"]["requestBody"]["content"]["application/json"]
    assert "contact_type" not in properties(doc, update["schema"])
    assert '"default"' not in json.dumps(doc["components"]["schemas"])
    values = properties(doc, body["values"])  # native form: fields in 'values'
    assert "Constituent_Information.Marital_Status" in values and "id" not in values
    answer = create["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["items"] == {"$ref": "#/components/schemas/ContactRecord"}

    # required values come from getFields(action=create)
    email_create = doc["paths"]["/v4/Email/create"]["post"]["requestBody"]
    email_params = resolve(doc, email_create["content"]["application/json"]["schema"])
    new_email = resolve(doc, properties(doc, email_params)["values"])
    # (5.77: email and location_type_id; contact_id is not required there)
    assert set(new_email["required"]) == {"email", "location_type_id"}


async def test_errors_security_and_examples_on_every_operation(sandbox_doc):
    _, doc = sandbox_doc
    statuses = {str(p.status) for p in PROBLEM_TYPES.values()}
    # A tokenless gateway documents no token: no scheme (no Authorize button), no padlocks
    assert "securitySchemes" not in doc["components"]
    seen = 0
    for path, method, operation in operations(doc):
        if not path.startswith(("/v3/", "/v4/")):
            continue
        seen += 1
        assert operation["security"] == [], path
        assert statuses <= set(operation["responses"]), path
        for status in statuses:
            response = resolve(doc, operation["responses"][status])
            content = response["content"][PROBLEM_CONTENT_TYPE]
            assert resolve(doc, content["schema"])["required"] == ["type", "title", "status", "detail"]
            slugs = {p.slug for p in PROBLEM_TYPES.values() if str(p.status) == status}
            assert set(content["examples"]) == slugs
        assert [s["label"] for s in operation["x-codeSamples"]] == ["curl", "fetch", "httpx", "PHP"], path
        if method == "get":  # named query parameters, each with its example
            named = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
            # the change feed takes its own (cursor, select, where, limit, wait)
            assert ("cursor" if path.endswith("/changes") else "params") in named and "limit" in named, path
            assert all("schema" in p and "content" not in p for p in named.values()), path
            continue
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        assert examples, (path, method)
        if (
            path.startswith("/v4/")
            and not path.endswith("/changes")
            and ("{entity}" in path or path.endswith(("/get", "/create", "/update", "/delete")))
        ):
            assert {"simple", "native"} <= set(examples), (path, method)
    assert seen > 100
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    assert "Contact_create" in ids and "v4_call" in ids


async def test_operation_ids_are_stable():
    async def ids() -> list[str]:
        async with gateway_client(Settings(backend="sandbox", sandbox_demo=0)) as gw:
            doc = (await gw.get("/openapi.json")).json()
        return sorted(op["operationId"] for _, _, op in operations(doc))

    assert await ids() == await ids()


async def test_examples_of_contact_operations_work_against_the_gateway(sandbox_doc):
    gw, doc = sandbox_doc

    def examples(action: str) -> dict[str, Any]:
        operation = doc["paths"][f"/v4/Contact/{action}"]["post"]
        found = operation["requestBody"]["content"]["application/json"]["examples"]
        return {form: example["value"] for form, example in found.items()}

    ids = []
    for form, params in examples("create").items():
        created = await gw.post("/v4/Contact/create", json=params)
        assert created.status_code == 200, (form, created.text)
        assert created.json()[0]["first_name"] == "Ada"
        ids.append(created.json()[0]["id"])
    for form, params in examples("get").items():
        got = await gw.post("/v4/Contact/get", json=params)
        assert got.status_code == 200, (form, got.text)
    for action in ("update", "delete"):
        for form, params in examples(action).items():
            params = (
                {**params, "id": ids[0]} if form == "simple" else {**params, "where": [["id", "=", ids[0]]]}
            )
            answer = await gw.post(f"/v4/Contact/{action}", json=params)
            assert answer.status_code == 200, (action, form, answer.text)
    # the generic route's examples too
    generic = doc["paths"]["/v4/{entity}/{action}"]["post"]["requestBody"]["content"]
    for form, example in generic["application/json"]["examples"].items():
        assert (await gw.post("/v4/Contact/get", json=example["value"])).status_code == 200, form


async def test_examples_find_records_on_the_demo_data():
    """Try-it-out on the sandbox (default demo data) answers records, not an empty list."""
    async with gateway_client(Settings(backend="sandbox")) as gw:
        doc = (await gw.get("/openapi.json")).json()
        contact_get = doc["paths"]["/v4/Contact/get"]["post"]["requestBody"]["content"]
        generic = doc["paths"]["/v4/{entity}/{action}"]
        bodies = [e["value"] for e in contact_get["application/json"]["examples"].values()]
        bodies += [
            e["value"]
            for e in generic["post"]["requestBody"]["content"]["application/json"]["examples"].values()
        ]
        for body in bodies:
            found = (await gw.post("/v4/Contact/get", json=body)).json()
            assert len(found) >= 5, body
            assert {c["last_name"] for c in await _full(gw, found)} == {"Garcia"}
        query = {
            p["name"]: p["example"]
            for p in generic["get"]["parameters"]
            if p["in"] == "query" and "example" in p and p["name"] != "params"
        }
        found = (await gw.get("/v4/Contact/get", params=query)).json()
        assert len(found) == 10
        params = next(p["example"] for p in generic["get"]["parameters"] if p["name"] == "params")
        assert len((await gw.get("/v4/Contact/get", params={"params": params})).json()) == 10


async def _full(gw, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [r["id"] for r in records]
    return (
        await gw.post("/v4/Contact/get", json={"select": ["last_name"], "where": [["id", "IN", ids]]})
    ).json()


def test_app_openapi_is_the_generic_document():
    from gateway.web.app import create_app

    app = create_app(Settings(backend="sandbox", sandbox_demo=0))
    doc = app.openapi()
    validate(doc)
    assert "/v4/Contact/get" not in doc["paths"]
    assert doc["paths"]["/v4/{entity}/{action}"]["post"]["operationId"] == "v4_call"
    assert "securitySchemes" not in doc["components"]  # tokenless


async def test_with_tokens_every_call_names_the_bearer_scheme():
    """The padlocks and the Authorize button of /docs, only where a token is needed."""
    token = f"reporting:sha256:{hash_token('cgw_a-token-for-the-document-test-0123')}"
    settings = Settings(backend="sandbox", sandbox_demo=0, client_tokens=token)
    async with gateway_client(settings) as gw:
        doc = (await gw.get("/openapi.json")).json()  # no token: the generic routes
    scheme = doc["components"]["securitySchemes"]["clientToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    calls = [(path, op) for path, _, op in operations(doc) if path.startswith(("/v3/", "/v4/"))]
    assert calls and all(op["security"] == [{"clientToken": []}] for _, op in calls)
    assert doc["paths"]["/healthz"]["get"]["security"] == []


# --- one field -------------------------------------------------------------------------------


def test_field_schema_types_defaults_and_options():
    boolean = field_schema(
        {"name": "is_opt_out", "data_type": "Boolean", "default_value": "0", "nullable": False}
    )
    assert boolean["type"] == "boolean" and boolean["x-civicrm-default"] is False
    assert "x-civicrm-default" not in field_schema(
        {"name": "n", "data_type": "Integer", "default_value": "x"}
    )
    many = {str(i): f"State {i}" for i in range(OPTIONS_LIMIT + 25)}
    state = field_schema({"name": "state_province_id", "data_type": "Integer", "options": many})
    assert len(state["x-civicrm-options"]) == OPTIONS_LIMIT
    assert "and 25 more" in state["description"]
    listed = field_schema(
        {
            "name": "tags",
            "data_type": "String",
            "serialize": 1,
            "options": [{"id": 1, "name": "a", "label": "A"}],
        }
    )
    assert listed["type"] == ["array", "null"] and listed["items"] == {"type": "string"}
    assert listed["x-civicrm-options"] == {"1": "A"}
    secret = field_schema({"name": "api_key", "data_type": "String", "default_value": "abc"})
    assert "abc" not in json.dumps(secret)
    assert (
        field_schema({"name": "when", "data_type": "Timestamp"})["description"]
        == "Format YYYY-MM-DD HH:MM:SS."
    )


async def test_record_schemas_match_what_civicrm_returns():
    """Every entity's records, all fields and custom fields selected, fit its record schema."""
    from jsonschema import Draft202012Validator

    async with gateway_client(Settings(backend="sandbox", sandbox_demo=15)) as gw:
        doc = (await gw.get("/openapi.json")).json()
        checked = 0
        for path, _, operation in operations(doc):
            if not path.endswith("/get") or "{" in path:
                continue
            items = operation["responses"]["200"]["content"]["application/json"]["schema"]["items"]
            validator = Draft202012Validator(resolve(doc, items))
            # Setting.get answers one row per setting named (a client must name them).
            settings = {"select": ["lcMessages", "contact_default_language"]}
            params = settings if path == "/v4/Setting/get" else {"select": ["*", "custom.*"], "limit": 20}
            response = await gw.post(path, json=params)
            assert response.status_code == 200, (path, response.text)
            records = response.json()
            for record in records:
                errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(record)]
                assert errors == [], (path, errors)
                checked += 1
    assert checked > 100
