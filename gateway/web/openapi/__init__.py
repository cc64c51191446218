"""The OpenAPI document built from CiviCRM's own metadata, and offline /docs and /redoc.

Where the metadata comes from (the backend, a spec file, or the copy a previous run kept in
``state_dir``) is :mod:`.metadata`'s job; how a document describes it, :mod:`.document`'s and
:mod:`.paths`'. Here the documents are served:

- ``/openapi.json``: everything the reader may call. A reader is a client (its token decides
  which entities, actions and fields it sees, :mod:`.views`), or nobody (token mode, no
  token): then the generic routes only, or a 401 (``CIVI_GATEWAY_OPENAPI_ANONYMOUS``).
- ``/openapi/{Entity}.json``: one entity's operations; ``/openapi/index.json`` lists the
  entities the reader may see; ``/openapi/generic.json`` the gateway's own routes.
  ``/docs`` and ``/redoc`` load one of these at a time, so a site with hundreds of entities
  opens at once.

Each document is serialised once and kept by what it depends on (the metadata, and the view
key: what the reader may see and its CiviCRM identity), with its gzipped bytes per base URL.
The metadata is fetched and the documents of the configured clients built in the background
at start-up (``CIVI_GATEWAY_OPENAPI_PREBUILD``), so no reader waits for CiviCRM.

The pages load Swagger UI and ReDoc from the ``fastapi-offline`` package's static files, served
by the gateway itself under ``/docs-assets/``; their Content-Security-Policy lets the browser
fetch nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import hashlib
import html
import logging
import os
import re
import struct
import sys
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from gateway.core.errors import GatewayError
from gateway.core.params import NAME_RE
from gateway.core.redact import Redactor
from gateway.web.openapi.document import Skeleton
from gateway.web.openapi.metadata import Metadata, SpecSource
from gateway.web.openapi.samples import BASE_URL
from gateway.web.openapi.views import identity_digest, narrow, view_key

if TYPE_CHECKING:
    from gateway.backends import Backend
    from gateway.core.policy import Policy
    from gateway.flow.clients import Authenticator, Client
    from gateway.settings import Settings

log = logging.getLogger("gateway.web.openapi")
ASSETS = "/docs-assets"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


# ReDoc 2 shows Redocly's logo from their CDN, unconditionally; its bundle is served with that
# one image swapped for an empty inline one, so the page fetches nothing from elsewhere.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


# The large assets, served from memory with their gzipped bytes made once (the others, small,
# by StaticFiles): media type of each.
BUNDLES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
}


@cache
def bundle(name: str) -> tuple[bytes, bytes, str]:
    """One of :data:`BUNDLES` (ReDoc's without its external logo), gzipped, and its ETag."""
    body = (files("fastapi_offline") / "static" / name).read_bytes()
    if name == "redoc.standalone.js":
        body = body.replace(REDOC_LOGO, EMPTY_IMAGE)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, gzip.compress(body, GZIP_LEVEL, mtime=0), etag


# The base URL a document names (servers, code samples): scheme, a host name or address with
# an optional port, and the proxy's path prefix; anything else falls back to the settings'.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
_PLACEHOLDER = BASE_URL.encode()
# Documents kept at once (each view of the whole site, and each entity of each view).
DOCUMENTS_KEPT = 256
# Entities' parts of documents kept (see document.Skeleton): every view of a large site's.
PARTS_KEPT = 2048
BASE_URLS_KEPT = 4
GZIP_LEVEL = 6
# Seconds a thread building a document holds the GIL before the event loop may take it.
BUILD_SWITCH_INTERVAL = 0.0005
# How much lower the thread building documents runs (nice(1)).
BUILD_NICE = 10


class Built:
    """One document, serialised once; its bytes for each base URL it was served under, plain
    and gzipped, made once each."""

    def __init__(self, doc: dict[str, Any], body: bytes | None = None) -> None:
        self.doc = doc
        self.body = orjson.dumps(doc) if body is None else body
        self._served: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    @classmethod
    def guarded(cls, doc: dict[str, Any], secrets: list[str], body: bytes | None = None) -> Built:
        """``doc`` (whose JSON ``body`` is, when given) with every secret masked (it carries
        text a CiviCRM administrator wrote: a last guard), serialised once: its JSON is
        searched for them, and only a document that holds one is walked (as
        :meth:`Redactor.json` does, keeping the bytes)."""
        body = orjson.dumps(doc) if body is None else body
        secrets = [s for s in secrets if s]
        if not secrets:
            return cls(doc, body)
        redactor = Redactor(secrets)
        # A secret is found in the JSON text as it is only if JSON writes it as itself.
        if all(orjson.dumps(s)[1:-1] == s.encode() for s in secrets) and not redactor.found_in(body.decode()):
            return cls(doc, body)
        return cls(redactor.json(doc))

    def for_base(self, base: str) -> tuple[bytes, bytes]:
        found = self._served.get(base)
        if found is None:
            body = self.body.replace(_PLACEHOLDER, base.encode())
            found = self._served[base] = (body, _gzip(body))
            while len(self._served) > BASE_URLS_KEPT:
                self._served.popitem(last=False)
        return found


# Bodies at least this large are gzipped in pieces, on two threads (see _gzip).
GZIP_PIECES_FROM = 1 << 20
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0
_gzipper: ThreadPoolExecutor | None = None


def _gzip(body: bytes) -> bytes:
    """``body`` gzipped. A large one (a site's whole document: 6 MB, 65 ms) in two halves at
    once, as pigz does: one gzip member whose deflate stream is the first half's, ended on a
    byte boundary (a sync flush), then the second half's, begun afresh (zlib lets go of the
    GIL: the halves take a core each)."""
    global _gzipper
    if len(body) < GZIP_PIECES_FROM:
        return gzip.compress(body, GZIP_LEVEL, mtime=0)
    if _gzipper is None:
        _gzipper = ThreadPoolExecutor(1, "openapi-gzip", initializer=_lower_priority)
    half = len(body) // 2

    def deflate(piece: bytes, last: bool) -> bytes:
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        return packer.compress(piece) + packer.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    second = _gzipper.submit(deflate, body[half:], True)
    first = deflate(body[:half], False)
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, first, second.result(), trailer))


