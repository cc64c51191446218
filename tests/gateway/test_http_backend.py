"""The gateway's HTTP backend against the sandbox CiviCRM over a real loopback socket:
success for APIv4 and APIv3 over GET and POST, and every row of the error table."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import (
    ADMIN_KEY,
    SITE_KEY,
    TRUSTED_TOKEN,
    ThreadServer,
    assert_problem,
    free_port,
    gateway_client,
    http_settings,
    self_signed_cert,
    trusted,
)

JSON = {"Content-Type": "application/json"}


# --- success --------------------------------------------------------------------------------


async def test_v4_create_get_update_delete(gw):
    created = await gw.post(
        "/v4/Contact/create",
        json={"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "Lovelace"}},
    )
    assert created.status_code == 200, created.text
    [ada] = created.json()
    assert ada["display_name"] == "Ada Lovelace" and isinstance(ada["id"], int)

    got = await gw.post(
        "/v4/Contact/get", json={"select": ["id", "display_name"], "where": [["last_name", "=", "Lovelace"]]}
    )
    assert got.json() == [{"id": ada["id"], "display_name": "Ada Lovelace"}]
    assert got.headers["x-result-count"] == "1"

    updated = await gw.post("/v4/Contact/update", json={"id": ada["id"], "job_title": "Analyst"})
    assert updated.status_code == 200 and updated.json()[0]["job_title"] == "Analyst"

    deleted = await gw.post("/v4/Contact/delete", json={"id": ada["id"], "useTrash": False})
    assert deleted.json() == [{"id": ada["id"]}]
    again = await gw.get("/v4/Contact/get", params={"id": str(ada["id"])})
    assert again.status_code == 200 and again.json() == []


async def test_v4_get_over_get_with_query(gw):
    await gw.post(
        "/v4/Contact/create",
        json={"contact_type": "Individual", "first_name": "Grace", "last_name": "Hopper"},
    )
    simple = await gw.get("/v4/Contact/get", params={"last_name": "Hopper", "select": "id,first_name"})
    assert simple.status_code == 200
    assert [r["first_name"] for r in simple.json()] == ["Grace"]
    as_json = await gw.get(
        "/v4/Contact/get", params={"params": '{"select":["first_name"],"where":[["last_name","=","Hopper"]]}'}
    )
    # APIv4 answers the id with any select, as CiviCRM does
    assert as_json.json() == [{"id": simple.json()[0]["id"], "first_name": "Grace"}]


async def test_row_count_gives_total_header(gw):
    response = await gw.post("/v4/Contact/get", json={"select": ["id", "row_count"], "limit": 1})
    assert response.status_code == 200
    assert len(response.json()) == 1
    assert int(response.headers["x-total-count"]) >= 2
    assert response.headers["x-result-count"] == "1"


async def test_write_over_get_is_405(gw):
    response = await gw.get("/v4/Contact/create", params={"first_name": "Via", "contact_type": "Individual"})
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


async def test_v3_calls(gw):
    created = await gw.post("/v3/Contact/create", json={"contact_type": "Individual", "first_name": "Vthree"})
    assert created.status_code == 200, created.text
    [record] = created.json()
    assert record["first_name"] == "Vthree"
    cid = record["id"]

    got = await gw.get("/v3/Contact/get", params={"id": cid, "return": "display_name"})
    assert got.status_code == 200 and got.json()[0]["display_name"] == "Vthree"

    single = await gw.post("/v3/Contact/getsingle", json={"id": cid})
    assert single.status_code == 200 and isinstance(single.json(), dict)
    assert single.json()["display_name"] == "Vthree" and "is_error" not in single.json()

    count = await gw.post("/v3/Contact/getcount", json={})
    assert count.status_code == 200 and isinstance(count.json(), int) and count.json() >= 3

    value = await gw.get("/v3/Contact/getvalue", params={"id": cid, "return": "display_name"})
    assert value.status_code == 200 and value.json() == "Vthree"


async def test_v3_getsingle_many_and_none(gw):
    many = await gw.post("/v3/Contact/getsingle", json={})
    assert_problem(many, 409, "civicrm-conflict")
    none = await gw.post("/v3/Contact/getsingle", json={"id": 999999})
    assert_problem(none, 404, "record-not-found")


# --- error table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,body,status,slug",
    [
        ("/v4/Foo/get", {}, 404, "unknown-api"),
        ("/v4/Contact/frobnicate", {}, 404, "unknown-api"),
        ("/v3/Foo/get", {}, 404, "unknown-api"),
        ("/v3/Contact/frobnicate", {}, 404, "unknown-api"),
        ("/v4/Contact/get", {"where": [["no_such_field", "=", "x"]]}, 400, "unknown-field"),
        ("/v4/Contact/get", {"select": ["no_such_field"]}, 400, "unknown-field"),
        (
            "/v4/Contact/create",
            {"values": {"contact_type": "Individual", "frist_name": "A"}},
            400,
            "unknown-field",
        ),
        ("/v4/contact/GET", {"where": [["id", "=", "abc"]]}, 400, "civicrm-bad-request"),
        ("/v4/Contact/get", {"limit": -1}, 400, "invalid-request"),
        ("/v4/Contact/get", {"where": ["id", "=", 2]}, 400, "invalid-request"),
        ("/v4/Contact/get", {"where": [["id"]]}, 400, "civicrm-bad-request"),
        ("/v4/Contact/get", {"select": ["LENGTH(last_name) AS n"]}, 400, "civicrm-bad-request"),
        ("/v4/Contact/get", {"frobnicate": True, "select": ["id"]}, 400, "unknown-field"),
        ("/v4/Contact/validateChecksum", {}, 400, "civicrm-bad-request"),
        ("/v4/Contact/delete", {}, 400, "civicrm-bad-request"),
        ("/v4/Email/replace", {"where": [["contact_id", "=", 2]]}, 400, "civicrm-bad-request"),
        (
            "/v4/Contact/update",
            {"where": [["id", "=", 2]], "values": {"is_deleted": "maybe"}},
            422,
            "civicrm-validation",
        ),
        ("/v4/Contact/get", {"where": [["id", "FOO", 1]]}, 400, "civicrm-bad-request"),
        ("/v4/Contact/get", {"limit": "abc"}, 400, "civicrm-bad-request"),
        ("/v4/Contact/update", {"values": {"first_name": "X"}}, 400, "civicrm-bad-request"),
        ("/v4/Email/create", {"values": {"contact_id": 2}}, 422, "civicrm-validation"),
        ("/v3/Contact/create", {"first_name": "NoType"}, 422, "civicrm-validation"),
    ],
)
@pytest.mark.parametrize("debug", [True, False], ids=["debug-user", "least-privileged-user"])
async def test_client_mistakes_map_to_4xx(upstream, gw, debug, path, body, status, slug):
    """The same status and problem type whether or not CiviCRM hides its error texts from
    the gateway's user: the gateway finds these mistakes itself."""
    upstream.config.debug_output = debug
    problem = assert_problem(await gw.post(path, json=body), status, slug)
    assert problem["detail"] and "Sorry an error occurred" not in problem["detail"]
    assert "debug" not in problem.get("civicrm", {}) and "trace" not in str(problem)


