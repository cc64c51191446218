"""The CiviCRM API key never appears in a response body, header or log line."""

from __future__ import annotations

import logging

from tests.conftest import ADMIN_KEY, SITE_KEY, gateway_client, http_settings


async def test_api_key_never_leaks(upstream, caplog):
    # The admin contact's api_key field holds the very key the gateway uses (as in real CiviCRM).
    upstream.sandbox.api4("Contact", "update", {"where": [["id", "=", 2]], "values": {"api_key": ADMIN_KEY}})
    calls = [
        ("POST", "/v4/Contact/get", {"json": {}}),
        ("POST", "/v4/Contact/get", {"json": {"select": ["*", "api_key"]}}),
        ("POST", "/v4/Contact/get", {"json": {"where": [["id", "=", 2]], "select": ["api_key"]}}),
        ("GET", "/v4/Contact/get", {"params": {"id": "2"}}),
        ("POST", "/v3/Contact/get", {"json": {"id": 2, "return": "api_key"}}),
        ("POST", "/v3/Contact/getsingle", {"json": {"id": 2}}),
        ("POST", "/v4/Foo/get", {"json": {}}),
        ("POST", "/v4/Contact/get", {"json": {"where": [["nope", "=", ADMIN_KEY]]}}),
        ("POST", "/v4/Contact/get", {"content": b"{bad"}),
        ("GET", "/readyz", {}),
    ]
    seen = []
    with caplog.at_level(logging.DEBUG):
        async with gateway_client(
            http_settings(upstream.url, http_site_key=SITE_KEY, log_level="debug")
        ) as gw:
            for method, path, kwargs in calls:
                response = await gw.request(method, path, **kwargs)
                seen.append(response.text + str(response.headers))
        async with gateway_client(http_settings(upstream.url, http_api_key="wrong-key-" + ADMIN_KEY)) as gw:
            response = await gw.post("/v4/Contact/get", json={})
            assert response.status_code == 502
            seen.append(response.text + str(response.headers))
    assert all(ADMIN_KEY not in text for text in seen)
    assert all(SITE_KEY not in text for text in seen)
    assert ADMIN_KEY not in caplog.text and SITE_KEY not in caplog.text
    # The calls really ran: the admin record came back, without its key.
    assert '"id":2' in seen[0].replace(" ", "") and '"api_key"' not in seen[0]
    # Asking for the key outright is refused by the default policy, not silently emptied.
    assert "gateway-policy-denied" in seen[1] and "gateway-policy-denied" in seen[2]
