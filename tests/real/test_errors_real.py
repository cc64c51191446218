"""The error table on a real CiviCRM 5.77: the same status and problem type on every backend
and for both CiviCRM users (client mistakes 4xx, permission refusals 403, never a 5xx for
input), and one problem type for one CiviCRM failure whatever the backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.backends.cv import CvBackend
from gateway.backends.http import HttpBackend
from gateway.backends.pipe import PipeBackend
from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.services import cv_config, http_config
from gateway.settings import Settings
from tests.conftest import PROBLEM
from tests.real.conftest import RealGateway
from tests.real.kit import Kit

NOBODY = 2_000_000_000  # no record has this id
DENIED = (403, "civicrm-permission-denied")

# (method, path, body, expected as admin, expected as staff or None for the same)
CASES: list[tuple[str, str, Any, tuple[int, str], tuple[int, str] | None]] = [
    ("POST", "/v4/Foo/get", {}, (404, "unknown-api"), None),
    ("POST", "/v4/Contact/frobnicate", {}, (404, "unknown-api"), None),
    ("POST", "/v3/Foo/get", {}, (404, "unknown-api"), None),
    ("POST", "/v3/Contact/frobnicate", {}, (404, "unknown-api"), None),
    ("POST", "/v5/Contact/get", {}, (404, "route-not-found"), None),
    ("POST", "/v4/Con-tact/get", {}, (400, "invalid-request"), None),
    ("POST", "/v4/Contact/get", [1], (400, "invalid-request"), None),
    ("POST", "/v4/Contact/get", {"limit": -1}, (400, "invalid-request"), None),
    ("POST", "/v4/Contact/get", {"where": [["nope", "=", 1]]}, (400, "unknown-field"), None),
    ("POST", "/v4/Contact/get", {"orderBy": {"nope": "ASC"}}, (400, "unknown-field"), None),
    (
        "POST",
        "/v4/Contact/get",
        {"join": [["Email AS e", "LEFT", ["e.nope", "=", "id"]]]},
        (400, "unknown-field"),
        None,
    ),
    ("POST", "/v4/Contact/get", {"where": [["id", "LIKEISH", 1]]}, (400, "civicrm-bad-request"), None),
    ("POST", "/v4/Contact/get", {"limit": "x"}, (400, "civicrm-bad-request"), None),
    ("POST", "/v4/Contact/get", {"where": [["id", "=", "abc"]]}, (400, "civicrm-bad-request"), None),
    # CiviCRM 5.77 dies with a PHP TypeError on these: the gateway refuses them first
    ("POST", "/v4/Contact/get", {"where": [["id", "=", [1, 2]]]}, (400, "invalid-request"), None),
    (
        "POST",
        "/v4/Contact/get",
        {"where": [["first_name", "LIKE", ["a"]]]},
        (400, "invalid-request"),
        None,
    ),
    (
        "POST",
        "/v4/Contact/get",
        {"select": ["LENGTH(last_name) AS l"]},
        (400, "civicrm-bad-request"),
        None,
    ),
    ("POST", "/v4/Setting/get", {"limit": 1}, (400, "civicrm-bad-request"), None),
    ("GET", "/v4/Contact/create", None, (405, "method-not-allowed"), None),
    ("POST", "/v4/Contact/delete", {}, (400, "civicrm-bad-request"), DENIED),
    (
        "POST",
        "/v4/Contact/create",
        {"values": {"contact_type": "Individual", "employer_id": "abc"}},
        (422, "civicrm-validation"),
        DENIED,
    ),
    (
        "POST",
        "/v4/Email/create",
        {"values": {"contact_id": NOBODY, "email": "nobody@example.org"}},
        (422, "civicrm-validation"),
        DENIED,
    ),
    (
        "POST",
        "/v4/Contact/update",
        {"where": [["id", "=", NOBODY]], "values": {"job_title": "x"}},
        (404, "record-not-found"),
        None,
    ),
    ("POST", "/v3/Contact/create", {}, (422, "civicrm-validation"), DENIED),
    ("POST", "/v3/Contact/delete", {"id": NOBODY}, (400, "civicrm-error"), DENIED),
    ("POST", "/v3/Contact/getsingle", {}, (409, "civicrm-conflict"), None),
    ("POST", "/v3/Contact/getsingle", {"id": NOBODY}, (404, "record-not-found"), None),
    (
        "POST",
        "/v3/Contact/getvalue",
        {"id": NOBODY, "return": "display_name"},
        (404, "record-not-found"),
        None,
    ),
    ("POST", "/v3/Contact/get", {"id": "abc"}, (422, "civicrm-validation"), None),
    # 5.77 dies on a getvalue with several return fields: refused first
    (
        "POST",
        "/v3/Contact/getvalue",
        {"id": 2, "return": ["display_name", "id"]},
        (400, "invalid-request"),
        None,
    ),
]


def _call(gw: RealGateway, method: str, path: str, body: Any) -> tuple[int, str]:
    response = gw.get(path) if method == "GET" else gw.client.post(path, json=body)
    assert response.status_code < 500, f"{gw.name} {method} {path}: {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.text[:300]
    problem = response.json()
    assert problem["status"] == response.status_code and problem["title"] and problem["detail"]
    return response.status_code, str(problem["type"]).removeprefix("/problems/")


def test_error_table(gw: RealGateway) -> None:
    """Every case's status and type, on this backend and user: equal to the table's, so equal
    on every backend and user (a list of every difference when one is not)."""
    wrong = []
    for method, path, body, as_admin, as_staff in CASES:
        expected = as_admin if gw.admin or as_staff is None else as_staff
        got = _call(gw, method, path, body)
        if got != expected:
            wrong.append(f"{method} {path} {body!r:.120}: {got} (table: {expected})")
    assert not wrong, f"{gw.name}:\n" + "\n".join(wrong)


def test_gateway_refusals(gw: RealGateway) -> None:
    """What the gateway refuses itself, before CiviCRM: size, media type, Idempotency-Key."""
    big = gw.client.post("/v4/Contact/get", json={"select": ["id"], "x": "a" * 1_100_000})
    assert (big.status_code, big.json()["type"]) == (413, "/problems/payload-too-large")
    form = gw.client.post("/v4/Contact/get", content=b"limit=1", headers={"Content-Type": "text/plain"})
    assert (form.status_code, form.json()["type"]) == (415, "/problems/unsupported-media-type")
    too_long = "k" * 256  # 1 to 255 printable ASCII characters
    key = gw.client.post(
        "/v4/Contact/create", json={"contact_type": "Individual"}, headers={"Idempotency-Key": too_long}
    )
    expected = (400, "invalid-request") if gw.admin else DENIED  # the action is checked first
    assert (key.status_code, key.json()["type"]) == (expected[0], f"/problems/{expected[1]}"), key.text


def _backends(kit: Kit, user: str) -> list[Any]:
    """The three real backends, built directly (no gateway validation in front of them)."""
    http = Settings(backend="http", http_url=kit.url, http_api_key=kit.key(user), http_timeout=30)
    cv = {"cv_command": str(kit.cv), "cv_cwd": str(kit.site), "cv_user": user, "cv_timeout": 30}
    return [
        HttpBackend(http_config(http)),
        CvBackend(cv_config(Settings(backend="cv", **cv))),
        PipeBackend(cv_config(Settings(backend="pipe", pipe_size=1, **cv))),
    ]


class _AsSent(Call):
    """A call whose params go on the wire exactly as given: what the gateway's own Call never
    sends (it gives getvalue's return as one string), for a backend test."""

    def to_params(self) -> dict[str, Any]:
        return {"id": 2, "return": ["display_name"]}


RAW_GETVALUE = _AsSent(3, "Contact", "getvalue")


@pytest.mark.parametrize("user", ["admin", "staff"])
def test_one_php_fatal_one_problem_type(kit: Kit, user: str) -> None:
    """A call that makes CiviCRM 5.77 die with a PHP error (APIv3 getvalue with ``return`` as a
    list, which the gateway's validation never sends) is 502 upstream-error on every backend:
    http sees HTTP 500 without JSON, cv exit 255, cv pipe a JSON-RPC -32099."""

    async def run() -> list[tuple[str, int, str]]:
        outcomes = []
        for backend in _backends(kit, user):
            await backend.start()
            try:
                with pytest.raises(GatewayError) as failure:
                    await backend.call(RAW_GETVALUE)
                outcomes.append((backend.name, failure.value.status, failure.value.slug))
            finally:
                await backend.close()
        return outcomes

    outcomes = asyncio.run(run())
    assert outcomes == [(name, 502, "upstream-error") for name in ("http", "cv", "pipe")]
