"""Property-based fuzzing of every operation in the gateway's own OpenAPI document, against a
real uvicorn process on the embedded sandbox with demo data.

Each operation is fuzzed (schema-valid and schema-violating requests) as three callers: a
full-access client, a restricted read-only client, and a caller without a token. Every answer
must match the document (status, content type, headers, body schema), and no answer may be a
5xx other than the upstream 502/503/504 the document describes. The number of examples per
operation shrinks as the document grows, so the whole file stays within a few minutes.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import GatewayProcess

pytestmark = pytest.mark.slow

FULL_TOKEN = "cgw_fuzz-full-3b9d1c7e5a2f4680"
RESTRICTED_TOKEN = "cgw_fuzz-restricted-8e6a4c2b0d9f1735"
RESTRICTED_ALLOW = ("v4:Contact.get*", "v3:Contact.get*", "v4:Email.get")
# Cases per mode, spread over the operations (each gets at least MIN_PER_OP, at most MAX_PER_OP).
BUDGET = {"full": 6000, "restricted": 2000, "anonymous": 800}
MIN_PER_OP, MAX_PER_OP = 4, 300
# Served to anyone, like GET / (the index: name, version, backend, links).
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/problems/", "/metrics", "/openapi", "/docs", "/redoc")
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    allow_header_conformance,
]
UPSTREAM_5XX = {502, 503, 504}


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    clients = tmp / "clients.toml"
    allow = ", ".join(f'"{p}"' for p in RESTRICTED_ALLOW)
    clients.write_text(
        f'[clients.full]\ntoken_sha256 = "{_sha(FULL_TOKEN)}"\n\n'
        f'[clients.restricted]\ntoken_sha256 = "{_sha(RESTRICTED_TOKEN)}"\n'
        f"allow = [{allow}]\nread_only = true\nmax_limit = 5\n"
    )
    proc = GatewayProcess(
        {
            "CIVI_GATEWAY_SANDBOX_DEMO": "20",
            "CIVI_GATEWAY_CLIENTS_FILE": str(clients),
            "CIVI_GATEWAY_LOG_LEVEL": "debug",
        },
        tmp,
    )
    proc.wait_ready()
    yield proc
    log = proc.stop()
    # Every unexpected exception is logged with a traceback: none may have happened.
    assert "Traceback" not in log, log[-6000:]


@pytest.fixture(scope="module")
def api_schema(gateway: GatewayProcess) -> Any:
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json")


def snapshot(gateway: GatewayProcess) -> dict[str, Any]:
    """Every record of every entity the restricted client could touch, read as the full client."""
    out = {}
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {FULL_TOKEN}"}, timeout=30
    ) as client:
        entities = client.post("/v4/Entity/get", json={"select": ["name"]}).json()
        for name in sorted(e["name"] for e in entities):
            response = client.post(
                f"/v4/{name}/get",
                json={"select": ["*"], "orderBy": {"id": "ASC"}} if name not in ("Entity", "Setting") else {},
            )
            out[name] = (response.status_code, response.json())
    return out


def _label(case: Any) -> str | None:
    """``v4:Entity.action`` for a call route, from the path the case actually requested (the
    change feed reads as the entity's get: the policy applies to it as to a get)."""
    parts = case.formatted_path.strip("/").split("/")
    if len(parts) == 3 and parts[0] in ("v3", "v4"):
        action = "get" if parts[0] == "v4" and parts[2] == "changes" else parts[2]
        return f"{parts[0]}:{parts[1]}.{action}"
    return None


def _check(mode: str, case: Any, response: Any) -> None:
    status = response.status_code
    if status >= 500:
        assert status in UPSTREAM_5XX, f"{status} {response.text[:500]}"
        # The sandbox only reports a DB error of its own (e.g. a malformed REGEXP pattern).
        assert response.json()["type"] == "/problems/upstream-error", response.text[:500]
    case.validate_response(response, checks=CHECKS)
    path = case.formatted_path
    if mode == "anonymous" and path != "/" and not path.startswith(PUBLIC_PREFIXES):
        assert not 200 <= status < 300, f"served without a token: {path} {status}"
    if mode == "restricted" and 200 <= status < 300:
        label = _label(case)
        if label is not None:
            assert any(fnmatch.fnmatchcase(label, p) for p in RESTRICTED_ALLOW), (label, status)


def _fuzz(operation: Any, examples: int, run: Callable[[Any], None]) -> None:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        run(case)

    fuzz()


@pytest.mark.parametrize("mode", ["anonymous", "restricted", "full"])
def test_every_operation_conforms(gateway: GatewayProcess, api_schema: Any, mode: str) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7, "the document lost its operations"
    per_op = max(MIN_PER_OP, min(MAX_PER_OP, BUDGET[mode] // len(operations)))
    token = {"full": FULL_TOKEN, "restricted": RESTRICTED_TOKEN}.get(mode)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    statuses: set[int] = set()
    failures: list[str] = []
    before = snapshot(gateway) if mode != "full" else None

    def run(case: Any) -> None:
        response = case.call(base_url=gateway.url, headers=headers, timeout=30)
        statuses.add(response.status_code)
        _check(mode, case, response)

    for operation in operations:
        try:
            _fuzz(operation, per_op, run)
        except (Exception, BaseExceptionGroup) as exc:  # report every operation that fails
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    if before is not None:
        # Neither a caller without a token nor a read-only client changed anything.
        assert snapshot(gateway) == before
    expected = {"anonymous": 401, "restricted": 403, "full": 200}[mode]
    assert expected in statuses, sorted(statuses)


@pytest.fixture(scope="module")
def least_privileged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway on its HTTP backend as CiviCRM's staff user, who has neither administrator
    rights nor "view debug output": CiviCRM hides every error text from it."""
    from gateway.sandbox.engine import Sandbox
    from gateway.sandbox.wire import WireConfig, create_wire_app
    from tests.conftest import SITE_KEY, ThreadServer

    tmp = tmp_path_factory.mktemp("fuzz-staff")
    sandbox = Sandbox(":memory:", demo=20)
    staff = sandbox.ensure_staff()
    config = WireConfig(
        api_keys={staff["api_key"]: staff["contact_id"]}, site_key=SITE_KEY, debug_output=False
    )
    server = ThreadServer(create_wire_app(sandbox, config)).start()
    clients = tmp / "clients.toml"
    clients.write_text(f'[clients.full]\ntoken_sha256 = "{_sha(FULL_TOKEN)}"\n')
    proc = GatewayProcess(
        {
            "CIVI_GATEWAY_BACKEND": "http",
            "CIVI_GATEWAY_HTTP_URL": server.url,
            "CIVI_GATEWAY_HTTP_API_KEY": staff["api_key"],
            "CIVI_GATEWAY_HTTP_SITE_KEY": SITE_KEY,
            "CIVI_GATEWAY_CLIENTS_FILE": str(clients),
        },
        tmp,
    )
    proc.wait_ready()
    yield proc
    log = proc.stop()
    server.stop()
    sandbox.close()
    assert "Traceback" not in log, log[-6000:]


def test_least_privileged_gateway_user_gets_no_5xx(least_privileged: GatewayProcess) -> None:
    """Every client mistake is found by the gateway itself, so a CiviCRM that hides its
    errors from the gateway's user (masked HTTP 500) never turns one into a 5xx."""
    api_schema = schemathesis.openapi.from_url(
        least_privileged.url + "/openapi.json", headers={"Authorization": f"Bearer {FULL_TOKEN}"}
    )
    operations = [result.ok() for result in api_schema.get_all_operations()]
    per_op = max(MIN_PER_OP, min(MAX_PER_OP, 2000 // len(operations)))
    headers = {"Authorization": f"Bearer {FULL_TOKEN}"}
    failures: list[str] = []

    def run(case: Any) -> None:
        response = case.call(base_url=least_privileged.url, headers=headers, timeout=30)
        assert response.status_code < 500, (case.formatted_path, case.body, case.query, response.text[:500])

    for operation in operations:
        try:
            _fuzz(operation, per_op, run)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
