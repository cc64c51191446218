"""A document is put together from each entity's part (its paths, schemas and tag), built as
soon as that entity's metadata has landed and kept by its content. Put together, the parts
must be, byte for byte, the document that one pass over the metadata gives (each entity
claiming its names after the previous ones): what the builder made before it had parts.

``tests/fixtures/openapi-golden-document.json`` holds digests of that document's entity
sections for ``openapi-golden-metadata.json`` (entities of the real 5.77 site, their long
lists trimmed, and made-up ones whose names clash), made by the one-pass builder before parts
existed. A change meant to change the documents rewrites them with
``python -m tests.openapi.test_parts``.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from gateway.flow.clients import ANONYMOUS
from gateway.settings import Settings
from gateway.web.app import create_app
from gateway.web.openapi.document import Skeleton, _apart
from gateway.web.openapi.metadata import Metadata, load_spec
from tests.openapi.bigsite import _sandbox_metadata, write_big_spec
from tests.openapi.test_metadata import FakeCiviCRM

FIXTURES = Path(__file__).parents[1] / "fixtures"
GOLDEN = FIXTURES / "openapi-golden-document.json"
TOKENS = "docs:sha256:" + "0" * 64


def golden_metadata() -> Metadata:
    return load_spec(FIXTURES / "openapi-golden-metadata.json")


def base(auth_required: bool) -> dict[str, Any]:
    app = create_app(
        Settings(backend="sandbox", sandbox_demo=0, client_tokens=TOKENS if auth_required else "")
    )
    return FastAPI.openapi(app)


def sections(auth_required: bool) -> dict[str, Any]:
    """Digests of each entity path and schema, in the document's order, and of the tags."""
    settings = Settings(backend="sandbox", sandbox_demo=0, client_tokens=TOKENS if auth_required else "")
    docs = create_app(settings).state.docs
    skeleton = set(docs.build(None, own_routes=False)["components"]["schemas"])
    doc = docs.build(golden_metadata(), own_routes=False)

    def digest(value: Any) -> str:
        return hashlib.sha256(orjson.dumps(value)).hexdigest()[:16]

    return {
        "paths": {k: digest(v) for k, v in doc["paths"].items()},
        "schemas": {k: digest(v) for k, v in doc["components"]["schemas"].items() if k not in skeleton},
        "tags": digest(doc["tags"]),
    }


@pytest.mark.parametrize("mode", ["tokenless", "tokens"])
def test_the_document_is_what_the_builder_made_before_parts(mode: str) -> None:
    golden = json.loads(GOLDEN.read_text())[mode]
    found = sections(mode == "tokens")
    assert list(found["paths"]) == list(golden["paths"])  # the same paths, in the same order
    assert [p for p in found["paths"] if found["paths"][p] != golden["paths"][p]] == []
    assert list(found["schemas"]) == list(golden["schemas"])
    assert [s for s in found["schemas"] if found["schemas"][s] != golden["schemas"][s]] == []
    assert found["tags"] == golden["tags"]


@pytest.mark.parametrize("which", ["golden", "sandbox", "150 entities"])
def test_parts_put_together_are_the_one_pass_document(which: str, tmp_path: Path) -> None:
    if which == "golden":
        metadata = golden_metadata()
    elif which == "sandbox":
        metadata = asyncio.run(_sandbox_metadata())
    else:
        write_big_spec(tmp_path / "big.json")
        metadata = load_spec(tmp_path / "big.json")
    for auth_required in (False, True):
        built = Skeleton(base(auth_required), auth_required=auth_required, parts_kept=1000)
        one_pass = Skeleton(base(auth_required), auth_required=auth_required)
        expected = orjson.dumps(one_pass.document(metadata, "A note.", one_pass=True))
        assert orjson.dumps(built.document(metadata, "A note.")) == expected
        assert built.parts_made == len(metadata.entities)
        # and again, from the parts kept; its JSON put together from theirs too
        doc, body = built.document_json(metadata, "A note.")
        assert orjson.dumps(doc) == expected and body == expected
        assert built.parts_made == len(metadata.entities)
        # without metadata, or none of its entities: the skeleton's JSON alone
        for none in (None, Metadata([])):
            doc, body = built.document_json(none)
            assert body == orjson.dumps(doc) == orjson.dumps(one_pass.document(none))


