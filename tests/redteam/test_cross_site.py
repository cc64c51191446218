"""A web page of another origin cannot use a tokenless gateway: headless Chromium opens an
attacker's page (served on another port of 127.0.0.1, so another origin) that tries every
request a page can send without a CORS preflight, and DNS rebinding is tried by Host header.
The gateway (a real uvicorn process) must refuse each of them itself, and create nothing."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.conftest import ThreadServer

pytestmark = pytest.mark.slow

ATTACK = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" target="sink" enctype="text/plain"
      action="{gw}/v4/Contact/create">
  <input name='{{"contact_type":"Individual","first_name":"EvilForm","x":"' value='"}}'>
</form>
<form id="urlform" method="POST" target="sink" action="{gw}/v4/Contact/create">
  <input name="first_name" value="EvilUrlForm"><input name="contact_type" value="Individual">
</form>
<script>
const body = JSON.stringify({{contact_type: "Individual", first_name: "EvilFetch"}});
const attempts = [
  fetch("{gw}/v4/Contact/create", {{method: "POST", mode: "no-cors", body,
        headers: {{"Content-Type": "text/plain"}}}}),
  fetch("{gw}/v4/Contact/create", {{method: "POST", mode: "no-cors",
        body: new Blob([body])}}),
  fetch("{gw}/v4/Contact/create", {{method: "POST", mode: "cors", body,
        headers: {{"Content-Type": "application/json"}}}}),
  fetch("{gw}/v4/Contact/get", {{mode: "cors"}}).then(r => r.text()).then(t => {{
        document.title = "READ:" + t.slice(0, 40); }}),
];
Promise.allSettled(attempts).then(() => {{
  document.getElementById("form").submit();
  setTimeout(() => document.getElementById("urlform").submit(), 300);
  setTimeout(() => {{ document.body.dataset.done = "1"; }}, 1500);
}});
</script></body></html>"""


def refusals(metrics: str) -> dict[str, float]:
    """POSTs answered 403 or 415, from the gateway's own counters (refused before routing, so
    under any route label)."""
    out = {"403": 0.0, "415": 0.0}
    for line in metrics.splitlines():
        if line.startswith("gateway_requests_total{") and 'method="POST"' in line:
            status = re.search(r'status="(\d+)"', line)
            if status and status.group(1) in out:
                out[status.group(1)] += float(line.rsplit(" ", 1)[1])
    return out


def test_pages_of_other_origins_are_refused(chromium, gateway_process):
    gw = gateway_process({"CIVI_GATEWAY_SANDBOX_DEMO": "0", "CIVI_GATEWAY_SANDBOX_DB": ":memory:"})
    page = ThreadServer(
        Starlette(routes=[Route("/", lambda request: HTMLResponse(ATTACK.format(gw=gw.url)))])
    ).start()
    try:
        before = httpx.post(gw.url + "/v4/Contact/get", json={"select": ["id"]}).json()
        chromium.get(page.url + "/")
        deadline = time.monotonic() + 30
        while chromium.execute_script("return document.body.dataset.done") != "1":
            assert time.monotonic() < deadline, "the attack page did not finish"
            time.sleep(0.1)
        # text/plain fetch, Blob fetch, the text/plain form and the urlencoded form: each
        # refused by the gateway with 403 (the browser sends an Origin). The CORS fetch with
        # JSON never leaves the browser: its preflight fails. Waited for by the gateway's own
        # counter, since the last form's answer may come after the page says it is done.
        while (counts := refusals(httpx.get(gw.url + "/metrics").text))["403"] < 4:
            assert time.monotonic() < deadline, counts
            time.sleep(0.1)
        assert counts == {"403": 4.0, "415": 0.0}
        after = httpx.post(gw.url + "/v4/Contact/get", json={"select": ["id", "first_name"]})
        assert after.status_code == 200
        assert [r["id"] for r in after.json()] == [r["id"] for r in before]
        assert not chromium.title.startswith("READ:")
    finally:
        page.stop()


