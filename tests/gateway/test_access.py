"""Client tokens, per-client policy, limits, CORS and per-client CiviCRM identity, over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
import pytest

from gateway.backends.http import HttpBackend
from gateway.flow.clients import hash_token
from gateway.services import Timing
from gateway.settings import SettingsError, load_settings
from gateway.web.app import create_app
from tests.conftest import SITE_KEY, assert_problem, gateway_client, http_settings

READER = "cgw_reader-token-0123456789abcdef"
WRITER = "cgw_writer-token-fedcba9876543210"
STAFF = "cgw_staff-token-aaaabbbbccccdddd"
LIMITED = "cgw_limited-token-eeeeffff00001111"


@pytest.fixture
def clients_file(tmp_path, upstream):
    staff_id = upstream.sandbox.api4(
        "Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Staff"}}
    )["values"][0]["id"]
    upstream.config.api_keys["staff-civicrm-key-42"] = staff_id
    (tmp_path / "staff.key").write_text("staff-civicrm-key-42\n")
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[defaults]
rate_limit = "1000/minute"

[clients.reader]
token_sha256 = "{hash_token(READER)}"
allow = ["v4:Contact.get*", "v4:*.getFields", "v3:Contact.get"]
read_only = true
max_limit = 3
rate_limit = "100/minute"

[clients.limited]
token_sha256 = "{hash_token(LIMITED)}"
allow = ["v4:Contact.get"]
rate_limit = "5/minute"

[clients.writer]
token_sha256 = "{hash_token(WRITER)}"
concurrency = 1

[clients.staff]
token_sha256 = "{hash_token(STAFF)}"
civicrm_api_key_file = "{tmp_path / "staff.key"}"
""")
    return path


@contextlib.asynccontextmanager
async def secured(upstream, clients_file, **overrides):
    settings = http_settings(upstream.url, clients_file=clients_file, http_site_key=SITE_KEY, **overrides)
    async with gateway_client(settings) as gw:
        yield gw


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def test_missing_or_wrong_token_is_401(upstream, clients_file):
    async with secured(upstream, clients_file) as gw:
        for headers in (
            {},
            bearer("cgw_nope"),
            {"Authorization": f"Basic {READER}"},
            {"Authorization": "Bearer "},
        ):
            response = await gw.post("/v4/Contact/get", json={}, headers=headers)
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")
        ok = await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(READER))
        assert ok.status_code == 200
        # Probes stay open.
        assert (await gw.get("/healthz")).status_code == 200


async def test_policy_denials_are_distinct_403(upstream, clients_file):
    async with secured(upstream, clients_file) as gw:
        h = bearer(READER)
        for path, body in [
            ("/v4/Contact/create", {"contact_type": "Individual", "first_name": "X"}),
            ("/v4/Email/get", {}),
            ("/v4/Contact/get", {"chain": {"e": ["Email", "delete", {"where": [["id", ">", 0]]}]}}),
            ("/v4/Contact/get", {"join": [["Email AS e", "LEFT"]]}),
            ("/v4/Contact/get", {"select": ["api_key"]}),
            ("/v4/Contact/get", {"limit": 10}),
            ("/v3/Contact/get", {"api.Email.delete": {}}),
        ]:
            problem = assert_problem(await gw.post(path, json=body, headers=h), 403, "gateway-policy-denied")
            assert "civicrm" not in problem
        # The cap applies when no limit is given (more contacts exist than the cap).
        for n in range(5):
            upstream.sandbox.api4(
                "Contact", "create", {"values": {"contact_type": "Individual", "first_name": f"Capped{n}"}}
            )
        # The same query by a client without a cap: what the capped answer must begin with.
        every = (await gw.post("/v4/Contact/get", json={"select": ["id"]}, headers=bearer(WRITER))).json()
        assert len(every) > 5  # well over the cap of 3
        first_three = every[:3]
        capped = await gw.post("/v4/Contact/get", json={"select": ["id"]}, headers=h)
        assert capped.status_code == 200, capped.text
        assert capped.json() == first_three
        # ... and to chained gets.
        chained = await gw.post(
            "/v4/Contact/get",
            headers=h,
            json={"select": ["id"], "limit": 1, "chain": {"all": ["Contact", "get", {"select": ["id"]}]}},
        )
        assert chained.status_code == 200, chained.text
        assert chained.json() == [{**first_three[0], "all": first_three}]


async def test_denied_calls_change_nothing(upstream, clients_file):
    before = upstream.sandbox.api4("Email", "get", {})["values"]
    async with secured(upstream, clients_file) as gw:
        response = await gw.post(
            "/v4/Contact/get",
            headers=bearer(READER),
            json={"chain": {"e": ["Email", "create", {"values": {"contact_id": "$id", "email": "x@y.z"}}]}},
        )
        assert response.status_code == 403
    assert upstream.sandbox.api4("Email", "get", {})["values"] == before


async def test_rate_limit_is_429_with_retry_after(upstream, clients_file):
    async with secured(upstream, clients_file) as gw:
        ok = [
            (await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(LIMITED))) for _ in range(3)
        ]
        assert [r.status_code for r in ok] == [200] * 3
        # Refused requests count too: probing the policy is not free.
        denied = [(await gw.post("/v4/Email/get", json={}, headers=bearer(LIMITED))) for _ in range(2)]
        assert [r.status_code for r in denied] == [403, 403]
        statuses = [
            (await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(LIMITED))) for _ in range(2)
        ]
        assert_problem(statuses[0], 429, "rate-limited")
        assert int(statuses[0].headers["retry-after"]) >= 1
        # Other clients have their own budget.
        assert (
            await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(WRITER))
        ).status_code == 200


