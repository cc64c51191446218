"""One client cannot take the gateway down for others (issue 25, item 6).

CiviCRM answers a call it fails on with HTTP 500: an API error envelope ("DB Error: ...", or
"Sorry an error occurred" for a user without 'view debug output'), or, for a PHP fatal error,
an empty text/html page. Only failures that say CiviCRM is unhealthy may open the circuit
breaker; an unclear one (the PHP crash) counts only when a trivial read as the gateway crashes
too. The upstream here is the sandbox's wire server behind a stand-in that answers those 500s
to one kind of input, and a crash to everything when told to.

The inputs are reads the gateway's own checks let through (an invalid REGEXP or a list for
'=' is refused by the gateway with 400 before CiviCRM sees it): the stand-in fails on the
field they filter on, as CiviCRM fails on inputs the gateway cannot foresee."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.flow.clients import hash_token
from tests.conftest import ADMIN_KEY, ThreadServer, assert_problem, gateway_client, http_settings

BAD = "cgw_bad-client-token-0123456789abcdef"
GOOD = "cgw_good-client-token-fedcba9876543210"

# The three answers CiviCRM 5.77 gives a malformed read (seen on the real site).
DB_ERROR = (
    500,
    "application/json",
    b'{"error_code":0,"error_message":"DB Error: unknown error","status":500}',
)
MASKED = (
    500,
    "application/json",
    b'{"error_code":"1","error_message":"Sorry an error occurred and your request was not '
    b'completed. (Error ID: 5RdI-A7gr-YwMC)","status":500}',
)
PHP_FATAL = (500, "text/html; charset=UTF-8", b"")


@dataclass
class Standin:
    """Answers CiviCRM's 500s to reads filtering on one field (``nick_name``: a DB error,
    ``job_title``: the masked error, ``legal_name``: a PHP fatal); ``crashed``: a PHP fatal
    to every call. Anything else goes to the sandbox."""

    app: Any
    crashed: bool = False
    probes: int = 0
    seen: list[str] = field(default_factory=list)

    def answer(self, path: str, form: dict[str, str]) -> tuple[int, str, bytes] | None:
        if self.crashed:
            return PHP_FATAL
        params = orjson.loads(form.get("params") or "{}")
        if path.endswith("/Contact/get") and params.get("select") == ["id"] and params.get("limit") == 1:
            self.probes += 1  # Backend.check: the breaker's health probe
        for clause in params.get("where") or []:
            if clause[:1] == ["nick_name"]:
                return DB_ERROR
            if clause[:1] == ["job_title"]:
                return MASKED
            if clause[:1] == ["legal_name"]:
                return PHP_FATAL
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append(scope["path"])
        canned = self.answer(scope["path"], dict(parse_qsl(body.decode(), keep_blank_values=True)))
        if canned is None:
            delivered = False

            async def replay() -> Any:
                nonlocal delivered
                if delivered:
                    return await receive()
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        status, media, content = canned
        headers = [(b"content-type", media.encode()), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


@pytest.fixture
def standin(sandbox: Any) -> Iterator[tuple[Standin, str]]:
    from gateway.sandbox.wire import WireConfig, create_wire_app

    app = Standin(create_wire_app(sandbox, WireConfig(api_keys={ADMIN_KEY: 2})))
    server = ThreadServer(app).start()
    yield app, server.url
    server.stop()


def clients(tmp_path: Path) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[clients.bad]
token_sha256 = "{hash_token(BAD)}"
allow = ["v4:Contact.get"]
read_only = true

[clients.good]
token_sha256 = "{hash_token(GOOD)}"
allow = ["v4:Contact.get"]
read_only = true
""")
    return path