class _Building:
    """While documents are built in a thread (a large site's takes a second or more of pure
    Python), the event loop's thread gets the GIL back within :data:`BUILD_SWITCH_INTERVAL`
    instead of Python's 5 ms: the calls clients make meanwhile are not held up behind it.
    And the cyclic garbage collector waits: a build makes a million small dicts and lists,
    none of them garbage, which would set it off over and over, each time walking every
    object of the process (a third of a build's time)."""

    _lock = threading.Lock()
    _building = 0
    _saved = 0.0
    _collecting = False

    def __enter__(self) -> None:
        with self._lock:
            if _Building._building == 0:
                _Building._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(BUILD_SWITCH_INTERVAL, _Building._saved))
                _Building._collecting = gc.isenabled()
                gc.disable()
            _Building._building += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            _Building._building -= 1
            if _Building._building == 0:
                sys.setswitchinterval(_Building._saved)
                if _Building._collecting:
                    gc.enable()


def _build(
    make: Callable[[], tuple[dict[str, Any], bytes]],
    base: str | None = None,
    secrets: list[str] | None = None,
) -> Built:
    with _Building():
        doc, body = make()
        built = Built.guarded(doc, secrets or [], body)
    if base is not None:  # the bytes the first reader most likely asks for (zlib frees the GIL)
        built.for_base(base)
    return built


def _in_build(work: Callable[[], None]) -> None:
    with _Building():
        work()


def _lower_priority() -> None:
    """Run this thread (Linux: a task of its own) at a lower CPU priority: a build competes
    with the clients' calls for the cores, and it is the one that can wait."""
    with contextlib.suppress(OSError, AttributeError):
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + BUILD_NICE))


_builder: ThreadPoolExecutor | None = None


def _builder_thread() -> ThreadPoolExecutor:
    """The builds' own low-priority thread (one at a time: with the GIL, two builds would
    not run faster side by side)."""
    global _builder
    if _builder is None:
        _builder = ThreadPoolExecutor(1, "openapi-build", initializer=_lower_priority)
    return _builder


