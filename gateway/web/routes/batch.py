"""``POST /v4/batch`` and ``POST /v3/batch``: many calls in one request, a status per call.

The body is a named map of calls, ``{"name": ["Entity", "action", {params}], ...}``. Each call
goes through the same normalisation and access policy as a single call
(:meth:`gateway.flow.flow.CallFlow.batch`); the ones that pass go to the backend together (one
CiviCRM multi-call request on the HTTP backend for APIv4, concurrently elsewhere). The answer
maps each name to ``{"status": 200, "values": ...}`` or ``{"status": N, "error": {problem}}``.
A batch counts as one request per call against the client's rate limit.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.flow.request import BatchRequest
from gateway.services import services
from gateway.web.calls import body_params, check_target, credentials, note_client, origin, to_response

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


def make_router(version: int) -> APIRouter:
    router = APIRouter(prefix=f"/v{version}", tags=[f"APIv{version}"])

    @router.post(
        "/batch",
        name=f"v{version}_batch",
        openapi_extra=BATCH_BODY,
        summary=f"Run many APIv{version} calls in one request",
    )
    async def batch(request: Request) -> Response:
        """Writes and refusals among the calls are recorded in the audit trail."""
        check_target(request)
        answer = await services(request).flow.batch(
            BatchRequest(
                version,
                body_params(request),
                credentials(request),
                origin(request),
                on_client=note_client(request),
            )
        )
        return to_response(answer)

    return router


v4_batch_router = make_router(4)
v3_batch_router = make_router(3)
