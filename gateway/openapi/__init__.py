"""The OpenAPI document built from CiviCRM's own metadata, and offline /docs and /redoc.

``/openapi.json`` is built on its first request, not at start-up: the metadata is fetched
through the backend (or read from ``CIVI_GATEWAY_OPENAPI_SPEC_FILE``) and cached for
``CIVI_GATEWAY_OPENAPI_CACHE_TTL`` seconds. When CiviCRM cannot be asked, the document of the
generic routes is served instead, with a warning in the log and a note in the document.

The pages load Swagger UI and ReDoc from the ``fastapi-offline`` package's static files, served
by the gateway itself under ``/docs-assets/``; their Content-Security-Policy lets the browser
fetch nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from .document import build_document, redact
from .metadata import Metadata, SpecSource

if TYPE_CHECKING:
    from ..backends import Backend
    from ..settings import Settings

ASSETS = "/docs-assets"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
       "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")


# ReDoc 2 shows Redocly's logo from their CDN, unconditionally; its bundle is served with that
# one image swapped for an empty inline one, so the page fetches nothing from elsewhere.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"


@cache
def redoc_bundle() -> tuple[bytes, str]:
    """ReDoc's standalone bundle without its external logo, and its ETag."""
    body = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_bytes()
    body = body.replace(REDOC_LOGO, EMPTY_IMAGE)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class Docs:
    """Builds and caches the document for one app."""

    def __init__(self, app: FastAPI, backend: Backend | None, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.source = SpecSource(backend, ttl=settings.openapi_cache_ttl,
                                   spec_file=settings.openapi_spec_file,
                                   entities=settings.openapi_entities)
        self._generic: dict[str, Any] | None = None
        self._built: tuple[Metadata | None, str | None, dict[str, Any], bytes] | None = None
        self._lock = asyncio.Lock()

    @property
    def auth_required(self) -> bool:
        # Without client tokens the gateway serves loopback callers (or anyone, if allowed)
        authenticator = getattr(self.app.state, "authenticator", None)
        return authenticator is None or authenticator.enabled

    def _secrets(self) -> list[str]:
        values = list(self.settings.secret_values)
        authenticator = getattr(self.app.state, "authenticator", None)
        for client in getattr(authenticator, "clients", []):
            if client.identity is not None and client.identity.api_key:
                values.append(client.identity.api_key)
        return values

    def build(self, metadata: Metadata | None, note: str | None = None) -> dict[str, Any]:
        base = FastAPI.openapi(self.app)  # FastAPI's own description of the routes, cached
        doc = build_document(base, metadata, auth_required=self.auth_required, note=note)
        return redact(doc, self._secrets())

    def generic(self) -> dict[str, Any]:
        """The document without CiviCRM's metadata (what ``app.openapi()`` answers)."""
        if self._generic is None:
            self._generic = self.build(None)
        return self._generic

    async def document(self) -> tuple[dict[str, Any], bytes]:
        """The full document and its JSON, rebuilt only when the metadata changed."""
        metadata = await self.source.get()
        note = None
        if metadata is None:
            note = ("CiviCRM's metadata is not available (" + (self.source.error or "unknown") +
                    "), so only the generic routes are described.")
        async with self._lock:  # one build at a time; the others then find it done
            built = self._built
            if built is None or built[0] is not metadata or built[1] != note:
                # A large site's document takes a moment to build: not on the event loop.
                doc, body = await asyncio.to_thread(self._build_json, metadata, note)
                built = self._built = (metadata, note, doc, body)
        return built[2], built[3]

    def _build_json(self, metadata: Metadata | None, note: str | None) -> tuple[dict[str, Any],
                                                                               bytes]:
        doc = self.build(metadata, note)
        return doc, orjson.dumps(doc)


def _page(title: str, head: str, body: str, root: str) -> HTMLResponse:
    text = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f'<link rel="icon" type="image/png" href="{root}{ASSETS}/favicon.png">{head}</head>'
            f"<body>{body}</body></html>\n")
    return HTMLResponse(text, headers={"Content-Security-Policy": CSP,
                                       "X-Content-Type-Options": "nosniff",
                                       "Cache-Control": "no-cache"})


def install_docs(app: FastAPI, backend: Backend | None, settings: Settings) -> None:
    """Serve ``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, all from this host."""
    docs = Docs(app, backend, settings)
    app.state.docs = docs
    openapi_url = app.openapi_url or "/openapi.json"
    # FastAPI's own /openapi.json is synchronous and knows only the routes: replace it.
    app.router.routes[:] = [r for r in app.router.routes
                            if getattr(r, "path", None) != openapi_url]
    app.openapi = docs.generic  # type: ignore[method-assign]
    async def redoc_js(request: Request) -> Response:
        body, etag = redoc_bundle()
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/javascript", headers=headers)

    # Before the mount, which would otherwise serve the unmodified file.
    app.add_route(f"{ASSETS}/redoc.standalone.js", redoc_js, include_in_schema=False)
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static"),
                                            ("gateway.openapi", "static")]),
              name="docs-assets")

    def prefix(request: Request) -> str:
        """The path the gateway is mounted at behind a proxy (uvicorn's --root-path)."""
        return html.escape(str(request.scope.get("root_path") or "").rstrip("/"), quote=True)

    async def openapi_json(request: Request) -> Response:
        doc, body = await docs.document()
        root = str(request.scope.get("root_path") or "").rstrip("/")
        if root:  # calls tried from the pages must go through the same prefix
            body = orjson.dumps({**doc, "servers": [{"url": root}]})
        return Response(body, media_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    async def swagger_page(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(f"{app.title} - Swagger UI",
                     f'<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">',
                     f'<div id="swagger-ui" data-openapi="{root}{openapi_url}"></div>'
                     f'<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>'
                     f'<script src="{root}{ASSETS}/swagger-init.js"></script>',
                     root)

    async def redoc_page(request: Request) -> HTMLResponse:
        root = prefix(request)
        return _page(f"{app.title} - ReDoc", "",
                     f'<redoc spec-url="{root}{openapi_url}" lazy-rendering></redoc>'
                     f'<script src="{root}{ASSETS}/redoc.standalone.js"></script>', root)

    app.add_route(openapi_url, openapi_json, include_in_schema=False)
    app.add_route("/docs", swagger_page, include_in_schema=False)
    app.add_route("/redoc", redoc_page, include_in_schema=False)