async def test_civicrm_errors_keep_civicrms_words(gw):
    """What only CiviCRM can tell (a reference to a record that does not exist) is mapped from
    its own message, which the problem carries."""
    problem = assert_problem(
        await gw.post("/v4/Email/create", json={"values": {"contact_id": 999999, "email": "n@example.org"}}),
        422,
        "civicrm-validation",
    )
    assert problem["civicrm"]["error_message"]


async def test_unknown_entity_detail_is_civicrms_message(gw):
    problem = assert_problem(await gw.post("/v4/Foo/get", json={}), 404, "unknown-api")
    assert problem["detail"] == (
        "API (Foo, get) does not exist (or the extension it belongs to is not enabled)."
    )


async def test_gateway_rejects_bad_input_before_forwarding(gw):
    assert_problem(await gw.post("/v4/Contact/get", content=b"{nope", headers=JSON), 400, "invalid-request")
    assert_problem(await gw.post("/v4/Contact/get", json=[1, 2]), 400, "invalid-request")
    assert_problem(await gw.post("/v4/Contact;rm/get", json={}), 400, "invalid-request")


async def test_permission_denied_is_403(upstream):
    staff_id = upstream.sandbox.api4(
        "Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Staff"}}
    )["values"][0]["id"]
    upstream.config.api_keys["staffkey-00112233"] = staff_id
    settings = http_settings(upstream.url, http_api_key="staffkey-00112233", http_site_key=SITE_KEY)
    async with gateway_client(settings) as gw:
        problem = assert_problem(
            await gw.post("/v4/Setting/set", json={"values": {"debug_enabled": False}}),
            403,
            "civicrm-permission-denied",
        )
        assert problem["civicrm"]["error_message"]


