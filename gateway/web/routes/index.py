"""``GET /``: what this service is and where to go next, for someone who just started it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway import __version__
from gateway.services import services
from gateway.web.responses import JSONResponse

router = APIRouter(tags=["service"])


@router.get("/", summary="Name, version, backend and links to the documentation")
async def index(request: Request) -> JSONResponse:
    # Behind a proxy that mounts the gateway under a prefix, links must carry that prefix.
    root = str(request.scope.get("root_path") or "").rstrip("/")
    links = {
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
    }
    found = services(request)
    if found.metrics is not None:
        links["metrics"] = "/metrics"
    return JSONResponse(
        {
            "name": "civicrm-gateway",
            "version": __version__,
            "backend": found.backend.name,
            "calls": {"v4": f"{root}/v4/{{entity}}/{{action}}", "v3": f"{root}/v3/{{entity}}/{{action}}"},
            "links": {name: root + path for name, path in links.items()},
        }
    )
