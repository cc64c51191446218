"""The answer check through HTTP (issue 25, item 4): a stand-in CiviCRM (the sandbox's wire
server, with answers altered on the way) that answers more than the call asked for, or the
gateway's own API key, gets a 502 upstream-unexpected-answer; the key names are logged, the
values are not."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import ADMIN_KEY, ThreadServer, assert_problem, gateway_client, http_settings

Alter = Callable[[str, dict[str, Any]], None]


class Altering:
    """Passes every call to the sandbox and lets ``alter(path, answer)`` change its JSON."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.alter: Alter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        alter = self.alter
        if scope["type"] != "http" or alter is None or "/getFields" in scope["path"]:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        body = b""

        async def collect(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
            else:
                body += message.get("body", b"")
                if not message.get("more_body"):
                    answer = orjson.loads(body)
                    alter(scope["path"], answer)
                    content = orjson.dumps(answer)
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(content)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, collect)


@pytest.fixture
def altering(sandbox: Any) -> Iterator[tuple[Altering, str]]:
    from gateway.sandbox.wire import WireConfig, create_wire_app

    sandbox.api4("Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Ann"}})
    app = Altering(create_wire_app(sandbox, WireConfig(api_keys={ADMIN_KEY: 2})))
    server = ThreadServer(app).start()
    yield app, server.url
    server.stop()


def each_record(extra: dict[str, Any]) -> Alter:
    def alter(path: str, answer: dict[str, Any]) -> None:
        if path.endswith("/Contact/get"):
            envelopes = [answer]
        elif path.endswith("/api4"):  # the multi-call form a batch goes in
            envelopes = [a for a in answer.values() if isinstance(a, dict)]
        else:
            return
        for envelope in envelopes:
            for record in envelope.get("values", []):
                record.update(extra)

    return alter


GET = {"select": ["display_name"], "limit": 5}


async def test_a_legitimate_answer_passes(altering: tuple[Altering, str]) -> None:
    _, url = altering
    async with gateway_client(http_settings(url)) as gw:
        answer = await gw.post("/v4/Contact/get", json=GET)
    assert answer.status_code == 200, answer.text
    assert answer.json() and all(set(r) <= {"id", "display_name"} for r in answer.json())


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"first_name": "Ann"}, "first_name"),  # a field the call did not select
        ({"UPPER:last_name": "X"}, "UPPER:last_name"),  # an expression it did not ask for
        ({"em": [{"id": 1}]}, "em"),  # a chain it did not send
    ],
)
async def test_an_answer_with_a_key_the_call_did_not_ask_for_is_502(
    altering: tuple[Altering, str], caplog: pytest.LogCaptureFixture, extra: dict[str, Any], named: str
) -> None:
    app, url = altering
    app.alter = each_record(extra)
    async with gateway_client(http_settings(url)) as gw:
        with caplog.at_level(logging.WARNING, logger="gateway.core.answercheck"):
            answer = await gw.post("/v4/Contact/get", json=GET)
            batch = await gw.post("/v4/batch", json={"a": ["Contact", "get", GET]})
    body = assert_problem(answer, 502, "upstream-unexpected-answer")
    assert named in body["detail"] and "Ann" not in answer.text
    # In a batch it fails the whole batch (routes/batch.py shapes members after the call).
    assert_problem(batch, 502, "upstream-unexpected-answer")
    assert "Ann" not in batch.text
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.core.answercheck"]
    assert logged and named in logged[0] and "Ann" not in "".join(logged)


async def test_the_gateways_own_key_is_never_passed_on(
    altering: tuple[Altering, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Anywhere: a selected field's value, a key of an index-keyed chained result."""
    app, url = altering
    async with gateway_client(http_settings(url)) as gw:
        app.alter = each_record({"display_name": f"key: {ADMIN_KEY}"})
        with caplog.at_level(logging.WARNING, logger="gateway.core.answercheck"):
            answer = await gw.post("/v4/Contact/get", json=GET)
        assert_problem(answer, 502, "upstream-unexpected-answer")
        assert ADMIN_KEY not in answer.text and ADMIN_KEY not in caplog.text

        chained = {**GET, "chain": {"e": ["Email", "get", {"select": ["email"]}, "email"]}}
        app.alter = each_record({"e": {ADMIN_KEY: {"email": "x@example.org"}}})
        answer = await gw.post("/v4/Contact/get", json=chained)
        assert_problem(answer, 502, "upstream-unexpected-answer")
        assert ADMIN_KEY not in answer.text

        app.alter = each_record({"e": {"x@example.org": {"email": "x@example.org"}}})
        answer = await gw.post("/v4/Contact/get", json=chained)
        assert answer.status_code == 200, answer.text


async def test_a_chained_result_of_the_wrong_shape_is_502(altering: tuple[Altering, str]) -> None:
    app, url = altering
    chained = {**GET, "chain": {"e": ["Email", "get", {"select": ["email"]}]}}
    app.alter = each_record({"e": {"a@example.org": {"email": "a@example.org"}}})  # keyed, no index
    async with gateway_client(http_settings(url)) as gw:
        assert_problem(await gw.post("/v4/Contact/get", json=chained), 502, "upstream-unexpected-answer")


async def test_exported_pages_are_checked_too(altering: tuple[Altering, str]) -> None:
    """An export streams page by page: a page holding what the call did not ask for ends the
    stream before that page, with nothing of it passed on."""
    app, url = altering
    app.alter = each_record({"first_name": "Ann"})
    async with gateway_client(http_settings(url)) as gw:
        try:
            answer = await gw.post("/v4/Contact/get?format=ndjson", json=GET)
            text = answer.text
        except Exception:  # the stream was cut after its headers: nothing of the page came
            text = ""
    assert "Ann" not in text


async def test_fields_civicrm_adds_by_itself_are_dropped(altering: tuple[Altering, str]) -> None:
    """Note.get with a select: CiviCRM 5.77 adds privacy, entity_table, entity_id and contact_id
    (for a deprecated hook); they were not asked for, so the client does not get them."""
    app, url = altering

    def notes(path: str, answer: dict[str, Any]) -> None:
        if path.endswith("/Note/get"):
            answer["values"] = [
                {
                    "id": 1,
                    "note": "n",
                    "privacy": 0,
                    "entity_table": "civicrm_contact",
                    "entity_id": 2,
                    "contact_id": 2,
                }
            ]

    app.alter = notes
    async with gateway_client(http_settings(url)) as gw:
        answer = await gw.post("/v4/Note/get", json={"select": ["note"]})
        asked = await gw.post("/v4/Note/get", json={"select": ["note", "entity_id"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"id": 1, "note": "n"}]
    assert asked.json() == [{"id": 1, "note": "n", "entity_id": 2}]
