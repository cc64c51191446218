"""The fast path for ``/v4|/v3/{entity}/{action}`` (gateway.web.routes.direct) answers exactly as
FastAPI's router does: the same requests, sent to one app with it and one without, get the same
statuses, headers and bodies, and the metrics still name the route template."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

import gateway.web.routes.direct as direct
from gateway.settings import Settings
from gateway.web.app import create_app

ORIGIN = "http://app.example"

REQUESTS: list[tuple[str, str, dict]] = [
    (
        "POST",
        "/v4/Contact/create",
        {"json": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace"}},
    ),
    ("POST", "/v4/Contact/get", {"json": {"select": ["id", "display_name"]}}),
    ("POST", "/v4/Contact/get", {"json": {"select": ["id"]}, "headers": {"Origin": ORIGIN}}),
    ("GET", "/v4/Contact/get", {"params": {"select": "id,display_name", "id": "1"}}),
    ("GET", "/v4/Contact/get", {"params": {"format": "ndjson", "select": "id"}}),
    ("POST", "/v4/Contact/get", {"params": {"format": "csv"}, "json": {"select": ["id"]}}),
    ("GET", "/v4/Contact/create", {}),  # 405 + Allow
    (
        "POST",
        "/v4/Contact/get",
        {
            "content": b"{bad",  # invalid JSON
            "headers": {"Content-Type": "application/json"},
        },
    ),
    ("POST", "/v4/Contact/get", {"content": b"{}"}),  # 415: not sent as JSON
    ("POST", "/v4/Contact/get", {"json": {"where": [["nope", "=", 1]]}}),
    ("POST", "/v4/Nope/get", {}),  # unknown entity
    ("POST", "/v4/Contact/frobnicate", {}),
    ("POST", "/v4/Contact%2Fcreate", {"json": {}}),  # encoded separator
    ("POST", "/v4/1bad/get", {}),  # not a valid name
    ("POST", "/v4/Contact/get/", {}),  # trailing slash
    ("PUT", "/v4/Contact/get", {}),
    ("OPTIONS", "/v4/Contact/get", {"headers": {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}}),
    ("GET", "/v3/Contact/get", {"params": {"id": "1"}}),
    ("POST", "/v3/Contact/getsingle", {"json": {"id": 1}}),
    ("POST", "/v3/Contact/getsingle", {"json": {"id": 99999}}),
    ("POST", "/v4/Contact/delete", {"json": {"where": [["id", "=", 1]]}}),
    ("POST", "/v4/Contact/get", {"json": {"select": ["id"]}, "headers": {"X-Request-ID": "abc-1"}}),
]


@pytest.fixture
def taken(monkeypatch) -> list[str]:
    """The calls the fast path answered (entity and action, by version)."""
    seen: list[str] = []
    real = direct.handle_call

    async def counted(request, version, entity, action):
        seen.append(f"{version}:{entity}.{action}")
        return await real(request, version, entity, action)

    monkeypatch.setattr(direct, "handle_call", counted)
    return seen


@contextlib.asynccontextmanager
async def client(direct_calls: bool) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(backend="sandbox", sandbox_demo=0, cors_origins=[ORIGIN])
    app = create_app(settings, direct_calls=direct_calls)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c


# A create's timestamps: the two apps answer in different seconds under load.
_STAMPS = re.compile(rb'"(created_date|modified_date)":"[^"]*"')


def comparable(response: httpx.Response) -> tuple:
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k not in ("date", "x-request-id") or v == "abc-1"
    )
    return response.status_code, headers, _STAMPS.sub(rb'"\1":"*"', response.content)


async def test_same_answers_with_and_without_the_fast_path(taken):
    answers: dict[bool, list[tuple]] = {}
    for fast in (False, True):
        async with client(fast) as c:
            answers[fast] = [
                comparable(await c.request(method, path, **kwargs)) for method, path, kwargs in REQUESTS
            ]
            metrics = (await c.get("/metrics")).text
        assert 'route="/v4/{entity}/{action}"' in metrics
        assert 'route="/v3/{entity}/{action}"' in metrics
    for request, slow, fast in zip(REQUESTS, answers[False], answers[True], strict=True):
        assert slow == fast, request
    statuses = {s[0] for s in answers[True]}
    assert {200, 400, 404, 405}.issubset(statuses), statuses
    # Only the fast app took the fast path, and only for well-formed GET/POST targets.
    assert len(taken) == 17 and "4:Contact.create" in taken and "3:Contact.getsingle" in taken


@pytest.mark.parametrize("root", ["", "/civi"])
async def test_root_path_is_honoured(root, taken):
    """Behind a proxy that mounts the gateway under a prefix (uvicorn --root-path)."""
    app = create_app(Settings(backend="sandbox", sandbox_demo=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            response = await c.post(f"{root}/v4/Contact/get", json={"select": ["id"]})
    assert response.status_code == 200
    assert sorted(r["id"] for r in response.json()) == [1, 2]
    assert taken == ["4:Contact.get"]