def _build_soon(
    make: Callable[[], tuple[dict[str, Any], bytes]],
    base: str | None = None,
    secrets: list[str] | None = None,
) -> asyncio.Future[Built]:
    """``make``'s document built on the builds' thread, ``secrets`` masked (and served once
    for ``base``)."""
    return asyncio.get_running_loop().run_in_executor(_builder_thread(), _build, make, base, secrets)


def _site(settings: Settings) -> str:
    """Where the backend points, as a digest: what a saved copy of the metadata describes."""
    parts = [
        settings.backend,
        settings.http_url or "",
        settings.cv_context or "",
        settings.cv_cwd or "",
        settings.sandbox_db_path,
        ",".join(settings.openapi_entities),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _auto(setting: bool | None, settings: Settings, server: bool) -> bool:
    """As set; unset: on in a server process (``serve``), except on the in-memory sandbox
    (nothing to wait for), and off for an app embedded in another program (or a test), which
    gets no background work and no file it did not ask for."""
    if setting is not None:
        return setting
    return server and not (settings.backend == "sandbox" and settings.sandbox_db == ":memory:")


class Docs:
    """Builds, caches and serves the documents of one app."""

    def __init__(
        self, app: FastAPI, backend: Backend | None, settings: Settings, authenticator: Authenticator
    ) -> None:
        self.app = app
        self.settings = settings
        self.authenticator = authenticator
        self.source = SpecSource(
            backend,
            ttl=settings.openapi_cache_ttl,
            spec_file=settings.openapi_spec_file,
            entities=settings.openapi_entities,
            site=_site(settings),
        )
        self.prebuild = False
        self.serving(False)
        # The base URL the gateway listens at: the one a document is first served for, ahead.
        self._base = f"http://{settings.host}:{settings.port}"
        self._generic: dict[str, Any] | None = None
        self._built: OrderedDict[str, Built] = OrderedDict()
        self._building: dict[str, asyncio.Future[Built]] = {}
        self._metadata: Metadata | None = None
        self._task: asyncio.Task[None] | None = None
        # narrow() and view_key() of each policy object for the current metadata
        self._views: dict[tuple[int, str], tuple[Policy, str, Metadata | None]] = {}
        # What the documents share, with and without the gateway's own routes (built on
        # first use, in the builds' thread: FastAPI's description of the routes takes a moment)
        self._skeletons: dict[tuple[bool, bool], Skeleton] = {}
        self._skeleton_lock = threading.Lock()
        self._parts_pending: set[asyncio.Future[None]] = set()

    def serving(self, server: bool = True) -> None:
        """Whether this app is a server process (``gateway.web.app.app_factory`` says so): the
        unset settings for the start-up build and the metadata copy follow from it."""
        settings = self.settings
        self.prebuild = _auto(settings.openapi_prebuild, settings, server)
        keep = _auto(settings.openapi_disk_cache, settings, server)
        self.source.cache_file = (
            settings.state_dir / "openapi-metadata.json"
            if keep and settings.openapi_spec_file is None
            else None
        )
        # Building ahead: each entity's part of the documents as soon as its metadata lands.
        self.source.on_described = self._described if self.prebuild else None

    @property
    def auth_required(self) -> bool:
        # Without client tokens the gateway serves loopback callers (or anyone, if allowed)
        return self.authenticator.enabled

    def _secrets(self) -> list[str]:
        values = list(self.settings.secret_values)
        for client in self.authenticator.clients:
            if client.identity is not None and client.identity.api_key:
                values.append(client.identity.api_key)
        return values

    # --- building ------------------------------------------------------------------------
    def _skeleton(self, own_routes: bool = True) -> Skeleton:
        auth_required = self.auth_required
        with self._skeleton_lock:
            found = self._skeletons.get((own_routes, auth_required))
            if found is None:
                base = FastAPI.openapi(self.app)  # FastAPI's own description of the routes, cached
                if not own_routes:
                    base = {**base, "paths": {}}
                # Entities' parts kept: those of every view of the site, and more.
                found = self._skeletons[own_routes, auth_required] = Skeleton(
                    base, auth_required=auth_required, parts_kept=PARTS_KEPT if own_routes else 0
                )
            return found

    def _document(
        self, metadata: Metadata | None, note: str | None = None, *, own_routes: bool = True
    ) -> tuple[dict[str, Any], bytes]:
        """The document as built and its JSON, before the last guard against secrets
        (:meth:`Built.guarded`)."""
        return self._skeleton(own_routes).document_json(metadata, note)

    def build(
        self, metadata: Metadata | None, note: str | None = None, *, own_routes: bool = True
    ) -> dict[str, Any]:
        doc = self._skeleton(own_routes).document(metadata, note)
        # The document carries metadata text a CiviCRM administrator wrote: a last guard.
        redacted: dict[str, Any] = Redactor(self._secrets()).json(doc)
        return redacted

    def _described(self, entities: list[dict[str, Any]]) -> None:
        """Some entities' metadata has landed while the rest is still being fetched: their
        parts of the documents of the readers built at start-up are built now, in the builds'
        thread, and found there when the documents are."""
        readers = [c for c in self.readers_to_prebuild() if c is not None]
        some = Metadata(entities)
        views = [narrow(some, client.policy).entities for client in readers]

        def build_parts() -> None:
            skeleton = self._skeleton()
            for view in views:
                for ent in view:
                    skeleton.part(ent).json  # noqa: B018 (serialised ahead, kept on the part)

        pending = asyncio.get_running_loop().run_in_executor(_builder_thread(), _in_build, build_parts)
        self._parts_pending.add(pending)
        pending.add_done_callback(self._parts_built)

    def _parts_built(self, pending: asyncio.Future[None]) -> None:
        self._parts_pending.discard(pending)
        if not pending.cancelled() and pending.exception() is not None:  # built again with the document
            log.warning("OpenAPI: building entities' parts ahead failed: %r", pending.exception())

    def generic(self) -> dict[str, Any]:
        """The document without CiviCRM's metadata (what ``app.openapi()`` answers)."""
        if self._generic is None:
            self._generic = self.build(None)
        return self._generic

    async def _metadata_now(self) -> tuple[Metadata | None, str | None]:
        metadata = await self.source.get()
        if metadata is not self._metadata:  # new metadata: every document is out of date
            self._metadata = metadata
            self._built.clear()
            self._views.clear()
        note = None
        if metadata is None:
            note = (
                "CiviCRM's metadata is not available ("
                + (self.source.error or "unknown")
                + "), so only the generic routes are described."
            )
        return metadata, note

    async def _get(self, key: str, make: Callable[[], tuple[dict[str, Any], bytes]]) -> Built:
        """The document under ``key``, built once (in a thread: a large site's takes a
        moment) however many readers ask at the same time."""
        found = self._built.get(key)
        if found is not None:
            self._built.move_to_end(key)
            return found
        pending = self._building.get(key)
        if pending is None:
            pending = self._building[key] = _build_soon(make, self._base, self._secrets())
            pending.add_done_callback(lambda _: self._building.pop(key, None))
        built = await asyncio.shield(pending)
        self._built[key] = built
        while len(self._built) > DOCUMENTS_KEPT:
            self._built.popitem(last=False)
        return built

    async def _view(self, client: Client | None) -> tuple[str, Metadata | None, str | None]:
        """The metadata ``client`` may see (None: a reader without a token sees none) and
        the key of its documents."""
        metadata, note = await self._metadata_now()
        if client is None:
            if metadata is not None:
                note = (
                    "Send your client token (Authorize) to see the entities and actions "
                    "you may call; without one, only the generic routes are described."
                )
            return view_key(None, None), None, note
        # Worked out once per policy object (clients keep theirs for the process's life), for
        # each reader is asked on every request.
        memo = (id(client.policy), identity_digest(client))
        found = self._views.get(memo)
        if found is None or found[0] is not client.policy:
            narrowed = narrow(metadata, client.policy) if metadata is not None else None
            found = self._views[memo] = (client.policy, view_key(narrowed, client), narrowed)
        return found[1], found[2], note

    async def full(self, client: Client | None) -> Built:
        key, narrowed, note = await self._view(client)
        return await self._get(f"{key}/*", lambda: self._document(narrowed, note))

    async def generic_for(self, client: Client | None) -> Built:
        key, _, note = await self._view(client)
        return await self._get(f"{key}/generic", lambda: self._document(None, note))

    async def entity(self, client: Client | None, name: str) -> Built | None:
        key, narrowed, _ = await self._view(client)
        if narrowed is None or narrowed.entity(name) is None:
            return None
        one = narrowed.only([name])
        return await self._get(f"{key}/{name}", lambda: self._document(one, own_routes=False))

    async def narrowed(self, client: Client) -> list[dict[str, Any]] | None:
        """The entities ``client`` may see, with the actions and fields its policy lets it use
        (the MCP face's metadata); None while CiviCRM's metadata is not available."""
        _, narrowed, _ = await self._view(client)
        return narrowed.entities if narrowed is not None else None

    async def entities(self, client: Client | None) -> list[str]:
        _, narrowed, _ = await self._view(client)
        return sorted(e["name"] for e in narrowed.entities) if narrowed is not None else []

    # --- readers -------------------------------------------------------------------------
    async def reader(self, request: Request) -> Client | None:
        """Who reads: a client, or None for a reader without a token (token mode).

        A wrong token is a 401, as on any call; no token is the anonymous reader, refused
        when ``CIVI_GATEWAY_OPENAPI_ANONYMOUS=none``."""
        from gateway.web.calls import authenticate

        authenticator = self.authenticator
        if authenticator.enabled and "authorization" not in request.headers:
            if self.settings.openapi_anonymous == "none":
                raise GatewayError(
                    "unauthenticated",
                    "Send 'Authorization: Bearer <token>' to read this gateway's API documents.",
                    headers={"WWW-Authenticate": 'Bearer realm="civicrm-gateway"'},
                )
            return None
        try:
            return await authenticate(request)
        except GatewayError:
            if authenticator.enabled or self.settings.openapi_anonymous == "none":
                raise
            return None  # tokenless gateway, caller not on loopback: it may read the generic

    # --- start-up ------------------------------------------------------------------------
    def readers_to_prebuild(self) -> list[Client | None]:
        authenticator = self.authenticator
        if not authenticator.enabled:
            from gateway.flow.clients import ANONYMOUS

            return [ANONYMOUS]
        return [None, *authenticator.clients]

    async def _prebuild(self) -> None:
        """Fetch the metadata and build the documents of every configured reader, one at a
        time, so that the first request for any of them finds it ready."""
        try:
            await self.source.get(wait=None)
            # A saved copy answers at once while the refresh runs: build from the fresh one.
            if self.source._task is not None:
                await asyncio.shield(self.source._task)
            seen = set()
            for client in self.readers_to_prebuild():
                key, _, _ = await self._view(client)
                if key not in seen:
                    seen.add(key)
                    await self.full(client)
                    # and the entity /docs opens on
                    names = await self.entities(client)
                    if names:
                        await self.entity(client, "Contact" if "Contact" in names else names[0])
            log.info("OpenAPI: %d document(s) built in the background", len(seen))
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed prebuild only means the first reader builds it
            log.exception("OpenAPI: building the documents at start-up failed")

    def start(self, backend_ready: asyncio.Event | None = None) -> None:
        """Fetch the metadata and build the documents in the background (when prebuilding).
        ``backend_ready``: set once the backend has started; the warm-up may start before,
        on its own workers (cv and pipe), and asks the backend itself only after."""
        self.source.backend_ready = backend_ready
        if self.prebuild and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._prebuild())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.source.close()
        if self._parts_pending:  # parts being built ahead: let the thread finish them
            await asyncio.wait(list(self._parts_pending))


