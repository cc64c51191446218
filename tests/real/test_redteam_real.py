"""Red team on the real CiviCRM 5.77 (issue 25): one regression test per cause the issue lists,
and the holes found beyond them, against a real uvicorn gateway process on 127.0.0.1 whose
HTTP backend acts as CiviCRM's administrator (the worst case: that user reads every contact's
``api_key`` and ``hash``, and its own key is the gateway's credential).

Each refusal is asserted exactly: ``gateway-policy-denied`` (403) for what a policy forbids,
``invalid-request`` (400) for input the gateway does not understand, ``method-not-allowed``
(405) for a GET that would write. No answer may carry a secret value or be a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.flow.clients import hash_token
from tests.conftest import PROBLEM, GatewayProcess
from tests.real import sqloracle as so
from tests.real.kit import Kit, require_kit

pytestmark = pytest.mark.slow

TOKENS = {
    # the client: v4 Contact and Email reads only
    "reader": "cgw_rt-reader-6f1d2c3b4a59687706f1",
    # the smallest policy: Contact.get of id and display_name, read-only
    "narrow": "cgw_rt-narrow-0a9b8c7d6e5f4a3b2c1d",
    # APIv3 reads with a field allow-list
    "v3": "cgw_rt-v3-11223344556677889900aabb",
    # autocomplete of contacts, field allow-list
    "auto": "cgw_rt-auto-ffeeddccbbaa99887766",
    # writes on contacts but never delete
    "writer": "cgw_rt-writer-0102030405060708090a",
    # capped reads and settings
    "capped": "cgw_rt-capped-a1b2c3d4e5f60718293a",
    # everything but credentials
    "broad": "cgw_rt-broad-5a4b3c2d1e0f9e8d7c6b",
    # a bystander: plain reads
    "other": "cgw_rt-other-99aa88bb77cc66dd55ee",
    # contact types allowed by name, fields narrowed on Contact
    "typed": "cgw_rt-typed-3c4d5e6f708192a3b4c5",
    # APIv3 contact reads, no field list
    "v3open": "cgw_rt-v3open-77665544332211000fed",
    # everything but credentials, writes too (not a trusted client: no credential_fields)
    "wide": "cgw_rt-wide-0f1e2d3c4b5a69788796",
    # APIv3 contact lists only (no Email)
    "v3list": "cgw_rt-v3list-5b6c7d8e9fa0b1c2d3e4",
}

CLIENTS = f"""
[clients.reader]
token_sha256 = "{hash_token(TOKENS["reader"])}"
allow = ["v4:Contact.get", "v4:Email.get"]
read_only = true

[clients.narrow]
token_sha256 = "{hash_token(TOKENS["narrow"])}"
allow = ["v4:Contact.get"]
read_only = true
fields = {{Contact = ["id", "display_name"]}}

[clients.v3]
token_sha256 = "{hash_token(TOKENS["v3"])}"
allow = ["v3:Contact.get", "v3:Contact.getlist", "v3:Contact.getvalue"]
read_only = true
fields = {{Contact = ["id", "display_name", "sort_name", "contact_type"]}}

[clients.auto]
token_sha256 = "{hash_token(TOKENS["auto"])}"
allow = ["v4:Contact.autocomplete", "v4:Contact.get"]
read_only = true
fields = {{Contact = ["id", "display_name"]}}

[clients.writer]
token_sha256 = "{hash_token(TOKENS["writer"])}"
allow = ["v4:Contact.*", "v4:Individual.*", "v4:Organization.*"]
deny = ["v4:Contact.delete"]

[clients.capped]
token_sha256 = "{hash_token(TOKENS["capped"])}"
allow = ["v4:Contact.get", "v4:Email.get", "v4:Setting.get"]
read_only = true
max_limit = 50

[clients.broad]
token_sha256 = "{hash_token(TOKENS["broad"])}"
allow = ["*"]
read_only = true

[clients.other]
token_sha256 = "{hash_token(TOKENS["other"])}"
allow = ["v4:Contact.get"]
read_only = true

[clients.typed]
token_sha256 = "{hash_token(TOKENS["typed"])}"
allow = ["v4:Contact.get", "v4:Individual.get", "v4:Organization.get", "v4:Household.get"]
read_only = true
fields = {{Contact = ["id", "display_name"]}}

[clients.v3open]
token_sha256 = "{hash_token(TOKENS["v3open"])}"
allow = ["v3:Contact.get"]
read_only = true

