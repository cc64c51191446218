"""The FastAPI application: lifespan (backend open/close), error handlers, request ids."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.backends import Backend
from gateway.core.errors import GatewayError
from gateway.flow.idempotency.store import Store
from gateway.mcp.server import install_mcp
from gateway.services import Timing, build_services
from gateway.settings import Settings, load_settings
from gateway.web.accesslog import AccessLogMiddleware
from gateway.web.browsers import BrowserGuard
from gateway.web.calls import credentials
from gateway.web.compression import Compression
from gateway.web.openapi import Docs, install_docs
from gateway.web.requestid import RequestIdMiddleware
from gateway.web.requestmetrics import MetricsMiddleware
from gateway.web.responses import allowed_methods, problem_response
from gateway.web.routes.api import v3_router, v4_router
from gateway.web.routes.audit import router as audit_router
from gateway.web.routes.batch import v3_batch_router, v4_batch_router
from gateway.web.routes.changes import router as changes_router
from gateway.web.routes.direct import DirectCallMiddleware
from gateway.web.routes.health import router as health_router
from gateway.web.routes.index import router as index_router
from gateway.web.routes.metrics import router as metrics_router
from gateway.web.routes.webhooks import router as webhooks_router

log = logging.getLogger("gateway")


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if exc.slug == "gateway-misconfigured":
        log.error(
            "CiviCRM rejected the gateway's own credentials: fix the gateway's settings (%s)",
            exc.civicrm,
            extra={"request_id": _request_id(request)},
        )
    elif exc.status >= 500:
        log.warning("%s: %s", exc.slug, exc.detail, extra={"request_id": _request_id(request)})
    return problem_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = GatewayError("route-not-found", f"No route {request.url.path[:200]!r}.")
    elif exc.status_code == 405:
        error = GatewayError(
            "method-not-allowed",
            f"{request.method} is not allowed here.",
            headers={**(exc.headers or {}), "Allow": allowed_methods(request)},
        )
    else:
        error = GatewayError("invalid-request", str(exc.detail), status=exc.status_code)
    return problem_response(error, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body"))
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return problem_response(GatewayError("invalid-request", "; ".join(problems)), request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected failure", extra={"request_id": _request_id(request)})
    return problem_response(
        GatewayError("internal-error", "Unexpected failure; see the gateway's log."), request.url.path
    )


def create_app(
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    direct_calls: bool = True,
    timing: Timing | None = None,
    idempotency_store: Store | None = None,
) -> FastAPI:
    """Build the gateway. ``backend`` overrides the one the settings name (for embedding);
    ``direct_calls=False`` leaves the API calls to FastAPI's router (tests compare the two);
    ``timing`` gives the collaborators another clock or sleep, ``idempotency_store`` another
    Idempotency-Key store (tests)."""
    settings = settings or load_settings()
    services = build_services(
        settings, backend, timing=timing or Timing(), idempotency_store=idempotency_store
    )
    resilient, metrics, readiness = services.backend, services.metrics, services.readiness

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The API documents, built in the background: on cv and pipe the metadata warm-up
        # boots its own workers while the backend starts its, and asks the backend after.
        import os as _os

        backend_ready = asyncio.Event()
        if not _os.environ.get("COLD_LATE"):
            docs.start(backend_ready)
        try:
            await resilient.start()
        except BaseException:
            await docs.stop()
            raise
        backend_ready.set()
        if _os.environ.get("COLD_LATE"):
            docs.start(backend_ready)
        readiness.on_started()
        if metrics is not None:
            metrics.start()
        if services.webhooks.targets.enabled:
            services.webhooks.start()
        log.info("civicrm-gateway %s ready on the %s backend", __version__, resilient.name)
        try:
            yield
        finally:
            readiness.on_stopping()
            await docs.stop()
            await services.webhooks.close()
            await services.feed.state.close()
            await services.audit.close()  # what is queued is written before the exit
            if metrics is not None:
                await metrics.close()
            await resilient.close()
            await services.idempotency.close()

    app = FastAPI(
        title="civicrm-gateway",
        version=__version__,
        description="Clean HTTP routes to CiviCRM APIv4 and APIv3. Answers are plain JSON "
        "lists of records; errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A trailing slash is a 404, not a 307 whose Location is built from the Host header.
        redirect_slashes=False,
        # No OpenTelemetry probing on every request (nothing here exports it; benchmarks/).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services  # read through gateway.services.services(request)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(v4_batch_router)
    app.include_router(changes_router)  # before /v4/{entity}/{action}, which it would match
    app.include_router(v3_batch_router)
    app.include_router(v4_router)
    app.include_router(v3_router)
    app.include_router(health_router)
    app.include_router(index_router)
    app.include_router(metrics_router)
    app.include_router(audit_router)
    docs = Docs(app, resilient, settings, services.authenticator)
    install_docs(app, docs, settings)
    install_mcp(
        app,
        services.flow,
        docs.narrowed,
        credentials=credentials,
        max_body_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
    )
    app.include_router(webhooks_router)
    # Innermost of the middlewares: the hot routes still get CORS, request ids and metrics.
    if direct_calls:
        by_name = {getattr(route, "name", None): route for route in (*v4_router.routes, *v3_router.routes)}
        app.add_middleware(
            DirectCallMiddleware,
            routes={(m, v): by_name[f"v{v}_{m.lower()}"] for m in ("GET", "POST") for v in ("3", "4")},
            on_gateway_error=_gateway_error,
            on_unexpected=_unexpected,
        )
    app.add_middleware(
        BrowserGuard, settings=settings, tokenless=not services.authenticator.clients, on_error=_gateway_error
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=settings.cors_methods,
            allow_headers=settings.cors_headers,
            expose_headers=[
                "X-Request-ID",
                "X-Total-Count",
                "X-Result-Count",
                "Retry-After",
                "Idempotent-Replayed",
            ],
        )
    if settings.gzip_min_bytes:
        app.add_middleware(Compression, minimum_size=settings.gzip_min_bytes)
    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every layer and log line has the id
    return app


def app_factory() -> FastAPI:
    """Entry point for uvicorn (``--factory``): settings and logging from the environment."""
    from gateway.telemetry.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    app.state.docs.serving()  # a server: API documents built at start-up, metadata kept
    return app
