"""``POST /v4/batch`` and ``POST /v3/batch``: many calls in one request, a status per call.

The body is a named map of calls, ``{"name": ["Entity", "action", {params}], ...}``. Each call
goes through the same normalisation and access policy as a single call
(:func:`gateway.flow.prepare.prepare_call`); the ones that pass go to the backend together (one
CiviCRM multi-call request on the HTTP backend for APIv4, concurrently elsewhere). The answer
maps each name to ``{"status": 200, "values": ...}`` or ``{"status": N, "error": {problem}}``.
A batch counts as one request per call against the client's rate limit.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.core.call import Call
from gateway.core.errors import GatewayError, invalid_request
from gateway.core.policy import request_cost
from gateway.core.redact import REDACTOR
from gateway.flow.audit.hooks import audited_batch, note_batch
from gateway.flow.clients import Client
from gateway.flow.idempotency import call_parts
from gateway.flow.prepare import authenticate, params_from_body, prepare_call, shape_result
from gateway.services import services
from gateway.web.responses import JSONResponse

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "Named calls: each value is [Entity, action, params?]",
                    "additionalProperties": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 3,
                        "items": {"anyOf": [{"type": "string"}, {"type": "object"}]},
                    },
                    "example": {
                        "contacts": ["Contact", "get", {"select": ["id", "display_name"], "limit": 2}],
                        "groups": ["Group", "get", {"limit": 5}],
                    },
                }
            }
        },
    }
}


def _error_entry(exc: GatewayError, instance: str) -> dict[str, Any]:
    body = orjson.loads(REDACTOR.text(orjson.dumps(exc.body(instance)).decode()))
    return {"status": exc.status, "error": body}


def _spec(name: str, spec: Any) -> tuple[str, str, dict[str, Any]]:
    if not (
        isinstance(spec, list)
        and 2 <= len(spec) <= 3
        and isinstance(spec[0], str)
        and isinstance(spec[1], str)
        and (len(spec) == 2 or isinstance(spec[2], dict))
    ):
        raise invalid_request(f"Call {name!r} must be [Entity, action, params?] with params an object.")
    return spec[0], spec[1], dict(spec[2]) if len(spec) == 3 else {}


def make_router(version: int) -> APIRouter:
    router = APIRouter(prefix=f"/v{version}", tags=[f"APIv{version}"])

    async def answer_batch(request: Request) -> Response:
        client = await authenticate(request)
        state = services(request)
        settings = state.settings
        calls = await params_from_body(request)
        if not calls:
            raise invalid_request('The batch is empty: send {"name": [Entity, action, params]}.')
        if len(calls) > settings.batch_max_calls:
            raise invalid_request(f"A batch may carry at most {settings.batch_max_calls} calls.")
        outcome: dict[str, Any] = {}
        prepared: dict[str, Call] = {}
        for name, spec in calls.items():
            if not _NAME.fullmatch(name):
                raise invalid_request(
                    f"Invalid call name {name[:80]!r}: use letters, digits and _.:- (at most 64 characters)."
                )
            entity, action, params = _spec(name, spec)
            try:
                prepared[name] = await prepare_call(state, client, version, entity, action, params)
            except GatewayError as exc:
                outcome[name] = exc
        note_batch(request, calls, prepared)
        # The batch writes when a call that passed its checks does: it then runs at most once
        # per Idempotency-Key (the calls refused here are part of its fingerprint too).
        writes = not all(c.reads_only for c in prepared.values())
        return await state.idempotency.run(
            request,
            client,
            writes,
            lambda: [
                (name, call_parts(prepared[name]) if name in prepared else spec)
                for name, spec in calls.items()
            ],
            lambda: _run(request, client, version, calls, prepared, outcome),
        )

    @router.post(
        "/batch",
        name=f"v{version}_batch",
        openapi_extra=BATCH_BODY,
        summary=f"Run many APIv{version} calls in one request",
    )
    async def batch(request: Request) -> Response:
        """Writes and refusals among the calls are recorded in the audit trail."""
        return await audited_batch(request, version, answer_batch)

    return router


async def _run(
    request: Request,
    client: Client,
    version: int,
    calls: dict[str, Any],
    prepared: dict[str, Call],
    outcome: dict[str, Any],
) -> Response:
    """The prepared calls on the backend, and each call's status and values (or problem)."""
    state = services(request)
    instance = request.url.path
    if prepared:
        # The request was counted on arrival; each call in it (chains too) counts as one.
        cost = max(0, sum(request_cost(c) for c in prepared.values()) - 1)
        async with state.limiter.admit(client, cost=cost):
            outcome.update(
                await state.backend.batch(
                    version,
                    {name: (c.entity, c.action, c.to_params()) for name, c in prepared.items()},
                    identity=client.identity,
                )
            )
    answer: dict[str, Any] = {}
    metrics = state.metrics
    for name in calls:
        result = outcome[name]
        if isinstance(result, GatewayError):
            answer[name] = _error_entry(result, instance)
        else:
            body, headers = shape_result(client, prepared[name], result)
            answer[name] = {"status": 200, "values": body}
            if "X-Total-Count" in headers:
                answer[name]["total"] = int(headers["X-Total-Count"])
        if metrics is not None:
            metrics.batch_calls.labels(str(version), str(answer[name]["status"])).inc()
    return JSONResponse(answer)


v4_batch_router = make_router(4)
v3_batch_router = make_router(3)