[clients.wide]
token_sha256 = "{hash_token(TOKENS["wide"])}"
allow = ["*"]

[clients.v3list]
token_sha256 = "{hash_token(TOKENS["v3list"])}"
allow = ["v3:Contact.getlist"]
read_only = true
"""


def gateway_env(kit: Kit, clients: Path, **extra: str) -> dict[str, str]:
    return {
        "CIVI_GATEWAY_BACKEND": "http",
        "CIVI_GATEWAY_HTTP_URL": kit.url,
        "CIVI_GATEWAY_HTTP_API_KEY": kit.admin_key,
        "CIVI_GATEWAY_HTTP_TIMEOUT": "60",
        "CIVI_GATEWAY_CLIENTS_FILE": str(clients),
        **extra,
    }


def site_secrets(kit: Kit) -> set[str]:
    """Every API key and checksum hash on the site (read as the admin), and the gateway's keys."""
    rows = so.rest4(
        kit.url,
        kit.admin_key,
        "Contact",
        "get",
        {"select": ["api_key", "hash"], "where": [["is_deleted", "IN", [0, 1]]], "checkPermissions": False},
    )
    values = {kit.admin_key, kit.staff_key, kit.ids.get("SITE_KEY", "")}
    for row in rows:
        values |= {v for v in (row.get("api_key"), row.get("hash")) if v}
    return {v for v in values if len(v) >= 8}


@dataclass
class Red:
    kit: Kit
    url: str
    secrets: set[str]
    http: httpx.Client

    def call(
        self, client: str, path: str, body: Any = None, *, method: str = "POST", params: Any = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[client]}"}
        if method == "GET":
            response = self.http.get(path, params=params, headers=headers)
        else:
            response = self.http.post(path, json=body if body is not None else {}, headers=headers)
        leaked = so.leaked_values(response.text, self.secrets)
        assert not leaked, (
            f"{client} {path} {body or params}: the answer holds {len(leaked)} secret(s): {response.text[:400]}"
        )
        return response

    def admin4(self, entity: str, action: str, params: dict[str, Any]) -> list[Any]:
        return so.rest4(self.kit.url, self.kit.admin_key, entity, action, params)


def refused(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, (
        f"expected {status} {slug}, got {response.status_code}: {response.text[:600]}"
    )
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}", body
    return body


def denied(response: httpx.Response) -> dict[str, Any]:
    return refused(response, 403, "gateway-policy-denied")


def invalid(response: httpx.Response) -> dict[str, Any]:
    return refused(response, 400, "invalid-request")


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text[:600]
    return response.json()


@pytest.fixture(scope="module")
def clients_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("redteam-real") / "clients.toml"
    path.write_text(CLIENTS)
    return path


@pytest.fixture(scope="module")
def red(clients_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Red]:
    kit = require_kit()
    tmp = tmp_path_factory.mktemp("redteam-gateway")
    proc = GatewayProcess(gateway_env(kit, clients_file, CIVI_GATEWAY_STATE_DIR=str(tmp / "state")), tmp)
    try:
        proc.wait_ready(60)
        with httpx.Client(base_url=proc.url, timeout=90) as http:
            yield Red(kit, proc.url, site_secrets(kit), http)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def victim(red: Red) -> Iterator[int]:
    """A contact of this module's own, with an email, that no test may change (and no contact
    a refused write made is left behind)."""
    cid = _victim(red)
    yield cid
    for row in red.admin4(
        "Contact",
        "get",
        {"select": ["id"], "where": [["source", "=", "written-by-a-GET"], ["id", "!=", cid]]},
    ):
        red.admin4("Contact", "delete", {"where": [["id", "=", row["id"]]], "useTrash": False})
    red.admin4("Contact", "update", {"where": [["id", "=", cid]], "values": {"source": "redteam-victim"}})


def _victim(red: Red) -> int:
    found = red.admin4(
        "Contact",
        "get",
        {"select": ["id"], "where": [["external_identifier", "=", "civicrm-gateway-redteam-victim"]]},
    )
    if found:
        cid = int(found[0]["id"])
        red.admin4("Contact", "update", {"where": [["id", "=", cid]], "values": {"source": "redteam-victim"}})
        return cid
    cid = int(
        red.admin4(
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "first_name": "Red",
                    "last_name": "Victim",
                    "source": "redteam-victim",
                    "external_identifier": "civicrm-gateway-redteam-victim",
                    "email_primary.email": "victim@example.org",
                }
            },
        )[0]["id"]
    )
    return cid


