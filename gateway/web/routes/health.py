"""Liveness, readiness and the problem-type pages that error bodies link to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.core.errors import PROBLEM_TYPES, GatewayError
from gateway.core.policy import denied
from gateway.flow.clients import ANONYMOUS
from gateway.services import services
from gateway.settings import is_loopback
from gateway.web.calls import authenticate, is_proxied
from gateway.web.openapi.paths import route_problem_responses
from gateway.web.responses import JSONResponse

router = APIRouter(tags=["service"])


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: r for s, r in route_problem_responses().items() if s in statuses}


@router.get("/healthz", summary="Alive")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="This process can serve; CiviCRM's state in the body",
    responses=_problems(502, 503, 504),
)
async def readyz(request: Request) -> JSONResponse:
    """200 while this process is started and not draining. CiviCRM's state is reported under
    ``upstream``; it decides the answer only with ``CIVI_GATEWAY_READINESS_REQUIRES_UPSTREAM=true``
    (then CiviCRM's own problem, 502/503/504, is the answer)."""
    found = services(request)
    readiness, backend = found.readiness, found.backend
    if not readiness.started or readiness.draining:
        state = "starting" if not readiness.started else "draining"
        raise GatewayError(
            "gateway-not-ready", f"This gateway process is {state}.", headers={"Retry-After": "5"}
        )
    upstream = await readiness.upstream()
    if upstream.error is not None and readiness.requires_upstream:
        raise upstream.error
    return JSONResponse(
        {
            "status": "ready",
            "backend": backend.name,
            "requires_upstream": readiness.requires_upstream,
            "upstream": upstream.as_json(backend.breaker.state),
        }
    )


@router.post(
    "/cache/flush",
    summary="Forget cached metadata (getFields, getActions, Entity.get)",
    responses=_problems(401, 403, 429),
)
async def flush_cache(request: Request) -> JSONResponse:
    """For after a schema change made outside the gateway (writes through it flush by
    themselves). Only the operator's clients may flush (a trusted client, or the loopback
    caller of a gateway without tokens): every client's next calls pay for fresh metadata, so
    a client that could flush at will could slow all the others down."""
    client = await authenticate(request)
    found = services(request)
    peer = request.client.host if request.client else ""
    operator = client is ANONYMOUS and is_loopback(peer) and not is_proxied(request)
    if not (client.policy.trusted or operator):
        raise denied('Only a trusted client (allow = ["*"], credential_fields = true) may flush the cache.')
    async with found.limiter.admit(client, cost=1):
        flushed = found.backend.flush_metadata()
    return JSONResponse({"flushed": flushed})


@router.get("/problems/{slug}", summary="What an error type means", responses=_problems(404))
async def problem(slug: str) -> JSONResponse:
    problem = PROBLEM_TYPES.get(slug)
    if problem is None:
        raise GatewayError("route-not-found", f"No problem type {slug[:80]!r}.")
    return JSONResponse(
        {
            "type": problem.uri,
            "title": problem.title,
            "status": problem.status,
            "description": problem.description,
        }
    )
