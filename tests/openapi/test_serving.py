"""How the documents are served: gzip (and what is never gzipped), the metadata kept in the
state directory between restarts, and the documents built in the background at start-up."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import orjson

from gateway.backends.base import Backend
from gateway.core.call import Call
from gateway.core.results import Records
from gateway.flow.clients import ANONYMOUS
from gateway.settings import Settings
from gateway.web.app import create_app
from gateway.web.openapi import ASSETS
from tests.conftest import gateway_client
from tests.openapi.test_metadata import FakeCiviCRM

GZIP = {"Accept-Encoding": "gzip"}
PLAIN = {"Accept-Encoding": "identity"}


async def raw_get(gw: httpx.AsyncClient, path: str, headers: dict[str, str]) -> tuple[httpx.Headers, bytes]:
    """The answer's headers and its bytes as sent (not decoded by httpx)."""
    async with gw.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, path
        return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])


async def test_document_assets_and_large_answers_are_gzipped():
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=40)) as gw:
        headers, body = await raw_get(gw, "/openapi.json", GZIP)
        assert headers["content-encoding"] == "gzip"
        document = json.loads(gzip.decompress(body))
        plain_headers, plain = await raw_get(gw, "/openapi.json", PLAIN)
        assert "content-encoding" not in plain_headers and json.loads(plain) == document
        assert len(body) * 5 < len(plain)

        headers, body = await raw_get(gw, f"{ASSETS}/swagger-ui-bundle.js", GZIP)
        assert headers["content-encoding"] == "gzip"
        assert b"SwaggerUIBundle" in gzip.decompress(body)

        headers, body = await raw_get(gw, "/v4/Contact/get?limit=30", GZIP)
        assert headers["content-encoding"] == "gzip" and headers["x-result-count"] == "30"
        assert len(json.loads(gzip.decompress(body))) == 30
        # small answers go out as they are
        headers, body = await raw_get(gw, "/v4/Contact/get?limit=1&select=id", GZIP)
        assert "content-encoding" not in headers and len(json.loads(body)) == 1


async def test_streamed_answers_are_never_gzipped():
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=40, export_page_size=5)) as gw:
        for path, kind in (
            ("/v4/Contact/get?format=ndjson", "application/x-ndjson"),
            ("/v4/Contact/get?format=csv", "text/csv"),
            ("/v4/Contact/get", "application/json"),
        ):
            headers, body = await raw_get(gw, path, GZIP)
            assert headers["content-type"].startswith(kind), path
            assert "content-encoding" not in headers, path
            if kind == "application/json":
                assert headers["x-streamed"] == "true"
                assert len(json.loads(body)) == 42  # 40 demo contacts, the domain and admin
            else:
                assert len(body.splitlines()) >= 42, path


class SlowCiviCRM(Backend):
    """Metadata calls that never finish in the test's time, counted."""

    name = "slow"

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_metadata_kept_between_restarts_and_documents_built_at_start(tmp_path):
    settings = Settings(
        backend="sandbox",
        sandbox_db=str(tmp_path / "civi.sqlite"),
        sandbox_demo=0,
        state_dir=tmp_path / "state",
    )
    embedded = create_app(settings)  # in another program: no background work, no file
    assert not embedded.state.docs.prebuild and embedded.state.docs.source.cache_file is None
    app = create_app(settings)
    docs = app.state.docs
    docs.serving()  # what gateway.web.app.app_factory (civicrm-gateway serve) does
    assert docs.prebuild  # on by default for a server on a sandbox on a file
    async with app.router.lifespan_context(app):
        assert docs._task is not None
        await docs._task  # the background build, started with the app
        built = await docs.full(ANONYMOUS)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as gw:
            served = await gw.get("/openapi.json")
        assert served.json()["paths"].keys() == built.doc["paths"].keys()
        assert docs._building == {}  # answered from what start-up built, nothing built anew
    saved = json.loads((tmp_path / "state" / "openapi-metadata.json").read_text())
    assert "Contact" in [e["name"] for e in saved["entities"]] and saved["site"]

    # Restarted with a CiviCRM that does not answer: the saved metadata is served at once,
    # and a refresh is under way.
    slow = SlowCiviCRM()
    again = create_app(settings, backend=slow)
    again.state.docs.serving()
    async with (
        again.router.lifespan_context(again),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://localhost") as gw,
    ):
        doc = (await asyncio.wait_for(gw.get("/openapi.json"), timeout=30)).json()
        assert "/v4/Contact/create" in doc["paths"]
        assert "saved" in doc["info"]["description"]
        assert slow.calls >= 1

    # A gateway pointed at another site ignores it.
    elsewhere = create_app(
        settings.model_copy(update={"sandbox_db": str(tmp_path / "b.sqlite"), "openapi_prebuild": False}),
        backend=SlowCiviCRM(),
    )
    assert elsewhere.state.docs.source.site != again.state.docs.source.site
    elsewhere.state.docs.source._load_cache()
    assert elsewhere.state.docs.source.metadata is None