def admin_cid(red: Red) -> int:
    return int(red.kit.ids.get("ADMIN_CONTACT_ID", "2"))


# --- 1. the chain's 4th element (index) names a field ------------------------------------------


@pytest.mark.parametrize(
    ("client", "index"), [("reader", "api_key"), ("reader", "hash"), ("narrow", "first_name")]
)
def test_cause01_chain_index_is_a_field_reference(red: Red, client: str, index: str) -> None:
    body = {
        "select": ["id"],
        "where": [["id", "=", admin_cid(red)]],
        "chain": {"k": ["Contact", "get", {"select": ["id"], "where": [["id", "=", "$id"]]}, index]},
    }
    denied(red.call(client, "/v4/Contact/get", body))


def test_cause01_chain_index_zero_still_answers(red: Red) -> None:
    """The harmless index (0: one record instead of a list) keeps working."""
    body = {
        "select": ["id"],
        "where": [["id", "=", admin_cid(red)]],
        "chain": {"k": ["Contact", "get", {"select": ["id"], "where": [["id", "=", "$id"]]}, 0]},
    }
    rows = ok(red.call("reader", "/v4/Contact/get", body))
    assert rows == [{"id": admin_cid(red), "k": {"id": admin_cid(red)}}]


# --- 2. join condition values are SQL expressions ----------------------------------------------


@pytest.mark.parametrize(
    ("client", "condition"),
    [
        ("reader", ["'5b'", "=", "LEFT(c.api_key, 2)"]),
        ("reader", ["c.id", "=", "c.hash"]),
        ("reader", ["LEFT(c.api_key, 1)", "=", "'8'"]),
        ("narrow", ["'a'", "=", "LEFT(c.first_name, 1)"]),
    ],
)
def test_cause02_join_condition_values_are_expressions(red: Red, client: str, condition: list[Any]) -> None:
    body = {
        "select": ["id"],
        "join": [["Contact AS c", "INNER", ["c.id", "=", "id"], condition]],
        "where": [["id", "=", admin_cid(red)]],
    }
    denied(red.call(client, "/v4/Contact/get", body))


# --- 3. APIv3 getlist params name fields -------------------------------------------------------


GETLIST_SECRETS = [
    {"input": "", "label_field": "api_key"},
    {"input": "", "id_field": "hash"},
    {"input": "", "description_field": "api_key"},
    {"input": "a", "search_field": "api_key"},
    {"input": "", "image_field": "hash"},
    {"input": "", "color_field": "api_key"},
    {"input": "", "extra": ["api_key"]},
]


@pytest.mark.parametrize("client", ["v3", "v3list"])
@pytest.mark.parametrize("params", GETLIST_SECRETS)
def test_cause03_getlist_field_params(red: Red, client: str, params: dict[str, Any]) -> None:
    denied(red.call(client, "/v3/Contact/getlist", params))


@pytest.mark.parametrize(
    "params", [{"input": "", "label_field": "first_name"}, {"input": "", "extra": ["last_name"]}]
)
def test_cause03_getlist_fields_outside_the_allow_list(red: Red, params: dict[str, Any]) -> None:
    denied(red.call("v3", "/v3/Contact/getlist", params))


# --- 4. autocomplete: inline savedSearch / display, and key ---------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {
            "input": "",
            "savedSearch": {
                "api_entity": "User",
                "api_params": {"version": 4, "select": ["id", "hashed_password"]},
            },
            "display": {
                "type": "autocomplete",
                "settings": {"columns": [{"type": "field", "key": "hashed_password"}]},
            },
        },
        {
            "input": "",
            "savedSearch": {"api_entity": "Contact", "api_params": {"version": 4, "select": ["api_key"]}},
            "display": {
                "type": "autocomplete",
                "settings": {"columns": [{"type": "field", "key": "api_key"}]},
            },
        },
        {"input": "", "key": "api_key"},
        {"input": "", "key": "hash"},
        {"input": "", "key": "first_name"},
    ],
)
def test_cause04_autocomplete_search_and_key(red: Red, params: dict[str, Any]) -> None:
    denied(red.call("auto", "/v4/Contact/autocomplete", params))


