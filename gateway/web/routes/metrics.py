"""``GET /metrics``: Prometheus text format (``CIVI_GATEWAY_METRICS_ENABLED=false`` turns it off)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from gateway.core.errors import GatewayError
from gateway.services import services
from gateway.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["service"])


@router.get(
    "/metrics", summary="Prometheus metrics", include_in_schema=True, response_class=PlainTextResponse
)
async def metrics(request: Request) -> Response:
    registry = services(request).metrics
    if registry is None:
        raise GatewayError("route-not-found", "Metrics are turned off.")
    return Response(registry.render(), media_type=CONTENT_TYPE)