class SlowStart(FakeCiviCRM):
    """A backend that takes a moment to start and records whether a call came before."""

    def __init__(self) -> None:
        super().__init__(3, chains=True)
        self.started = False
        self.early: list[tuple[str, str]] = []
        self.prebuild_running_at_start = False
        self.app: Any = None

    async def start(self) -> None:
        await asyncio.sleep(0.2)
        self.prebuild_running_at_start = self.app.state.docs._task is not None
        self.started = True

    async def call(self, call: Call, *, identity: Any = None) -> Records:
        if not self.started:
            self.early.append((call.entity, call.action))
        return await super().call(call, identity=identity)


async def test_the_warm_up_begins_with_the_backend_s_start_and_asks_it_once_started(tmp_path):
    """At start-up the documents' warm-up is under way while the backend starts (on cv and
    pipe its own workers boot alongside the clients'); the backend itself is asked only once
    it has started."""
    backend = SlowStart()
    settings = Settings(
        backend="sandbox",
        sandbox_db=str(tmp_path / "civi.sqlite"),
        sandbox_demo=0,
        state_dir=tmp_path / "state",
        openapi_prebuild=True,
    )
    app = backend.app = create_app(settings, backend=backend)
    app.state.docs.serving()
    async with app.router.lifespan_context(app):
        await app.state.docs._task
        built = await app.state.docs.full(ANONYMOUS)
    assert backend.prebuild_running_at_start and backend.early == []
    assert "/v4/Thing2/get" in orjson.loads(built.body)["paths"]


async def test_no_disk_cache_nor_prebuild_for_a_server_on_the_in_memory_sandbox(tmp_path):
    settings = Settings(backend="sandbox", sandbox_demo=0, state_dir=tmp_path / "state")
    app = create_app(settings)
    app.state.docs.serving()
    assert not app.state.docs.prebuild and app.state.docs.source.cache_file is None
    async with app.router.lifespan_context(app):
        assert app.state.docs._task is None


def test_a_large_document_is_gzipped_in_two_pieces_into_one_gzip_stream():
    """A whole site's document is compressed in halves on two threads: still one gzip member
    that any reader decompresses whole (a streaming one, as browsers and httpx do, too)."""
    import zlib

    from gateway.web import openapi

    body = orjson.dumps(
        [{"path": f"/v4/Thing{i}/get", "n": i, "text": "x" * (i % 97)} for i in range(40_000)]
    )
    assert len(body) > openapi.GZIP_PIECES_FROM
    packed = openapi._gzip(body)
    assert gzip.decompress(packed) == body
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    streamed = b"".join(reader.decompress(packed[i : i + 4096]) for i in range(0, len(packed), 4096))
    assert streamed + reader.flush() == body and reader.eof and not reader.unused_data
    assert len(packed) < len(gzip.compress(body, 6)) * 1.05  # the halves cost next to nothing
    small = b'{"a": 1}' * 10
    assert openapi._gzip(small) == gzip.compress(small, openapi.GZIP_LEVEL, mtime=0)