# --- 5. APIv3 legacy sort keys -------------------------------------------------------------------


@pytest.mark.parametrize("client", ["v3", "v3open"])
@pytest.mark.parametrize("key", ["sort", "option_sort", "option.sort", "options.sort"])
def test_cause05_v3_legacy_sort_keys(red: Red, client: str, key: str) -> None:
    denied(red.call(client, "/v3/Contact/get", {"return": "id", key: "api_key DESC"}))


# --- 6. secrets the name list misses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v4/Session/get", {"select": ["session_id"]}),
        ("/v4/Session/get", {"select": ["data"]}),
        ("/v4/Session/get", {"select": ["id"]}),  # a system entity: default-deny, even for "*"
        ("/v4/User/get", {"select": ["id", "username"]}),
        ("/v4/Setting/get", {"select": ["recaptchaPrivateKey"]}),
        ("/v4/Setting/get", {"select": ["mapAPIKey"]}),
        ("/v4/Setting/get", {"select": ["geoAPIKey"]}),
        ("/v4/Setting/get", {"select": ["mailing_backend"]}),  # holds the SMTP password
    ],
)
def test_cause06_secrets_by_kind(red: Red, path: str, body: dict[str, Any]) -> None:
    denied(red.call("broad", path, body))


# --- 7. contact types are Contact ----------------------------------------------------------------


@pytest.mark.parametrize("entity", ["Organization", "Individual", "Household"])
def test_cause07_deny_on_contact_covers_contact_types(red: Red, entity: str) -> None:
    denied(red.call("writer", f"/v4/{entity}/delete", {"where": [["id", "=", -1]]}))


@pytest.mark.parametrize("entity", ["Individual", "Organization", "Household"])
def test_cause07_field_list_of_contact_covers_contact_types(red: Red, entity: str) -> None:
    denied(red.call("typed", f"/v4/{entity}/get", {"select": ["sort_name"], "limit": 1}))
    denied(red.call("typed", f"/v4/{entity}/get", {"select": ["id"], "where": [["source", "=", "x"]]}))
    denied(red.call("typed", f"/v4/{entity}/get", {"select": ["id"], "orderBy": {"nick_name": "ASC"}}))
    rows = ok(red.call("typed", f"/v4/{entity}/get", {"limit": 3}))
    assert all(set(r) <= {"id", "display_name"} for r in rows), rows
    rows = ok(red.call("typed", f"/v4/{entity}/get", {"select": ["*"], "limit": 3}))
    assert all(set(r) <= {"id", "display_name"} for r in rows), rows


# --- 8. GET never writes -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["update", "save", "create"])
def test_cause08_get_with_a_writing_chain(red: Red, victim: int, action: str) -> None:
    params: dict[str, Any] = {"where": [["id", "=", "$id"]], "values": {"source": "written-by-a-GET"}}
    if action == "save":
        params = {"records": [{"id": "$id", "source": "written-by-a-GET"}]}
    if action == "create":
        params = {"values": {"contact_type": "Individual", "first_name": "GET", "source": "written-by-a-GET"}}
    query = {
        "params": json.dumps(
            {"select": ["id"], "where": [["id", "=", victim]], "chain": {"w": ["Contact", action, params]}}
        )
    }
    refused(red.call("writer", "/v4/Contact/get", method="GET", params=query), 405, "method-not-allowed")
    [row] = red.admin4("Contact", "get", {"select": ["source", "is_deleted"], "where": [["id", "=", victim]]})
    assert row == {"id": victim, "source": "redteam-victim", "is_deleted": False}
    assert not red.admin4(
        "Contact", "get", {"select": ["id"], "where": [["source", "=", "written-by-a-GET"]]}
    )


# --- 9. GROUP_CONCAT packs every row into one --------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"select": ["GROUP_CONCAT(email) AS all_emails"]},
        {"select": ["GROUP_CONCAT(DISTINCT email) AS e", "is_primary"], "groupBy": ["is_primary"]},
        {"select": ["GROUP_CONCAT(id) AS ids"], "limit": 1},
    ],
)
def test_cause09_group_concat_counts_against_max_limit(red: Red, body: dict[str, Any]) -> None:
    """Refused, or answered with at most max_limit (50) records' worth of values."""
    response = red.call("capped", "/v4/Email/get", body)
    if response.status_code == 403:
        denied(response)
        return
    rows = ok(response)
    packed = sum(
        len(v) if isinstance(v, list) else len(str(v).split(","))
        for row in rows
        for k, v in row.items()
        if k not in ("id", "is_primary") and v is not None
    )
    assert packed <= 50, f"max_limit 50, read {packed} emails in one request"


