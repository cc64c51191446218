"""Where the document's metadata comes from: fetched lazily through the backend (limited
concurrency, cached with a TTL), or a local spec file; the generic document when CiviCRM
cannot be reached; never a secret in the document."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from gateway.backends.base import Backend
from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.redact import MASK
from gateway.core.results import Records
from gateway.flow.clients import hash_token
from gateway.settings import Settings
from gateway.web.app import create_app
from gateway.web.openapi.metadata import (
    Metadata,
    MetadataError,
    SpecSource,
    fetch_metadata,
    load_spec,
    save_spec,
)
from tests.conftest import ADMIN_KEY, SITE_KEY, free_port, gateway_client, http_settings


class FakeCiviCRM(Backend):
    """Answers the metadata calls for ``count`` entities, counting calls and how many ran at
    once; ``fail`` makes every call fail as an unreachable CiviCRM does."""

    name = "fake"

    def __init__(
        self, count: int = 3, *, fail: bool = False, delay: float = 0.0, chains: bool = False
    ) -> None:
        self.entities = [f"Thing{i}" for i in range(count)]
        self.chains = chains  # answers Entity.get's chained calls, as CiviCRM does
        self.fail = fail
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.running = self.peak = 0

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        entity, action, params = call.entity, call.action, call.to_params()
        self.calls.append((entity, action))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise GatewayError("upstream-unavailable", "connection refused")
            if entity == "Entity":
                names = self.entities
                if self.chains and params.get("where"):
                    names = [n for n in names if n in params["where"][0][2]]
                rows = [{"name": n, "title": n, "description": f"The {n}"} for n in names]
                if self.chains:
                    for row in rows:
                        for key, (_, chained, chained_params) in (params.get("chain") or {}).items():
                            row[key] = self.answer(chained, chained_params)
                return Records(rows)
            return Records(self.answer(action, params))
        finally:
            self.running -= 1

    @staticmethod
    def answer(action: str, params: dict[str, Any]) -> list[Any]:
        if action == "getActions":
            return [{"name": a} for a in ("get", "create", "delete", "getFields")]
        if action == "getFields":
            create = params.get("action") == "create"
            loaded = params.get("loadOptions")
            fields = [
                {"name": "id", "data_type": "Integer", "readonly": True, "options": False},
                {
                    "name": "label",
                    "data_type": "String",
                    "required": create,
                    "options": {"a": "A", "b": "B"} if loaded else True,
                },
            ]
            if create:  # a field only a create takes, with options of its own
                fields.append({"name": "kind", "options": {"x": "X"} if loaded else True})
            wanted = {n for clause in params.get("where", []) for n in clause[2]}
            return [f for f in fields if not wanted or f["name"] in wanted]
        return []


async def test_fetch_is_one_entity_list_then_one_chained_call_per_group_of_entities():
    backend = FakeCiviCRM(25, delay=0.01, chains=True)
    metadata = await fetch_metadata(backend, concurrency=2, group_size=10)
    assert [e["name"] for e in metadata.entities] == sorted(backend.entities)
    chained = [c for c in backend.calls if c == ("Entity", "get")]
    assert len(chained) == 1 + 3  # the list, then 3 groups
    assert backend.peak == 2
    thing = metadata.entity("Thing0")
    assert set(thing["fields"]) == {"get", "create"}
    assert thing["fields"]["create"][1]["required"] is True
    assert [a["name"] for a in thing["actions"]] == ["get", "create", "delete", "getFields"]
    # The chained create fields come without option lists: taken from the get fields, and
    # a create-only field's asked for (one call per entity that has one).
    create = {f["name"]: f for f in thing["fields"]["create"]}
    assert create["label"]["options"] == {"a": "A", "b": "B"}
    assert create["kind"]["options"] == {"x": "X"} and create["id"]["options"] is False
    assert backend.calls.count(("Thing0", "getFields")) == 1


async def test_a_backend_that_does_not_chain_is_asked_three_calls_per_entity_at_limited_concurrency():
    backend = FakeCiviCRM(12, delay=0.01)
    metadata = await fetch_metadata(backend, concurrency=3, group_size=5)
    assert [e["name"] for e in metadata.entities] == sorted(backend.entities)
    per_entity = [c for c in backend.calls if c[0] != "Entity"]
    assert len(per_entity) == 3 * 12
    assert len(backend.calls) - len(per_entity) <= 1 + 3  # the list, and a try per group at most
    assert backend.peak == 3
    thing = metadata.entity("Thing0")
    assert set(thing["fields"]) == {"get", "create"}
    assert thing["fields"]["create"][1]["required"] is True


async def test_each_group_is_told_of_as_it_lands_and_an_early_fetch_waits_for_the_backend():
    """A fetch may begin before the backend has started (at the gateway's start, while the
    clients' workers boot): it asks the backend only once told it is ready. Each group's
    entities are handed on as soon as they are described, as the dicts the metadata keeps,
    while later groups are still to be asked; a failing receiver does not stop the fetch."""
    backend = FakeCiviCRM(25, chains=True, delay=0.01)
    ready = asyncio.Event()
    landed: list[tuple[int, list[dict[str, Any]]]] = []

    def told(entities: list[dict[str, Any]]) -> None:
        landed.append((len(backend.calls), entities))

    fetch = asyncio.ensure_future(
        fetch_metadata(backend, concurrency=1, group_size=10, on_described=told, backend_ready=ready)
    )
    await asyncio.sleep(0.05)
    assert backend.calls == [] and not fetch.done()
    ready.set()
    metadata = await fetch
    assert [len(entities) for _, entities in landed] == [10, 10, 5]
    assert all(ent is metadata.entity(ent["name"]) for _, entities in landed for ent in entities)
    assert all(ent["fields"]["create"][1]["options"] == {"a": "A", "b": "B"} for ent in landed[0][1])
    assert landed[0][0] < landed[-1][0]  # the first group was handed on before the last was asked

    def broken(entities: list[dict[str, Any]]) -> None:
        raise RuntimeError("a receiver's bug")

    again = await fetch_metadata(FakeCiviCRM(3, chains=True), on_described=broken)
    assert [e["name"] for e in again.entities] == ["Thing0", "Thing1", "Thing2"]


async def test_fetch_only_the_configured_entities():
    backend = FakeCiviCRM(5)
    metadata = await fetch_metadata(backend, entities=["Thing3"])
    assert [e["name"] for e in metadata.entities] == ["Thing3"]
    assert {entity for entity, _ in backend.calls} == {"Entity", "Thing3"}
    with pytest.raises(MetadataError, match="no entities"):
        await fetch_metadata(backend, entities=["Nope"])


async def refresh(cache: SpecSource) -> None:
    """Until the background refresh ``get`` started has finished (there must be one)."""
    task = cache._task
    assert task is not None, "no refresh running"
    await task


async def test_cache_ttl_stale_while_refresh_and_failures():
    now = [0.0]
    backend = FakeCiviCRM(1)
    cache = SpecSource(backend, ttl=60, retry_after=30, clock=lambda: now[0])
    first = await cache.get()
    assert first is not None and cache.fetches == 1
    assert await cache.get() is first and cache.fetches == 1  # fresh: no call
    now[0] = 61
    assert await cache.get() is first  # stale: served at once, refreshed in the background
    await refresh(cache)
    assert cache.fetches == 2 and cache.metadata is not first
    second = cache.metadata
    now[0] = 200
    backend.fail = True
    assert await cache.get() is second  # a failed refresh keeps the older metadata
    await refresh(cache)
    assert cache.metadata is second and "connection refused" in (cache.error or "")
    now[0] = 210
    await cache.get()
    assert cache.fetches == 3  # no new attempt within retry_after
    now[0] = 231
    backend.fail = False
    await cache.get()
    await refresh(cache)
    assert cache.fetches == 4 and cache.error is None


async def test_concurrent_first_requests_share_one_fetch():
    backend = FakeCiviCRM(2, delay=0.02)
    cache = SpecSource(backend)
    results = await asyncio.gather(*(cache.get() for _ in range(5)))
    assert cache.fetches == 1 and all(r is results[0] for r in results)


async def test_the_document_is_built_lazily_and_cached():
    backend = FakeCiviCRM(2, chains=True)
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0), backend=backend) as gw:
        assert backend.calls == []  # not at start-up
        doc = (await gw.get("/openapi.json")).json()
        calls = len(backend.calls)
        # the entity list, one chained call for both, and the options of a create-only field
        assert calls == 1 + 1 + 2
        assert "/v4/Thing1/create" in doc["paths"]
        again = (await gw.get("/openapi.json")).json()
        assert again == doc and len(backend.calls) == calls


async def test_unreachable_civicrm_falls_back_to_the_generic_document(caplog):
    settings = http_settings(f"http://127.0.0.1:{free_port()}", http_timeout=1)
    caplog.set_level(logging.WARNING, logger="gateway.web.openapi")
    async with gateway_client(settings) as gw:
        response = await gw.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    validate(doc)
    assert all("{entity}" in p for p in doc["paths"] if p.startswith("/v4/") and not p.endswith("/batch"))
    assert "metadata is not available" in doc["info"]["description"]
    assert any("cannot fetch CiviCRM's metadata" in r.getMessage() for r in caplog.records)


async def test_spec_file_documents_civicrm_without_reaching_it(tmp_path, gw_sandbox):
    # a spec file written from the sandbox's real metadata...
    from gateway.services import make_backend

    backend = make_backend(Settings(backend="sandbox", sandbox_demo=0))
    await backend.start()
    try:
        metadata = await fetch_metadata(backend)
    finally:
        await backend.close()
    spec = tmp_path / "civicrm-spec.json"
    save_spec(metadata, spec)
    assert load_spec(spec).entities == json.loads(json.dumps(metadata.entities))
    # ...documents a gateway whose CiviCRM never answers
    down = FakeCiviCRM(fail=True)
    settings = Settings(
        backend="sandbox", sandbox_demo=0, openapi_spec_file=spec, openapi_entities=["Contact", "Email"]
    )
    async with gateway_client(settings, backend=down) as gw:
        doc = (await gw.get("/openapi.json")).json()
    assert down.calls == []
    assert "/v4/Contact/create" in doc["paths"] and "/v4/Email/get" in doc["paths"]
    assert "/v4/Activity/get" not in doc["paths"]  # limited to the configured entities
    assert "spec file civicrm-spec.json" in doc["info"]["description"]


def test_spec_file_errors_are_readable(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(MetadataError, match="not valid JSON"):
        load_spec(bad)
    bad.write_text(json.dumps({"format": "other/9", "entities": []}))
    with pytest.raises(MetadataError, match="unsupported spec format"):
        load_spec(bad)
    with pytest.raises(MetadataError, match="cannot read"):
        load_spec(tmp_path / "missing.json")


async def test_no_secret_in_the_document(upstream, tmp_path):
    """Neither CiviCRM's keys, nor client tokens or their hashes, nor a secret that an
    administrator pasted into a field's description."""
    token = "cgw_client-token-never-in-docs-0123456789"
    planted = Metadata(
        [
            {
                "name": "Contact",
                "actions": [{"name": "get"}],
                "fields": {
                    "get": [
                        {
                            "name": "note",
                            "data_type": "String",
                            "description": f"ask IT; the key is {ADMIN_KEY}",
                            "default_value": SITE_KEY,
                        }
                    ]
                },
            }
        ]
    )
    spec = tmp_path / "planted.json"
    save_spec(planted, spec)
    secrets = [ADMIN_KEY, SITE_KEY, token, hash_token(token)]
    for extra in ({}, {"openapi_spec_file": spec}):
        settings = http_settings(
            upstream.url,
            http_auth="legacy",
            http_site_key=SITE_KEY,
            client_tokens=f"tests:sha256:{hash_token(token)}",
            **extra,
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as gw,
        ):
            response = await gw.get("/openapi.json", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
            assert "/v4/Contact/get" in response.json()["paths"]
            text = response.text + json.dumps(app.openapi())
        for secret in secrets:
            assert secret not in text
    assert f"the key is {MASK}" in text  # the planted one was masked, not dropped silently