def test_the_served_bytes_name_the_base_url():
    from gateway.web.openapi import Built
    from gateway.web.openapi.samples import BASE_URL

    built = Built({"servers": [{"url": BASE_URL}], "x": f"curl {BASE_URL}/v4/Contact/get"})
    plain, packed = built.for_base("https://crm.example.org/gw")
    assert orjson.loads(plain) == {
        "servers": [{"url": "https://crm.example.org/gw"}],
        "x": "curl https://crm.example.org/gw/v4/Contact/get",
    }
    assert gzip.decompress(packed) == plain


def test_a_document_is_serialised_once_and_never_carries_a_secret():
    """The last guard: a document is searched for the gateway's secrets in its JSON, and
    only one that holds one is walked and masked; a secret JSON writes otherwise than as it
    is (a quote, a backslash) is looked for by the walk."""
    from gateway.core.redact import MASK
    from gateway.web.openapi import Built

    doc = {"info": {"description": "Ask Ada"}, "x": ["the key is s3cret-key-1234", 'a "quoted\\" one']}
    clean = Built.guarded(doc, ["other-secret-5678", ""])
    assert clean.doc is doc and clean.body == orjson.dumps(doc)
    masked = Built.guarded(doc, ["s3cret-key-1234"])
    assert masked.doc["x"][0] == f"the key is {MASK}" and b"s3cret" not in masked.body
    quoted = Built.guarded(doc, ['"quoted\\"'])
    assert quoted.doc["x"][1] == f"a {MASK} one" and orjson.loads(quoted.body) == quoted.doc


async def test_a_forged_host_header_does_not_reach_the_document():
    # Tokenless, a Host that is not a loopback name is refused outright (DNS rebinding).
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0)) as gw:
        refused = await gw.get("/openapi/generic.json", headers={"Host": "evil.example"})
    assert refused.status_code == 403
    # With tokens every Host is served: a forged one still never reaches the document.
    tokens = "docs:sha256:" + "0" * 64
    async with gateway_client(Settings(backend="sandbox", sandbox_demo=0, client_tokens=tokens)) as gw:
        doc = (await gw.get("/openapi/generic.json", headers={"Host": 'evil.example"><script>'})).json()
    assert doc["servers"][0]["url"] == "http://127.0.0.1:8000"


def test_a_document_built_in_a_thread_lets_the_event_loop_take_the_gil_back_soon():
    """While a build runs, Python's switch interval is lowered (clients' calls are not held
    up behind a large site's build) and the garbage collector waits (a build makes a million
    objects, none of them garbage); both are restored once no build runs. The build serves
    its bytes once for the base URL asked, gzipped, so the first reader finds them made."""
    import gc
    import sys

    from gateway.web import openapi

    before = sys.getswitchinterval()
    seen: list[tuple[float, bool]] = []

    def make() -> tuple[dict, bytes]:
        seen.append((sys.getswitchinterval(), gc.isenabled()))
        return {"openapi": "3.1.0"}, b'{"openapi":"3.1.0"}'

    assert gc.isenabled()
    built = openapi._build(make, "http://127.0.0.1:8000")
    assert built.body == b'{"openapi":"3.1.0"}'
    assert seen == [(min(openapi.BUILD_SWITCH_INTERVAL, before), False)] and seen[0][0] < before
    assert sys.getswitchinterval() == before and gc.isenabled()
    assert list(built._served) == ["http://127.0.0.1:8000"]
    # A program that turned the collector off itself finds it off afterwards.
    gc.disable()
    try:
        openapi._build(make)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_documents_are_built_on_a_thread_of_lower_priority():
    """The builds' thread runs niced (Linux: per thread), so a client's call gets the CPU
    first; the event loop's own thread keeps its priority."""
    import os
    import threading

    from gateway.web import openapi

    seen: list[tuple[int, int]] = []

    def make() -> tuple[dict, bytes]:
        me = threading.get_native_id()
        seen.append((me, os.getpriority(os.PRIO_PROCESS, me)))
        return {}, b"{}"

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    await openapi._build_soon(make)
    ((thread, nice),) = seen
    assert thread != threading.get_native_id()
    assert nice == min(19, mine + openapi.BUILD_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