# --- 10. explicit self-joins multiply rows -------------------------------------------------------


@pytest.mark.parametrize(
    "joins",
    [
        [["Contact AS a1", "INNER", ["a1.contact_type", "=", "contact_type"]]],
        [
            ["Contact AS a1", "INNER", ["a1.id", ">", "id"]],
            ["Contact AS a2", "INNER", ["a2.id", ">", "a1.id"]],
        ],
        [["Email AS e", "LEFT", ["e.email", "LIKE", "display_name"]]],  # not a key relation
    ],
)
def test_cause10_joins_must_follow_a_key(red: Red, joins: list[Any]) -> None:
    denied(red.call("reader", "/v4/Contact/get", {"select": ["id"], "join": joins, "limit": 1}))


def test_cause10_key_joins_still_work(red: Red, victim: int) -> None:
    rows = ok(
        red.call(
            "reader",
            "/v4/Contact/get",
            {
                "select": ["id", "e.email"],
                "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
                "where": [["id", "=", victim]],
            },
        )
    )
    assert rows == [{"id": victim, "e.email": "victim@example.org"}]


# --- 11. one client's bad input does not open the breaker for everyone ---------------------------

# Each makes CiviCRM 5.77 fail (DB Error, PHP fatal, or "Invalid expression in HAVING").
BAD_READS = [
    {"select": ["id"], "where": [["display_name", "REGEXP", "(("]], "limit": 1},
    {"select": ["COUNT(id) AS n"], "groupBy": ["COUNT(id)"]},
    {"select": ["id"], "having": [["first_name", "=", "x"]], "limit": 1},
    {"select": ["id"], "where": [["id", "=", [1, 2]]], "limit": 1},
    {"select": ["id"], "where": [["display_name", ">", ["a", "b"]]], "limit": 1},
    {"select": ["id"], "where": [["display_name", "LIKE", ["a"]]], "limit": 1},
]


def test_cause11_bad_input_does_not_trip_the_breaker_for_others(clients_file: Path, tmp_path: Path) -> None:
    kit = require_kit()
    proc = GatewayProcess(
        gateway_env(
            kit, clients_file, CIVI_GATEWAY_BREAKER_THRESHOLD="3", CIVI_GATEWAY_STATE_DIR=str(tmp_path / "st")
        ),
        tmp_path,
    )
    try:
        proc.wait_ready(60)
        with httpx.Client(base_url=proc.url, timeout=90) as http:
            for _ in range(2):
                for body in BAD_READS:  # their own answers are cause 13's
                    http.post(
                        "/v4/Contact/get", json=body, headers={"Authorization": f"Bearer {TOKENS['reader']}"}
                    )
            for client in ("other", "narrow", "reader"):
                good = http.post(
                    "/v4/Contact/get",
                    json={"select": ["id"], "limit": 1},
                    headers={"Authorization": f"Bearer {TOKENS[client]}"},
                )
                assert good.status_code == 200, (client, good.text[:300])
    finally:
        proc.stop()


# --- 12. deep nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"select": ["(" * 480 + "id" + ")" * 480 + " AS x"]},
        {"select": ["-" * 990 + "1 AS x"]},
        {"select": ["id"], "where": [["(" * 480 + "id" + ")" * 480, "=", 1]]},
        {"select": ["id"], "orderBy": {"-" * 990 + "id": "ASC"}},
    ],
)
def test_cause12_deep_nesting_is_400(red: Red, body: dict[str, Any]) -> None:
    invalid(red.call("reader", "/v4/Contact/get", body))
    assert ok(red.call("other", "/v4/Contact/get", {"select": ["id"], "limit": 1}))


# --- 13. input CiviCRM fails on never reaches it -------------------------------------------------


@pytest.mark.parametrize("body", BAD_READS)
def test_cause13_input_civicrm_fails_on_is_400(red: Red, body: dict[str, Any]) -> None:
    invalid(red.call("reader", "/v4/Contact/get", body))


# --- 14. legitimate calls answer ----------------------------------------------------------------


