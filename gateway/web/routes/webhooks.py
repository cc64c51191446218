"""``/webhooks``: a client's webhook subscriptions (docs/changes.md).

Only clients whose policy says ``webhooks = true``, and only to hosts the operator listed in
``CIVI_GATEWAY_WEBHOOK_HOSTS`` (else 404: webhooks are off). A client sees and changes its own
subscriptions only; another's is a 404. The secret is shown once, when created or rotated.
Each change to a subscription is an audit record (entity ``Webhook``).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.core.errors import GatewayError, invalid_request
from gateway.core.params import parse_body
from gateway.core.policy import denied
from gateway.flow.audit.record import AuditRecord, utc_now
from gateway.flow.changes import FeedQuery
from gateway.flow.clients import Client
from gateway.services import Services, services
from gateway.web.calls import authenticate, read_body
from gateway.web.openapi.paths import route_problem_responses
from gateway.web.responses import JSONResponse

TYPES = ("created", "updated", "deleted")
router = APIRouter(tags=["service"])
_PROBLEMS = route_problem_responses()

SUBSCRIPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "entity": {"type": "string"},
        "select": {"type": ["array", "null"], "items": {"type": "string"}},
        "where": {"type": "array", "items": {}},
        "types": {"type": "array", "items": {"type": "string", "enum": list(TYPES)}},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "failing_since": {"type": ["number", "null"]},
        "secret": {"type": "string", "description": "whsec_...: in the answer to POST and rotation only"},
    },
}


def _public(sub: dict[str, Any]) -> dict[str, Any]:
    query = orjson.loads(sub["query"])
    return {
        "id": sub["id"],
        "url": sub["url"],
        "entity": sub["entity"],
        "select": query["select"],
        "where": query["where"],
        "types": orjson.loads(sub["types"]),
        "enabled": bool(sub["enabled"]),
        "disabled_reason": sub["disabled_reason"],
        "failing_since": sub["failing_since"],
        "created": sub["created"],
    }


async def _caller(request: Request) -> tuple[Client, Services]:
    client = await authenticate(request)
    found = services(request)
    if not found.webhooks.targets.enabled:
        raise GatewayError("route-not-found", "Webhooks are off here (CIVI_GATEWAY_WEBHOOK_HOSTS is empty).")
    if not client.policy.webhooks:
        raise denied("This client may not use webhooks (its policy's webhooks is not true).")
    return client, found


async def _own(request: Request, sub_id: str) -> tuple[Client, Services, dict[str, Any]]:
    client, found = await _caller(request)
    sub = await found.webhooks.store.get(sub_id)
    if sub is None or sub["client"] != client.name:
        raise GatewayError("route-not-found", f"No webhook subscription {sub_id[:40]!r} of this client.")
    return client, found, sub


def _audit(
    request: Request, found: Services, client: Client, action: str, status: int, started: float
) -> None:
    found.audit.add(
        AuditRecord(
            time=utc_now(),
            request_id=getattr(request.state, "request_id", None),
            client=client.name,
            source=request.client.host if request.client else None,
            version=4,
            entity="Webhook",
            action=action,
            status=status,
            duration_ms=round((time.monotonic() - started) * 1000, 3),
        )
    )


@router.post(
    "/webhooks",
    name="webhooks_create",
    operation_id="webhooks_create",
    summary="Subscribe a URL to an entity's changes",
    description="Subscribe a URL to an entity's changes (docs/changes.md)",
    status_code=201,
    responses={
        201: {
            "description": "The subscription, with its secret (shown once)",
            "content": {"application/json": {"schema": SUBSCRIPTION_SCHEMA}},
        },
        **_PROBLEMS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["url", "entity"],
                        "properties": {
                            "url": {"type": "string", "description": "On a host the operator allowed"},
                            "entity": {"type": "string"},
                            "select": {"type": "array", "items": {"type": "string"}},
                            "where": {"type": "array", "items": {}},
                            "types": {"type": "array", "items": {"type": "string", "enum": list(TYPES)}},
                        },
                    }
                }
            },
        }
    },
)
async def create(request: Request) -> Response:
    started = time.monotonic()
    client, found = await _caller(request)
    body = await read_body(request, found.settings.max_body_bytes)
    data = parse_body(
        body, max_depth=found.settings.max_json_depth, content_type=request.headers.get("content-type")
    )
    unknown = set(data) - {"url", "entity", "select", "where", "types"}
    if unknown:
        raise invalid_request(
            f"Unknown fields: {', '.join(sorted(unknown))} (url, entity, select, where, types)."
        )
    url = found.webhooks.targets.check(data.get("url"))  # type: ignore[arg-type]
    entity = data.get("entity")
    if not isinstance(entity, str):
        raise invalid_request("entity must be an entity name, e.g. Contact.")
    types = data.get("types", list(TYPES))
    if not (isinstance(types, list) and types and set(types) <= set(TYPES)):
        raise invalid_request("types must be a non-empty list of created, updated, deleted.")
    query = FeedQuery.of({k: data[k] for k in ("select", "where") if k in data})
    page = await found.feed.start(client, entity, query)
    canonical = found.feed.codec.decode(page.cursor).entity
    sub = await found.webhooks.store.add(
        client.name,
        canonical,
        url,
        {"select": query.select, "where": query.where},
        sorted(set(types), key=TYPES.index),
        page.cursor,
    )
    _audit(request, found, client, "create", 201, started)
    found.webhooks.kick()
    return JSONResponse({**_public(sub), "secret": sub["secret"]}, status_code=201)


@router.get(
    "/webhooks",
    name="webhooks_list",
    operation_id="webhooks_list",
    summary="This client's webhook subscriptions",
    description="This client's webhook subscriptions (docs/changes.md)",
    responses=_PROBLEMS,
)
async def list_subscriptions(request: Request) -> Response:
    client, found = await _caller(request)
    subs = await found.webhooks.store.subscriptions(client.name)
    return JSONResponse([_public(s) for s in subs])


@router.get(
    "/webhooks/{sub_id}",
    name="webhooks_get",
    operation_id="webhooks_get",
    summary="One webhook subscription",
    description="One webhook subscription (docs/changes.md)",
    responses=_PROBLEMS,
)
async def get_subscription(request: Request, sub_id: str) -> Response:
    _, _, sub = await _own(request, sub_id)
    return JSONResponse(_public(sub))


@router.delete(
    "/webhooks/{sub_id}",
    name="webhooks_delete",
    operation_id="webhooks_delete",
    summary="Remove a webhook subscription and its queue",
    description="Remove a webhook subscription and its queue (docs/changes.md)",
    status_code=204,
    responses=_PROBLEMS,
)
async def delete_subscription(request: Request, sub_id: str) -> Response:
    started = time.monotonic()
    client, found, sub = await _own(request, sub_id)
    await found.webhooks.store.remove(sub["id"])
    _audit(request, found, client, "delete", 204, started)
    return Response(status_code=204)


@router.post(
    "/webhooks/{sub_id}/secret",
    name="webhooks_rotate",
    operation_id="webhooks_rotate",
    summary="A new secret; the old one still signs for the overlap",
    description="A new secret; the old one still signs for the overlap (docs/changes.md)",
    responses=_PROBLEMS,
)
async def rotate_secret(request: Request, sub_id: str) -> Response:
    started = time.monotonic()
    client, found, sub = await _own(request, sub_id)
    overlap = found.settings.webhook_secret_overlap_hours * 3600
    secret = await found.webhooks.store.rotate(sub["id"], overlap)
    _audit(request, found, client, "rotate_secret", 200, started)
    return JSONResponse({"id": sub["id"], "secret": secret, "previous_valid_until": time.time() + overlap})


@router.get(
    "/webhooks/{sub_id}/deliveries",
    name="webhooks_deliveries",
    operation_id="webhooks_deliveries",
    summary="The subscription's latest deliveries, newest first",
    description="The subscription's latest deliveries, newest first (docs/changes.md)",
    responses=_PROBLEMS,
)
async def deliveries(request: Request, sub_id: str) -> Response:
    _, found, sub = await _own(request, sub_id)
    rows = await found.webhooks.store.deliveries(sub["id"])
    return JSONResponse(rows)


@router.post(
    "/webhooks/{sub_id}/deliveries/{delivery}/retry",
    name="webhooks_retry",
    operation_id="webhooks_retry",
    status_code=202,
    summary="Queue a dead (or refused) delivery again; re-enables the subscription",
    description="Queue a dead (or refused) delivery again; re-enables the subscription (docs/changes.md)",
    responses=_PROBLEMS,
)
async def retry(request: Request, sub_id: str, delivery: str) -> Response:
    started = time.monotonic()
    client, found, sub = await _own(request, sub_id)
    if not await found.webhooks.store.retry(sub["id"], delivery):
        raise GatewayError("route-not-found", "No such settled delivery of this subscription.")
    if not sub["enabled"]:
        await found.webhooks.store.set_enabled(sub["id"], True)
    _audit(request, found, client, "retry", 202, started)
    found.webhooks.kick()
    return JSONResponse({"id": delivery, "status": "pending"}, status_code=202)