class HeldContactGets(HttpBackend):
    """Contact.get calls wait for ``release``; metadata loads go through at once."""

    def __init__(self, settings, entered: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__(settings)
        self.entered, self.release = entered, release

    async def call(self, call, **kwargs):
        if (call.entity, call.action) == ("Contact", "get"):
            self.entered.set()
            await self.release.wait()
        return await super().call(call, **kwargs)


async def test_per_client_concurrency(upstream, clients_file):
    settings = http_settings(upstream.url, clients_file=clients_file)
    entered, release = asyncio.Event(), asyncio.Event()
    app = create_app(
        settings, backend=HeldContactGets(settings, entered, release), timing=Timing(concurrency_wait=0.2)
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as gw:
            first = asyncio.create_task(gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(WRITER)))
            await entered.wait()  # the first call holds the client's only slot
            second = await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(WRITER))
            assert_problem(second, 429, "rate-limited")
            release.set()
            assert (await first).status_code == 200


async def test_per_client_civicrm_identity(upstream, clients_file):
    async with secured(upstream, clients_file) as gw:
        # The gateway's own (admin) key may change settings; the staff client's own key may not.
        as_admin = await gw.post(
            "/v4/Setting/set", json={"values": {"debug_enabled": False}}, headers=bearer(WRITER)
        )
        assert as_admin.status_code == 200, as_admin.text
        as_staff = await gw.post(
            "/v4/Setting/set", json={"values": {"debug_enabled": False}}, headers=bearer(STAFF)
        )
        assert_problem(as_staff, 403, "civicrm-permission-denied")


async def test_anonymous_only_from_loopback(upstream):
    app = create_app(http_settings(upstream.url))
    async with app.router.lifespan_context(app):
        remote = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=remote, base_url="http://localhost") as gw:
            assert_problem(await gw.post("/v4/Contact/get", json={}), 401, "unauthenticated")
        local = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=local, base_url="http://localhost") as gw:
            assert (await gw.post("/v4/Contact/get", json={"limit": 1})).status_code == 200
            # A reverse proxy on the same host is loopback too, but speaks for the network.
            for header in (
                {"X-Forwarded-For": "203.0.113.9"},
                {"Forwarded": "for=203.0.113.9"},
                {"X-Real-IP": "203.0.113.9"},
            ):
                proxied = await gw.post("/v4/Contact/get", json={"limit": 1}, headers=header)
                assert_problem(proxied, 401, "unauthenticated")
                assert "proxy" in proxied.json()["detail"]
    allowed = create_app(http_settings(upstream.url, allow_anonymous=True))
    async with allowed.router.lifespan_context(allowed):
        remote = httpx.ASGITransport(app=allowed, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=remote, base_url="http://localhost") as gw:
            assert (await gw.post("/v4/Contact/get", json={"limit": 1})).status_code == 200


def test_non_loopback_bind_needs_tokens_or_explicit_anonymous(monkeypatch, tmp_path):
    monkeypatch.setenv("CIVI_GATEWAY_SECRETS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="CIVI_GATEWAY_ALLOW_ANONYMOUS"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", allow_anonymous=True).allow_anonymous
    assert load_settings(host="0.0.0.0", client_tokens="a:sha256:" + "0" * 64).host == "0.0.0.0"


def test_anonymous_warning_is_logged(upstream, caplog):
    with caplog.at_level(logging.WARNING):
        create_app(http_settings(upstream.url, allow_anonymous=True))
    assert "anyone who can reach" in caplog.text


@pytest.mark.parametrize("tokens", ["plaintext-token", "a:md5:abc", "x:sha256:" + "g" * 64])
def test_plaintext_tokens_are_refused_without_echo(upstream, tokens):
    with pytest.raises(SettingsError) as info:
        create_app(http_settings(upstream.url, client_tokens=tokens))
    assert tokens not in str(info.value)


async def test_env_tokens(upstream):
    settings = http_settings(upstream.url, client_tokens=f"ci:sha256:{hash_token(READER)}")
    async with gateway_client(settings) as gw:
        assert (
            await gw.post("/v4/Contact/get", json={"limit": 1}, headers=bearer(READER))
        ).status_code == 200
        assert (await gw.post("/v4/Contact/get", json={}, headers=bearer(WRITER))).status_code == 401


async def test_cors_off_by_default_and_configurable(upstream):
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}
    async with gateway_client(http_settings(upstream.url)) as gw:
        response = await gw.options("/v4/Contact/get", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = http_settings(upstream.url, cors_origins=["https://app.example.org"])
    async with gateway_client(settings) as gw:
        response = await gw.options("/v4/Contact/get", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example.org"
        other = await gw.options("/v4/Contact/get", headers={**preflight, "Origin": "https://evil.example"})
        # Refused: no CORS grant at all, and the preflight itself fails.
        assert "access-control-allow-origin" not in other.headers
        assert (other.status_code, other.text) == (400, "Disallowed CORS origin")


async def test_tokens_never_logged_or_echoed(upstream, clients_file, caplog):
    with caplog.at_level(logging.DEBUG):
        async with secured(upstream, clients_file, log_level="debug") as gw:
            texts = []
            for token in (READER, "cgw_wrong-" + READER):
                for path in ("/v4/Contact/get", "/v4/Contact/create", "/v4/Nope/get"):
                    r = await gw.post(path, json={}, headers=bearer(token))
                    texts.append(r.text + str(r.headers))
    assert all(READER not in t for t in texts)
    assert READER not in caplog.text and "staff-civicrm-key-42" not in caplog.text