def test_dns_rebinding_and_foreign_origins_by_hand(gateway_process):
    gw = gateway_process({"CIVI_GATEWAY_SANDBOX_DEMO": "0", "CIVI_GATEWAY_SANDBOX_DB": ":memory:"})
    with httpx.Client(base_url=gw.url) as client:
        ok = client.post("/v4/Contact/get", json={"limit": 1})
        assert ok.status_code == 200
        for headers in (
            {"Host": "evil.example"},
            {"Host": "evil.example:8000"},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            response = client.post("/v4/Contact/get", json={"limit": 1}, headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["type"] == "/problems/cross-origin-denied"
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            None,
        ):
            response = client.post(
                "/v4/Contact/create",
                content=b'{"contact_type":"Individual","first_name":"X"}',
                headers={"Content-Type": content_type} if content_type else {},
            )
            assert response.status_code == 415, (content_type, response.text)
        gone = client.post("/v4/Contact/get", json={"where": [["first_name", "=", "X"]]})
        assert gone.json() == []


def test_the_gateways_own_pages_are_its_origin(gateway_process):
    """What /docs' Try-it-out sends (an Origin naming the very host and port it asked, with
    Sec-Fetch-Site: same-origin) passes; any other port, name or a contradicting
    Sec-Fetch-Site does not, and a rebinding name is refused even as its own origin."""
    gw = gateway_process({"CIVI_GATEWAY_SANDBOX_DEMO": "0", "CIVI_GATEWAY_SANDBOX_DB": ":memory:"})
    own = f"127.0.0.1:{gw.port}"
    with httpx.Client(base_url=gw.url) as client:
        for headers in (
            {"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"},
            {"Origin": f"http://{own}"},
            {"Origin": f"http://localhost:{gw.port}", "Host": f"localhost:{gw.port}"},
        ):
            response = client.post("/v4/Contact/get", json={"limit": 1}, headers=headers)
            assert response.status_code == 200, (headers, response.text)
        for headers in (
            {"Origin": f"http://127.0.0.1:{gw.port + 1}"},
            {"Origin": f"http://localhost:{gw.port}"},  # Host 127.0.0.1: another origin
            {"Origin": "http://127.0.0.1"},
            {"Origin": f"http://{own}", "Sec-Fetch-Site": "cross-site"},
            {"Origin": f"http://{own}", "Sec-Fetch-Site": "same-site"},
            {"Origin": f"http://evil.example:{gw.port}", "Host": f"evil.example:{gw.port}"},
            {"Origin": f"{own}"},
        ):
            response = client.post("/v4/Contact/get", json={"limit": 1}, headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["type"] == "/problems/cross-origin-denied"
        # Its own origin still sends JSON: a form posted from it is no call.
        form = client.post(
            "/v4/Contact/create",
            content=b"contact_type=Individual",
            headers={"Origin": f"http://{own}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415


@pytest.mark.parametrize("action", ["create", "update", "delete"])
async def test_a_get_never_writes_through_its_chains(gw_sandbox, action):
    """A GET is what an <img> tag sends: a read whose chain writes is 405 and changes nothing."""
    made = await gw_sandbox.post(
        "/v4/Contact/create", json={"values": {"first_name": "Kept", "contact_type": "Individual"}}
    )
    [victim] = made.json()
    chained = {"values": {"first_name": "Changed"}, "where": [["id", "=", "$id"]]}
    if action == "create":
        chained = {"values": {"first_name": "New", "contact_type": "Individual"}}
    elif action == "delete":
        chained = {"where": [["id", "=", "$id"]]}
    params = {"where": [["id", "=", victim["id"]]], "chain": {"w": ["Contact", action, chained]}}
    response = await gw_sandbox.get("/v4/Contact/get", params={"params": json.dumps(params)})
    assert response.status_code == 405 and response.json()["type"] == "/problems/method-not-allowed"
    assert response.headers["allow"] == "POST"
    rows = (await gw_sandbox.post("/v4/Contact/get", json={"select": ["first_name"]})).json()
    names = [r["first_name"] for r in rows]
    assert names.count("Kept") == 1 and "Changed" not in names and "New" not in names


async def test_v3_params_are_fields_of_the_entity(gw_sandbox):
    """Understood or refused, APIv3 too: a param that is no field (nor option) is a 400."""
    ok = await gw_sandbox.post("/v3/Contact/get", json={"return": "display_name", "contact_id": 1, "id": 1})
    assert ok.status_code == 200, ok.text
    bad = await gw_sandbox.post("/v3/Contact/get", json={"return": "display_name", "bogus_param": 1})
    assert bad.status_code == 400 and bad.json()["type"] == "/problems/unknown-field", bad.text
    sorted_ = await gw_sandbox.post("/v3/Contact/get", json={"return": "id", "option_sort": "hash DESC"})
    assert sorted_.status_code == 403 and "credential" in sorted_.json()["detail"]