def test_names_two_parts_claim_alike_are_given_as_one_pass_gives_them() -> None:
    """Foo.bar_baz and Foo_bar.baz both want the operation id Foo_bar_baz; Foo.barParams and
    FooBar.params the schema FooBarParamsParams: built alone, both parts claim it, so the
    document is built in one pass, where the second comes second."""
    metadata = golden_metadata()
    skeleton = Skeleton(base(False), auth_required=False, parts_kept=100)
    parts = [skeleton.part(ent) for ent in sorted(metadata.entities, key=lambda e: e["name"])]
    assert not _apart(parts)
    doc = skeleton.document(metadata)
    ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert {"Foo_bar_baz", "Foo_bar_baz2"} <= ids
    schemas = doc["components"]["schemas"]
    assert {"FooBarParamsParams", "FooBarParamsParams2"} <= schemas.keys()
    assert skeleton.document_json(metadata)[1] == orjson.dumps(doc)  # one pass: dumped whole
    # Api.v4's params: the name the gateway's own ApiV4Params already has, made unique
    assert schemas["ApiV4Params2"]["description"] == "Params of Api.v4"
    assert doc["paths"]["/v4/Api/v4"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiV4Params2"
    }
    # Without those entities the parts are apart: each part is used as it was built.
    clean = Metadata([e for e in metadata.entities if e["name"] in ("Contact", "Activity", "Payment")])
    assert _apart([skeleton.part(ent) for ent in clean.entities])


def test_a_part_is_made_once_for_the_same_metadata() -> None:
    contact = golden_metadata().entity("Contact")
    assert contact is not None
    skeleton = Skeleton(base(False), auth_required=False, parts_kept=2)
    first = skeleton.part(contact)
    assert skeleton.part(copy.deepcopy(contact)) is first and skeleton.parts_made == 1
    renamed = {**copy.deepcopy(contact), "title": "Person"}
    assert skeleton.part(renamed) is not first and skeleton.parts_made == 2
    assert skeleton.part(renamed).tag == {"name": "Contact", "description": first.tag["description"]}  # type: ignore[index]
    skeleton.part({**contact, "title": "Someone"})  # a third: the least recently used goes
    assert skeleton.part(contact) is not first and skeleton.parts_made == 4


async def test_each_entity_s_part_is_built_as_its_group_lands(tmp_path: Path) -> None:
    """With the documents built at start-up, each group's entities are described as soon as
    the group's answer is in, while later groups are still being fetched; the document then
    finds every part made."""
    backend = FakeCiviCRM(35, chains=True, delay=0.02)
    settings = Settings(
        backend="sandbox",
        sandbox_db=str(tmp_path / "civi.sqlite"),
        sandbox_demo=0,
        state_dir=tmp_path / "state",
        openapi_prebuild=True,
    )
    app = create_app(settings, backend=backend)
    docs = app.state.docs
    docs.serving()
    told: list[int] = []  # how many entities, as each group landed
    described = docs.source.on_described
    assert described is not None

    def landed(entities: list[dict[str, Any]]) -> None:
        told.append(len(entities))
        described(entities)

    docs.source.on_described = landed
    made_before: list[int] = []
    skeleton = docs._skeleton()
    assemble = skeleton._assembled

    def spy(*args: Any, **kwargs: Any) -> Any:
        made_before.append(skeleton.parts_made)
        return assemble(*args, **kwargs)

    skeleton._assembled = spy  # type: ignore[method-assign]
    async with app.router.lifespan_context(app):
        assert docs._task is not None
        await docs._task
        built = await docs.full(ANONYMOUS)
    assert sorted(told) == [5, 10, 10, 10]  # each group as it landed
    assert made_before[0] == 35 and skeleton.parts_made == 35  # each part made once, ahead
    assert orjson.loads(built.body)["paths"].keys() >= {f"/v4/Thing{i}/get" for i in range(35)}


if __name__ == "__main__":  # rewrite the golden digests (a change meant to change the documents)
    GOLDEN.write_text(json.dumps({"tokenless": sections(False), "tokens": sections(True)}, indent=1) + "\n")
    print(f"written: {GOLDEN}")
