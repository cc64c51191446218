"""``/v4/{entity}/{action}`` and ``/v3/{entity}/{action}``: POST with a JSON params object, GET
(read actions only) with params in the query string."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from ..errors import GatewayError
from ..params import check_names, is_read_action, params_from_query
from ..pipeline import authenticate, params_from_body, run_call

ENTITY = Path(description="CiviCRM entity, e.g. Contact", examples=["Contact"],
              pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
ACTION = Path(description="API action, e.g. get, create, update, delete", examples=["get"],
              pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def _get_params(request: Request, version: int, entity: str, action: str) -> dict:
    check_names(entity, action)
    if not is_read_action(version, action):
        raise GatewayError(
            "method-not-allowed",
            f"{entity}.{action} changes data: send it with POST. Only read actions "
            "(get*, autocomplete) may use GET.",
            headers={"Allow": "POST"},
        )
    return params_from_query(version, request.query_params.multi_items(),
                             max_depth=request.app.state.settings.max_json_depth)


def make_router(version: int) -> APIRouter:
    router = APIRouter(prefix=f"/v{version}", tags=[f"APIv{version}"])

    @router.post("/{entity}/{action}", name=f"v{version}_post",
                 summary=f"Call any APIv{version} entity action")
    async def post(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        client = authenticate(request)
        check_names(entity, action)
        params = await params_from_body(request)
        return await run_call(request, client, version, entity, action, params)

    @router.get("/{entity}/{action}", name=f"v{version}_get",
                summary=f"Call an APIv{version} read action with query-string params")
    async def get(request: Request, entity: str = ENTITY, action: str = ACTION) -> Response:
        client = authenticate(request)
        params = _get_params(request, version, entity, action)
        return await run_call(request, client, version, entity, action, params)

    return router


v4_router = make_router(4)
v3_router = make_router(3)