async def test_wrong_key_is_502_misconfigured_and_logged(upstream, caplog):
    async with gateway_client(http_settings(upstream.url, http_api_key="wrongkey123")) as gw:
        problem = assert_problem(await gw.post("/v4/Contact/get", json={}), 502, "gateway-misconfigured")
    assert "operator" in problem["detail"]
    assert any(r.levelname == "ERROR" and "credentials" in r.getMessage() for r in caplog.records)


async def test_guard_without_site_key_is_502(upstream):
    staff_id = upstream.sandbox.api4(
        "Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Guarded"}}
    )["values"][0]["id"]
    upstream.config.api_keys["guardedkey-998877"] = staff_id
    async with gateway_client(http_settings(upstream.url, http_api_key="guardedkey-998877")) as gw:
        assert_problem(await gw.post("/v4/Contact/get", json={}), 502, "gateway-misconfigured")


async def test_maintenance_is_503(upstream, gw):
    upstream.config.maintenance = True
    try:
        assert_problem(await gw.post("/v4/Contact/get", json={}), 503, "upstream-maintenance")
    finally:
        upstream.config.maintenance = False
    assert (await gw.post("/v4/Contact/get", json={"limit": 1})).status_code == 200


async def test_masked_errors(upstream, gw):
    upstream.config.debug_output = False
    try:
        # A reference to a missing record: only CiviCRM can tell, and it hides the text.
        problem = assert_problem(
            await gw.post(
                "/v4/Email/create", json={"values": {"contact_id": 999999, "email": "n@example.org"}}
            ),
            502,
            "upstream-error",
        )
        assert "view debug output" in problem["detail"]
    finally:
        upstream.config.debug_output = True


async def test_unreachable_is_503():
    settings = http_settings(f"http://127.0.0.1:{free_port()}", validate_calls=False)
    async with gateway_client(settings) as gw:
        assert_problem(await gw.post("/v4/Contact/get", json={}), 503, "upstream-unavailable")


