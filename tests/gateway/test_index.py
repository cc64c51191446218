"""``GET /``: a newcomer who opens the gateway's address learns what it is and where to go."""

from __future__ import annotations

import httpx

from gateway import __version__
from gateway.settings import Settings
from gateway.web.app import create_app


async def test_index_names_the_service_and_links_to_the_docs(gw_sandbox):
    response = await gw_sandbox.get("/")
    assert response.status_code == 200
    assert response.json() == {
        "name": "civicrm-gateway",
        "version": __version__,
        "backend": "sandbox",
        "calls": {"v4": "/v4/{entity}/{action}", "v3": "/v3/{entity}/{action}"},
        "links": {
            "docs": "/docs",
            "redoc": "/redoc",
            "openapi": "/openapi.json",
            "health": "/healthz",
            "ready": "/readyz",
            "metrics": "/metrics",
        },
    }
    for path in ("/docs", "/openapi.json", "/healthz"):
        assert (await gw_sandbox.get(path)).status_code == 200, path


async def test_index_links_carry_the_proxy_prefix():
    app = create_app(Settings(backend="sandbox", sandbox_demo=0, metrics_enabled=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path="/crm")
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = (await client.get("/crm/")).json()
    assert body["links"] == {
        "docs": "/crm/docs",
        "redoc": "/crm/redoc",
        "openapi": "/crm/openapi.json",
        "health": "/crm/healthz",
        "ready": "/crm/readyz",
    }
    assert body["calls"]["v4"] == "/crm/v4/{entity}/{action}"