@contextlib.asynccontextmanager
async def two_clients(url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = http_settings(
        url, clients_file=clients(tmp_path), breaker_threshold=5, breaker_cooldown=60, retry_backoff=0.001
    )
    async with gateway_client(settings) as gw:
        yield gw


def as_client(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# (params, the failure's problem, whether it is unclear: a PHP crash, which only a probe
# tells from CiviCRM down). A PHP fatal is 502 upstream-error on every backend.
MALFORMED = [
    pytest.param(
        {"where": [["nick_name", "REGEXP", "^a"]]}, 502, "upstream-error", False, id="db-error-envelope"
    ),
    pytest.param({"where": [["job_title", "REGEXP", "^a"]]}, 502, "upstream-error", False, id="masked-error"),
    pytest.param({"where": [["legal_name", "=", "Acme"]]}, 502, "upstream-error", True, id="php-fatal"),
]


@pytest.mark.parametrize(("where", "status", "slug", "unclear"), MALFORMED)
async def test_ten_malformed_reads_from_one_client_leave_others_served(
    standin: tuple[Standin, str],
    tmp_path: Path,
    where: dict[str, Any],
    status: int,
    slug: str,
    unclear: bool,
) -> None:
    """Client A sends 10 malformed reads in a row (twice the breaker's threshold): each gets
    its own error, never the breaker's 503; client B is served after them."""
    app, url = standin
    async with two_clients(url, tmp_path) as gw:
        for _ in range(10):  # in a row: nothing in between resets the breaker's count
            bad = await gw.post("/v4/Contact/get", json={"select": ["id"], **where}, headers=as_client(BAD))
            assert_problem(bad, status, slug)
        good = await gw.post("/v4/Contact/get", json={"select": ["id"]}, headers=as_client(GOOD))
        assert good.status_code == 200, good.text
        breaker = gw._transport.app.state.services.backend.breaker  # type: ignore[attr-defined]
        assert breaker.state == "closed" and breaker.failures == 0
    if unclear:
        # The crash was unclear: one probe decided it (its verdict stands for PROBE_TTL seconds).
        assert 1 <= app.probes <= 3, app.probes
    else:
        assert app.probes == 0  # an API answer is CiviCRM up: no probe needed


async def test_a_crashed_civicrm_still_opens_the_breaker(
    standin: tuple[Standin, str], tmp_path: Path
) -> None:
    """The same unclear failure, but the probe crashes too: CiviCRM is down for everyone, and
    after the threshold the breaker answers 503 at once without calling it."""
    app, url = standin
    async with two_clients(url, tmp_path) as gw:
        services = gw._transport.app.state.services  # type: ignore[attr-defined]
        if hasattr(services.backend, "probe"):
            services.backend.probe.ttl = 0  # every unclear failure asks afresh
        app.crashed = True
        for _ in range(5):
            answer = await gw.post("/v4/Contact/get", json={"select": ["id"]}, headers=as_client(BAD))
            assert_problem(answer, 502, "upstream-error")
        assert services.backend.breaker.state == "open"
        calls = len(app.seen)
        refused = await gw.post("/v4/Contact/get", json={"select": ["id"]}, headers=as_client(GOOD))
        assert_problem(refused, 503, "upstream-unavailable")
        assert len(app.seen) == calls  # not sent


async def test_the_probe_runs_once_for_concurrent_askers_and_its_verdict_stands() -> None:
    import asyncio

    from gateway.backends.resilience import HealthProbe

    now = [0.0]
    runs = []

    async def check() -> None:
        runs.append(now[0])
        await asyncio.sleep(0.01)
        if now[0] >= 5:
            raise GatewayError("upstream-invalid-response", "crashed")

    probe = HealthProbe(check, clock=lambda: now[0], ttl=1.0)
    assert await asyncio.gather(*(probe.healthy() for _ in range(20))) == [True] * 20
    assert len(runs) == 1
    now[0] = 0.5
    assert await probe.healthy() and len(runs) == 1  # within the ttl
    now[0] = 5
    assert not await probe.healthy() and len(runs) == 2


async def test_an_api_error_to_the_probe_is_civicrm_up() -> None:
    from gateway.backends.resilience import HealthProbe

    async def check() -> None:
        raise GatewayError("civicrm-permission-denied", "no")

    assert await HealthProbe(check).healthy()


def test_the_error_table_says_which_failures_count() -> None:
    """The breaker reads the problem type, nothing else: what each says about CiviCRM."""
    from gateway.core.errors import PROBLEM_TYPES

    unhealthy = {slug for slug, t in PROBLEM_TYPES.items() if t.upstream_unhealthy}
    unclear = {slug for slug, t in PROBLEM_TYPES.items() if t.upstream_unclear}
    assert unhealthy == {"upstream-unavailable", "upstream-timeout", "upstream-maintenance"}
    assert unclear == {"upstream-invalid-response"}  # a PHP crash: this input, or everyone