def base_url(request: Request, settings: Settings) -> str:
    """The URL the gateway was reached at, with the proxy's prefix (``root_path``)."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    host = request.headers.get("host", "")
    scheme = request.url.scheme
    if not _PREFIX.fullmatch(root):
        root = ""
    if scheme not in ("http", "https") or not _HOST.fullmatch(host):
        host = f"{settings.host}:{settings.port}"
        scheme = "http"
    return f"{scheme}://{host}{root}"


def _json(body: tuple[bytes, bytes], request: Request, min_bytes: int) -> Response:
    plain, packed = body
    headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding, Authorization"}
    if min_bytes and len(plain) >= min_bytes and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            packed, media_type="application/json", headers={**headers, "Content-Encoding": "gzip"}
        )
    return Response(plain, media_type="application/json", headers=headers)


def _page(title: str, head: str, body: str, root: str) -> HTMLResponse:
    text = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        f'<link rel="icon" type="image/png" href="{root}{ASSETS}/favicon.png">{head}</head>'
        f"<body>{body}</body></html>\n"
    )
    return HTMLResponse(
        text,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


def install_docs(app: FastAPI, docs: Docs, settings: Settings) -> None:
    """Serve ``/openapi.json``, ``/openapi/{Entity}.json``, ``/docs`` (Swagger UI) and
    ``/redoc``, all from this host, from ``docs`` (which ``create_app`` builds, starts and
    stops with the app's other collaborators)."""
    app.state.docs = docs
    openapi_url = app.openapi_url or "/openapi.json"
    # FastAPI's own /openapi.json is synchronous and knows only the routes: replace it.
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != openapi_url]
    app.openapi = docs.generic  # type: ignore[method-assign]

    def asset(name: str) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            body, packed, etag = bundle(name)
            headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            if "gzip" in request.headers.get("accept-encoding", ""):
                return Response(
                    packed, media_type=BUNDLES[name], headers={**headers, "Content-Encoding": "gzip"}
                )
            return Response(body, media_type=BUNDLES[name], headers=headers)

        return serve

    # Before the mount, which would otherwise serve them (ReDoc's unmodified).
    for name in BUNDLES:
        app.add_route(f"{ASSETS}/{name}", asset(name), include_in_schema=False)
    app.mount(
        ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static"), ("gateway.web.openapi", "static")]),
        name="docs-assets",
    )

    # Browsers ask for /favicon.ico whatever the page links: the docs' icon, not a 404.
    icon = files("fastapi_offline").joinpath("static/favicon.png").read_bytes()

    async def favicon(request: Request) -> Response:
        return Response(icon, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    app.add_route("/favicon.ico", favicon, include_in_schema=False)

    def prefix(request: Request) -> str:
        """The path the gateway is mounted at behind a proxy (uvicorn's --root-path)."""
        return html.escape(str(request.scope.get("root_path") or "").rstrip("/"), quote=True)

    def answer(built: Built, request: Request) -> Response:
        return _json(built.for_base(base_url(request, settings)), request, settings.gzip_min_bytes)

    async def openapi_json(request: Request) -> Response:
        return answer(await docs.full(await docs.reader(request)), request)

    async def openapi_part(request: Request) -> Response:
        name = request.path_params["name"]
        reader = await docs.reader(request)
        if name == "index":
            root = str(request.scope.get("root_path") or "").rstrip("/")
            names = await docs.entities(reader)
            body = orjson.dumps(
                {
                    "entities": [{"name": n, "url": f"{root}/openapi/{n}.json"} for n in names],
                    "generic": f"{root}/openapi/generic.json",
                    "all": f"{root}{openapi_url}",
                }
            )
            return Response(
                body,
                media_type="application/json",
                headers={"Cache-Control": "no-cache", "Vary": "Authorization"},
            )
        if name == "generic":
            return answer(await docs.generic_for(reader), request)
        built = await docs.entity(reader, name) if NAME_RE.fullmatch(name) else None
        if built is None:
            raise GatewayError("route-not-found", f"No document {name[:80]!r} for this reader.")
        return answer(built, request)

    async def swagger_page(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(
            f"{app.title} - Swagger UI",
            f'<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">',
            f'<div id="swagger-ui" data-openapi="{root}{openapi_url}" '
            f'data-index="{root}/openapi/index.json"></div>'
            f'<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>'
            f'<script src="{root}{ASSETS}/swagger-init.js"></script>',
            root,
        )

    async def redoc_page(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(
            f"{app.title} - ReDoc",
            "",
            f'<div id="redoc" data-openapi="{root}{openapi_url}" '
            f'data-index="{root}/openapi/index.json"></div>'
            f'<script src="{root}{ASSETS}/redoc.standalone.js"></script>'
            f'<script src="{root}{ASSETS}/redoc-init.js"></script>',
            root,
        )

    app.add_route(openapi_url, openapi_json, include_in_schema=False)
    app.add_route("/openapi/{name}.json", openapi_part, include_in_schema=False)
    app.add_route("/docs", swagger_page, include_in_schema=False)
    app.add_route("/redoc", redoc_page, include_in_schema=False)
