"""/docs and /redoc: every script, style and image comes from the gateway itself."""

from __future__ import annotations

import re

from gateway.web.openapi import ASSETS, REDOC_LOGO


async def test_pages_load_only_local_assets(gw_sandbox):
    fetched = set()
    for page in ("/docs", "/redoc"):
        response = await gw_sandbox.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp
        html = response.text
        assert (
            "http://" not in html
            and "https://" not in html
            and "//" not in html.replace("<!doctype html>", "")
        )
        urls = re.findall(r'(?:src|href|spec-url|data-openapi)="([^"]+)"', html)
        assert urls and all(u.startswith((ASSETS + "/", "/openapi.json")) for u in urls), urls
        fetched.update(urls)
    assert f"{ASSETS}/swagger-ui-bundle.js" in fetched and f"{ASSETS}/redoc.standalone.js" in fetched
    for url in fetched:
        asset = await gw_sandbox.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


async def test_redoc_bundle_has_no_cdn_logo(gw_sandbox):
    bundle = await gw_sandbox.get(f"{ASSETS}/redoc.standalone.js")
    assert REDOC_LOGO not in bundle.content and b"cdn.redoc.ly" not in bundle.content
    assert bundle.headers["content-type"].startswith("text/javascript")
    again = await gw_sandbox.get(
        f"{ASSETS}/redoc.standalone.js", headers={"If-None-Match": bundle.headers["etag"]}
    )
    assert again.status_code == 304


async def test_swagger_ui_never_calls_the_online_validator(gw_sandbox):
    init = (await gw_sandbox.get(f"{ASSETS}/swagger-init.js")).text
    assert "validatorUrl: null" in init
    assert (await gw_sandbox.get(f"{ASSETS}/nope.js")).status_code == 404


async def test_pages_behind_a_path_prefix():
    """Behind a proxy at /crm (uvicorn --root-path), every URL keeps the prefix."""
    import httpx

    from gateway.settings import Settings
    from gateway.web.app import create_app

    app = create_app(Settings(backend="sandbox", sandbox_demo=0))
    transport = httpx.ASGITransport(app=app, root_path="/crm")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as gw,
    ):
        page = (await gw.get("/crm/docs")).text
        urls = re.findall(r'(?:src|href|data-openapi)="([^"]+)"', page)
        assert urls and all(u.startswith("/crm/") for u in urls), urls
        doc = (await gw.get("/crm/openapi.json")).json()
        assert doc["servers"] == [{"url": "http://localhost/crm", "description": "This gateway"}]
        contact = doc["paths"]["/v4/Contact/get"]["post"]["x-codeSamples"][0]["source"]
        assert contact.startswith("curl -s 'http://localhost/crm/v4/Contact/get'")
        assert (await gw.get(f"/crm{ASSETS}/swagger-init.js")).status_code == 200


async def test_the_browsers_favicon_request_gets_the_docs_icon(gw_sandbox):
    """Browsers fetch /favicon.ico whatever a page links: the same icon the pages link."""
    icon = await gw_sandbox.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/png"
    assert icon.content == (await gw_sandbox.get(f"{ASSETS}/favicon.png")).content
    assert icon.content.startswith(b"\x89PNG")