@contextlib.contextmanager
def fake_upstream(handler):
    app = Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST"])])
    server = ThreadServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_timeout_is_504():
    async def slow(request):
        await asyncio.sleep(3)
        return Response("{}", media_type="application/json")

    with fake_upstream(slow) as url:
        async with gateway_client(
            trusted(http_settings(url, http_timeout=0.3, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            assert_problem(await gw.post("/v4/Contact/get", json={}), 504, "upstream-timeout")


@pytest.mark.parametrize(
    "status,body,ctype,slug",
    [
        # PHP fatal (sample 13): CiviCRM failed, as cv's exit 255 and cv pipe's -32099 say
        (500, b"", "text/html; charset=UTF-8", "upstream-error"),
        (200, b"<html>login</html>", "text/html", "upstream-invalid-response"),  # a CMS login page
        (200, b'"just a string"', "application/json", "upstream-invalid-response"),
        (200, b'{"entity":"Contact"}', "application/json", "upstream-invalid-response"),
        (502, b"Bad Gateway", "text/plain", "upstream-invalid-response"),
    ],
)
async def test_garbage_is_502(status, body, ctype, slug):
    async def garbage(request):
        return Response(body, status_code=status, headers={"content-type": ctype})

    with fake_upstream(garbage) as url:
        async with gateway_client(
            trusted(http_settings(url, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            for path in ("/v4/Contact/get", "/v3/Contact/get"):
                assert_problem(await gw.post(path, json={}), 502, slug)


async def test_bare_503_is_unavailable():
    async def down(request):
        return Response("Service Unavailable", status_code=503, media_type="text/plain")

    with fake_upstream(down) as url:
        async with gateway_client(
            trusted(http_settings(url, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            assert_problem(await gw.post("/v4/Contact/get", json={}), 503, "upstream-unavailable")


# --- what goes on the wire --------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth,extra",
    [
        ("x-civi-auth", {}),
        ("bearer", {}),
        ("legacy", {"http_site_key": SITE_KEY}),
    ],
)
async def test_auth_styles_and_params_in_body(auth, extra):
    seen: list[dict] = []

    async def record(request):
        form = (await request.body()).decode()
        seen.append(
            {
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body": form,
                "method": request.method,
            }
        )
        return Response('{"values":[{"id":1}],"count":1}', media_type="application/json")

    with fake_upstream(record) as url:
        async with gateway_client(
            trusted(http_settings(url, http_auth=auth, **extra, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            assert (await gw.post("/v4/Contact/get", json={"where": [["id", "=", 1]]})).json() == [{"id": 1}]
    [req] = seen
    assert req["method"] == "POST" and req["query"] == ""
    assert req["path"] == "/civicrm/ajax/api4/Contact/get"
    assert req["headers"]["x-requested-with"] == "XMLHttpRequest"
    assert "params=" in req["body"] and "where" in req["body"].replace("%22", '"')
    if auth == "x-civi-auth":
        assert req["headers"]["x-civi-auth"] == f"Bearer {ADMIN_KEY}"
    elif auth == "bearer":
        assert req["headers"]["authorization"] == f"Bearer {ADMIN_KEY}"
    else:  # legacy: key and api_key form fields, which AuthX reads on civicrm/ajax/api4 too
        form = dict(parse_qsl(req["body"]))
        assert form["api_key"] == ADMIN_KEY and form["key"] == SITE_KEY
        assert "authorization" not in req["headers"] and "x-civi-auth" not in req["headers"]


async def test_basic_auth_against_sandbox(upstream):
    upstream.config.users["admin"] = ("pa55word-xyz", 2)
    settings = http_settings(
        upstream.url,
        http_auth="basic",
        http_username="admin",
        http_password="pa55word-xyz",
        http_api_key=None,
    )
    async with gateway_client(settings) as gw:
        response = await gw.post("/v4/Contact/get", json={"select": ["id"], "where": [["id", "=", 2]]})
        assert response.status_code == 200 and response.json() == [{"id": 2}]


async def test_legacy_auth_against_sandbox_v4(upstream):
    """An APIv4 call authenticates with the legacy fields: without them it would run as an
    anonymous visitor, who may not read contacts."""
    settings = http_settings(upstream.url, http_auth="legacy", http_site_key=SITE_KEY)
    async with gateway_client(settings) as gw:
        response = await gw.post("/v4/Contact/get", json={"select": ["id"], "where": [["id", "=", 2]]})
        assert response.status_code == 200 and response.json() == [{"id": 2}]
    bad = http_settings(
        upstream.url,
        http_auth="legacy",
        http_site_key=SITE_KEY,
        http_api_key="wrong-key-1",
        validate_calls=False,
    )
    async with gateway_client(bad) as gw:
        assert_problem(await gw.post("/v4/Contact/get", json={}), 502, "gateway-misconfigured")


async def test_legacy_auth_against_sandbox_v3(upstream):
    settings = http_settings(upstream.url, http_auth="legacy", http_site_key=SITE_KEY)
    async with gateway_client(settings) as gw:
        response = await gw.post("/v3/Contact/getcount", json={})
        assert response.status_code == 200 and response.json() >= 2
    bad = http_settings(upstream.url, http_auth="legacy", http_site_key=SITE_KEY, http_api_key="wrong-key-1")
    async with gateway_client(bad) as gw:
        assert_problem(await gw.post("/v3/Contact/getcount", json={}), 502, "gateway-misconfigured")


async def test_connections_are_kept_alive():
    client_ports: list[int] = []

    async def record(request):
        client_ports.append(request.client.port)
        return Response('{"values":[],"count":0}', media_type="application/json")

    with fake_upstream(record) as url:
        async with gateway_client(
            trusted(http_settings(url, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            for _ in range(5):
                assert (await gw.post("/v4/Contact/get", json={})).status_code == 200
            metrics = (await gw.get("/metrics")).text
    assert len(client_ports) == 5 and len(set(client_ports)) == 1
    # The pool's own count, as /metrics shows it: one connection, idle between calls.
    assert 'gateway_backend_pool{backend="http",gauge="connections"} 1.0' in metrics
    assert 'gateway_backend_pool{backend="http",gauge="idle_connections"} 1.0' in metrics


async def test_cookies_are_never_sent_back():
    """A CMS session cookie one call earned must not ride along on the next (another client's)."""
    cookies: list[str | None] = []

    async def sets_cookie(request):
        cookies.append(request.headers.get("cookie"))
        response = Response('{"values":[],"count":0}', media_type="application/json")
        response.set_cookie("SESS123", "user-session", path="/")
        return response

    with fake_upstream(sets_cookie) as url:
        async with gateway_client(
            trusted(http_settings(url, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            for _ in range(3):
                assert (await gw.post("/v4/Contact/get", json={})).status_code == 200
    assert cookies == [None, None, None]


async def test_redirects_are_not_followed():
    """A redirect (http to https, a login page) would turn the POST into a GET elsewhere."""
    hits: list[str] = []

    async def redirects(request):
        hits.append(request.url.path)
        return Response("", status_code=302, headers={"location": "/user/login"})

    with fake_upstream(redirects) as url:
        async with gateway_client(
            trusted(http_settings(url, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            assert_problem(await gw.post("/v4/Contact/get", json={}), 502, "upstream-invalid-response")
    # The call, and the breaker's health probe (an answer that is not CiviCRM's API may be a
    # crash on this call's input alone); neither followed to /user/login.
    assert hits == ["/civicrm/ajax/api4/Contact/get"] * 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize(
    "settings,status",
    [
        ({}, 503),  # self-signed: not in the trust store
        ({"http_ca_bundle": "CERT"}, 200),  # the operator's CA bundle
        ({"http_verify_ssl": False}, 200),  # checking switched off
    ],
)
async def test_https_upstream_certificate_checks(certificate, settings, status):
    async def answer(request):
        return Response('{"values":[{"id":1}],"count":1}', media_type="application/json")

    settings = {k: (str(certificate[0]) if v == "CERT" else v) for k, v in settings.items()}
    server = ThreadServer(
        Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])]), tls=certificate
    ).start()
    try:
        async with gateway_client(
            trusted(http_settings(server.url, **settings, validate_calls=False)), token=TRUSTED_TOKEN
        ) as gw:
            response = await gw.post("/v4/Contact/get", json={})
    finally:
        server.stop()
    if status == 200:
        assert response.json() == [{"id": 1}]
    else:  # refused during the handshake, before anything was sent
        body = assert_problem(response, 503, "upstream-unavailable")
        assert body["detail"] == (
            "The gateway cannot connect to CiviCRM (ClientConnectorCertificateError)."
        ), body


async def test_unknown_fields_name_the_closest(gw):
    """CiviCRM would drop an unknown select field or create value silently: a 400 instead."""
    problem = assert_problem(
        await gw.post("/v4/Contact/get", json={"select": ["frist_name"]}), 400, "unknown-field"
    )
    assert problem["detail"].startswith("Contact has no field 'frist_name'. Did you mean 'first_name' ")
    problem = assert_problem(
        await gw.post(
            "/v4/Contact/create", json={"values": {"contact_type": "Individual", "last_nmae": "X"}}
        ),
        400,
        "unknown-field",
    )
    assert "'last_name'" in problem["detail"]


async def test_update_of_a_missing_record_is_404_even_when_civicrm_hides_it(upstream, gw):
    upstream.config.debug_output = False
    problem = assert_problem(
        await gw.post("/v4/Contact/update", json={"id": 987654321, "job_title": "x"}), 404, "record-not-found"
    )
    assert problem["detail"] == "Expected one Contact but found 0"


async def test_bad_params_json_and_non_json_bodies_say_so(gw, upstream, tmp_path):
    problem = assert_problem(
        await gw.get("/v4/Contact/get", params={"params": "{nope"}), 400, "invalid-request"
    )
    assert problem["detail"].startswith("Query field 'params' is not valid JSON")
    # With client tokens a form body reaches the parser, which says what it expects.
    tokens = "formclient:sha256:" + hashlib.sha256(b"cgw_form-client-0123456789").hexdigest()
    async with gateway_client(http_settings(upstream.url, client_tokens=tokens)) as secured:
        response = await secured.post(
            "/v4/Contact/get",
            content=b"select=id",
            headers={
                "Authorization": "Bearer cgw_form-client-0123456789",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    problem = assert_problem(response, 400, "invalid-request")
    assert "application/x-www-form-urlencoded" in problem["detail"]
    assert "Content-Type: application/json" in problem["detail"]


async def test_legacy_auth_batch_runs_as_the_gateways_user(upstream):
    """An APIv4 batch (one multi-call request) carries the legacy fields too: without them it
    ran as an anonymous visitor (issue 27), who is shown no contacts."""
    settings = http_settings(upstream.url, http_auth="legacy", http_site_key=SITE_KEY)
    calls = {"one": ["Contact", "get", {"select": ["id"], "where": [["id", "=", 2]]}]}
    async with gateway_client(settings) as gw:
        response = await gw.post("/v4/batch", json=calls)
    assert response.status_code == 200, response.text
    assert response.json()["one"] == {"status": 200, "values": [{"id": 2}]}