def test_cause14_setting_get_for_a_capped_client(red: Red) -> None:
    rows = ok(red.call("capped", "/v4/Setting/get", {"select": ["lcMessages", "contact_default_language"]}))
    assert {r["name"] for r in rows} == {"lcMessages", "contact_default_language"}


@pytest.mark.parametrize("ret", ["display_name", ["display_name"], "sort_name"])
def test_cause14_v3_getvalue(red: Red, ret: Any) -> None:
    value = ok(red.call("v3", "/v3/Contact/getvalue", {"id": admin_cid(red), "return": ret}))
    assert isinstance(value, str) and value


# --- beyond the issue: the smallest policy against every position ---------------------------------

# Found on the code that fixed the 14 causes (main at 8f72672), by the attacker's walk through
# every param of every action, and by the SQL oracle's property test.

VICTIM_EMAIL = "victim@example.org"


@pytest.mark.parametrize("client", ["v3open", "v3"])
@pytest.mark.parametrize("name", ["display_name", "sort_name"])
@pytest.mark.parametrize("value", [VICTIM_EMAIL, "victim@%", {"LIKE": "victim@%"}])
def test_beyond_v3_name_filters_search_emails(
    red: Red, victim: int, client: str, name: str, value: Any
) -> None:
    """APIv3 Contact.get reads ``display_name`` / ``sort_name`` filters as CiviCRM's quick
    search, which matches email addresses too (``civicrm_email.email LIKE``): a client that may
    not read Email finds a contact by its address, and reads any address character by
    character with ``%``. Refused, or the contact is not found by its email."""
    response = red.call(client, "/v3/Contact/get", {"return": "id", name: value, "options": {"limit": 0}})
    if response.status_code == 403:
        denied(response)
        return
    rows = ok(response)
    assert all(str(r.get("id")) != str(victim) for r in rows), f"found contact {victim} by its email: {rows}"


def test_beyond_v3_answer_holds_only_what_was_asked(red: Red, victim: int) -> None:
    """APIv3 adds each filter's field to the answer (``display_name`` here, asked for ``id``)."""
    response = red.call("v3open", "/v3/Contact/get", {"return": "id", "display_name": "Red Victim"})
    if response.status_code == 403:
        denied(response)
        return
    rows = ok(response)
    assert rows, "the victim is found by its display name"
    assert all(set(r) <= {"id", "contact_id", "contact_is_deleted"} for r in rows), rows


def test_beyond_v3_getlist_description_reads_email(red: Red, victim: int) -> None:
    """``getlist`` describes each contact by its email: a client allowed Contact.getlist but
    not Email reads every address. Refused, or no email in the answer."""
    response = red.call("v3list", "/v3/Contact/getlist", {"input": "Red Victim"})
    if response.status_code == 403:
        denied(response)
        return
    assert VICTIM_EMAIL not in response.text, response.text[:400]


SECRET_SETTING_NAMES = ("recaptchaPrivateKey", "mapAPIKey", "geoAPIKey", "mailing_backend")


def test_beyond_v4_setting_get_star_reads_secret_settings(red: Red) -> None:
    """``Setting.get`` without select is refused (it reads secret settings); ``select: ["*"]``
    is the same call."""
    response = red.call("broad", "/v4/Setting/get", {"select": ["*"]})
    assert not any(f'"name":"{n}"' in response.text for n in SECRET_SETTING_NAMES), response.text[:300]
    denied(response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v3/Setting/get", {}),
        ("/v3/Setting/get", {"domain_id": 1}),
        ("/v3/Contact/get", {"id": 2, "return": "id", "api.Setting.get": {}}),
        ("/v3/Contact/get", {"id": 2, "return": "id", "api_Setting_get": 1}),
    ],
)
def test_beyond_v3_setting_get_without_return_reads_secret_settings(
    red: Red, path: str, body: dict[str, Any]
) -> None:
    response = red.call("wide", path, body)
    assert not any(f'"{n}"' in response.text for n in SECRET_SETTING_NAMES), response.text[:300]
    denied(response)


@pytest.mark.parametrize("name", ["geoAPIKey", "mailing_backend", "recaptchaPrivateKey"])
def test_beyond_v3_setting_getvalue_name_is_a_field(red: Red, name: str) -> None:
    """v3 ``Setting.getvalue``'s ``name`` names the setting to read: it was forwarded as a
    filter (``mailing_backend`` even made a 502)."""
    denied(red.call("wide", "/v3/Setting/getvalue", {"name": name, "group": "Map Preferences"}))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v4/Setting/get", {"select": ["*"]}),
        (
            "/v4/SearchDisplay/run",
            {"savedSearch": {"api_entity": "Contact", "api_params": {"version": 4, "select": ["api_key"]}}},
        ),
        (
            "/v4/SearchDisplay/getDefault",
            {"savedSearch": {"api_entity": "User", "api_params": {"version": 4}}},
        ),
    ],
)
def test_beyond_gateway_refusals_are_not_dressed_as_civicrm(
    red: Red, path: str, body: dict[str, Any]
) -> None:
    """The gateway refuses these itself (CiviCRM never sees them) but answered
    ``civicrm-bad-request`` ("CiviCRM refused the parameters", "Unknown api parameter:
    setSavedSearch"): a client and the audit trail are told CiviCRM ran it. The gateway's own
    problem types say who refused."""
    response = red.call("broad", path, body)
    assert response.status_code in (400, 403), response.text[:300]
    slug = response.json()["type"].rpartition("/")[2]
    assert slug in ("invalid-request", "gateway-policy-denied", "unknown-field"), response.text[:300]


@pytest.mark.parametrize("ret", ["source", ["nonexistent_field"], "contact_source,nickname_typo"])
def test_beyond_v3_unknown_return_answers_every_field(red: Red, victim: int, ret: Any) -> None:
    """A client must name what an APIv3 get returns (else v3 answers other entities' fields:
    email, phone, address); naming only fields v3 does not know has CiviCRM drop them and answer
    the full default set, the victim's email included. Found by the SQL oracle (reads of
    Address, Email, Phone and IM for ``return: ["source"]``)."""
    response = red.call("v3open", "/v3/Contact/get", {"return": ret, "id": victim})
    assert response.status_code < 500, response.text[:300]
    assert VICTIM_EMAIL not in response.text, response.text[:400]
    if response.status_code == 200:
        asked = set(ret.split(",") if isinstance(ret, str) else ret)
        for row in response.json():
            assert set(row) <= asked | {"id", "contact_id", "contact_is_deleted"}, row


def test_beyond_batch_counts_against_max_rows(red: Red) -> None:
    """``max_rows`` (here max_limit 50 x 10) bounds what one request reads; a batch of twelve
    gets of 50 rows each read 600."""
    batch = {
        f"p{n}": [
            "Contact",
            "get",
            {"select": ["id"], "limit": 50, "offset": 50 * n, "orderBy": {"id": "ASC"}},
        ]
        for n in range(12)
    }
    response = red.call("capped", "/v4/batch", batch)
    if response.status_code == 403:
        denied(response)
        return
    answers = ok(response)
    rows = sum(len(a["values"]) for a in answers.values() if a.get("status") == 200)
    assert rows <= 500, f"one batch read {rows} rows; max_rows is 500"


@pytest.mark.parametrize("key", ["uf_user", "group", "tag"])
def test_beyond_v3_query_params_that_are_no_contact_field(red: Red, key: str) -> None:
    """APIv3 Contact.get reads some filter keys as searches through other entities (``uf_user``:
    the contacts with a CMS user, which is User data; ``group``, ``tag``: memberships). They
    are no field of Contact: not in the grammar, so refused, not forwarded."""
    response = red.call("v3open", "/v3/Contact/get", {"return": "id", key: 1})
    assert response.status_code in (400, 403), response.text[:300]
    assert response.json()["type"].rpartition("/")[2] in (
        "invalid-request",
        "gateway-policy-denied",
        "unknown-field",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"select": ["display_name:label"], "limit": 1},  # no option list: CiviCRM's error
        {"select": ["id"], "groupBy": ["display_name"], "having": [["COUNT(id)", ">", 1]], "limit": 1},
        {"select": ["id"], "where": [["display_name:name", "=", "x"]], "limit": 1},
    ],
)
def test_beyond_input_civicrm_refuses_is_refused_by_the_gateway(red: Red, body: dict[str, Any]) -> None:
    """Understood or refused: the gateway knows from metadata that ``display_name`` has no
    option list and that ``having`` names only what ``select`` has; these reached CiviCRM
    (``civicrm-error`` / ``civicrm-bad-request``)."""
    response = red.call("narrow", "/v4/Contact/get", body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["type"].rpartition("/")[2] in ("invalid-request", "unknown-field"), response.text[
        :300
    ]
