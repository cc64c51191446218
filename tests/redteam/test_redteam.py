"""Red team: clients with small policies try every class of hole the access-policy issue found,
over the HTTP backend to the sandbox wire server, as CiviCRM's administrator (the worst case:
that user can read every contact's ``api_key``), with the admin contact holding its real key.

No attempt may read or write a credential, reach an entity, action or field outside its policy,
or get a 5xx.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.flow.clients import hash_token
from tests.conftest import ADMIN_KEY, gateway_client, http_settings

READER = "cgw_redteam-reader-0123456789abcdef"  # v4 Contact.get + Email.get, read-only
WRITER = "cgw_redteam-writer-0123456789abcdef"  # v4 Contact.* and Note.create
NARROW = "cgw_redteam-narrow-0123456789abcdef"  # Contact.get of id and display_name only
CAPPED = "cgw_redteam-capped-0123456789abcdef"  # Contact/Email get, 2 rows per get
V3 = "cgw_redteam-v3only-0123456789abcdef"  # v3 Contact.get only


@pytest.fixture
def clients_file(tmp_path):
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[clients.reader]
token_sha256 = "{hash_token(READER)}"
allow = ["v4:Contact.get", "v4:Email.get"]
read_only = true

[clients.writer]
token_sha256 = "{hash_token(WRITER)}"
allow = ["v4:Contact.*", "v4:Note.create"]
deny = ["v4:Contact.delete"]

[clients.narrow]
token_sha256 = "{hash_token(NARROW)}"
allow = ["v4:Contact.get"]
fields = {{Contact = ["id", "display_name"]}}

[clients.capped]
token_sha256 = "{hash_token(CAPPED)}"
allow = ["v4:Contact.get", "v4:Email.get"]
max_limit = 2
max_rows = 6

[clients.v3]
token_sha256 = "{hash_token(V3)}"
allow = ["v3:Contact.get"]
""")
    return path


@pytest.fixture
def secrets(upstream):
    """The admin contact (the gateway's own CiviCRM user) holds its real key; every contact
    has a hash; a few more contacts and emails exist to be read."""
    sb = upstream.sandbox
    sb.api4("Contact", "update", {"where": [["id", "=", 2]], "values": {"api_key": ADMIN_KEY}})
    for n in range(5):
        cid = sb.api4(
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "first_name": f"Person{n}",
                    "last_name": "Red",
                    "api_key": f"otherkey-{n}-9f8e7d6c",
                }
            },
        )["values"][0]["id"]
        sb.api4("Email", "create", {"values": {"contact_id": cid, "email": f"p{n}@example.org"}})
    hashes = [r["hash"] for r in sb.api4("Contact", "get", {"select": ["hash"]})["values"] if r.get("hash")]
    keys = [
        r["api_key"] for r in sb.api4("Contact", "get", {"select": ["api_key"]})["values"] if r.get("api_key")
    ]
    assert ADMIN_KEY in keys and len(hashes) >= 5
    return {"keys": keys, "hashes": hashes}


@contextlib.asynccontextmanager
async def gateway(upstream, clients_file) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(http_settings(upstream.url, clients_file=clients_file)) as gw:
        yield gw


def leaked(text: str, secrets: dict) -> list[str]:
    low = text.lower()
    return [s for s in [*secrets["keys"], *secrets["hashes"]] if s.lower() in low or s.lower()[::-1] in low]


async def attempt(
    gw: httpx.AsyncClient,
    token: str,
    path: str,
    body=None,
    *,
    secrets: dict,
    method: str = "POST",
    params=None,
) -> httpx.Response:
    response = await gw.request(
        method, path, json=body, params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code < 500, (path, body, response.text)
    assert not leaked(response.text, secrets), (path, body, response.text)
    return response


def refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


# --- 1. params in shapes a shape-based policy would not read ------------------------------------
SHAPES = [
    {"select": ["id"], "where": {"a": ["id", "=", 2], "b": ["api_key", "LIKE", "a%"]}},
    {"select": {"x": "api_key"}},
    {"select": ["id"], "orderBy": {"api_key": "ASC"}},
    {"select": ["id"], "groupBy": {"0": "api_key"}},
    {"select": ["id"], "having": {"0": ["api_key", "IS NOT NULL"]}},
    {"select": ["id"], "where": [["OR", {"0": ["id", "=", 1], "1": ["api_key", "LIKE", "a%"]}]]},
    {"select": ["id"], "where": [{"0": "api_key", "1": "LIKE", "2": "a%"}]},
    {
        "select": ["id"],
        "join": {"0": ["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]},
        "where": [["api_key", "IS NOT NULL"]],
    },
]

# --- 2. SQL expressions ----------------------------------------------------------------------
EXPRESSIONS = [
    {"select": ["UPPER(api_key) AS u"]},
    {"select": ["LOWER(api_key)"]},
    {"select": ["CONCAT(first_name, api_key) AS x"]},
    {"select": ["COALESCE(api_key, hash) AS x"]},
    {"select": ["REPLACE(api_key, 'a', 'b') AS x"]},
    {"select": ["GROUP_CONCAT(api_key) AS keys"], "groupBy": ["contact_type"]},
    {"select": ["SUBSTRING(hash, 1, 8) AS h"]},
    {"select": ["id"], "where": [["LOWER(api_key)", "LIKE", "a%"]]},
    {"select": ["id"], "orderBy": {"UPPER(api_key)": "DESC"}},
    {"select": ["id", "IF(api_key = 'x', 1, 0) AS k"]},
    {"select": ["id"], "where": [["first_name", "=", "api_key", True]]},
    {"select": ["UPPER(api_key) as u"]},  # lower-case AS: not understood, refused
    {"select": ["CONCAT('a\\', api_key, '') AS x"]},  # escape games
    {"select": ["LENGTH(api_key) AS n"]},  # not a CiviCRM function
]

# --- 3. join conditions and bridges --------------------------------------------------------------
JOINS = [
    {
        "select": ["id"],
        "join": [["Contact AS c", "INNER", ["c.id", "=", "id"], ["c.api_key", "IS NOT NULL"]]],
    },
    {"select": ["id"], "join": [["Contact AS c", "INNER", ["c.api_key", "=", "first_name"]]]},
    {"select": ["id", "c.api_key"], "join": [["Contact AS c", "LEFT", ["c.id", "=", "id"]]]},
    {
        "select": ["id"],
        "join": [["Email AS e", "LEFT", ["e.contact_id", "=", "id"]]],
        "where": [["e.contact_id.api_key", "IS NOT NULL"]],
    },
    {"select": ["id", "email_primary.contact_id.hash"]},
]


@pytest.mark.parametrize("body", [*SHAPES, *EXPRESSIONS, *JOINS])
async def test_reader_cannot_reach_credentials(upstream, clients_file, secrets, body):
    async with gateway(upstream, clients_file) as gw:
        refused(await attempt(gw, READER, "/v4/Contact/get", body, secrets=secrets))


async def test_reader_plain_reads_strip_credentials(upstream, clients_file, secrets):
    """The default select holds ``hash``; ``*`` wildcards too: stripped on the way out."""
    async with gateway(upstream, clients_file) as gw:
        for body in ({}, {"select": ["*"]}, {"select": ["id", "email_primary.*"]}):
            response = await attempt(gw, READER, "/v4/Contact/get", body, secrets=secrets)
            assert response.status_code == 200 and len(response.json()) >= 6
            assert all("hash" not in r and "api_key" not in r for r in response.json())
        streamed = await attempt(
            gw, READER, "/v4/Contact/get", {}, secrets=secrets, params={"format": "ndjson"}
        )
        assert streamed.status_code == 200 and "hash" not in streamed.text


# --- 4. chain $ references --------------------------------------------------------------------
async def test_chain_references_cannot_carry_credentials(upstream, clients_file, secrets):
    before = upstream.sandbox.api4("Note", "get", {})["values"]
    async with gateway(upstream, clients_file) as gw:
        for body in (
            {
                "where": [["id", "=", 2]],
                "chain": {
                    "n": [
                        "Note",
                        "create",
                        {"values": {"entity_id": "$id", "entity_table": "civicrm_contact", "note": "$hash"}},
                    ]
                },
            },
            {
                "where": [["id", "=", 2]],
                "chain": {
                    "n": [
                        "Note",
                        "create",
                        {
                            "values": {
                                "entity_id": "$id",
                                "entity_table": "civicrm_contact",
                                "note": "$api_key",
                            }
                        },
                    ]
                },
            },
            {
                "where": [["id", "=", 2]],
                "chain": {"n": ["Contact", "get", {"where": [["first_name", "=", "$api_key"]]}]},
            },
            {
                "where": [["id", "=", 2]],
                "chain": {"n": ["Contact", "get", {"where": [["first_name", "=", "$contact_id.hash"]]}]},
            },
        ):
            refused(await attempt(gw, WRITER, "/v4/Contact/get", body, secrets=secrets))
    assert upstream.sandbox.api4("Note", "get", {})["values"] == before


# --- writes of credentials ----------------------------------------------------------------------
async def test_writer_cannot_set_or_read_keys(upstream, clients_file, secrets):
    async with gateway(upstream, clients_file) as gw:
        for path, body in (
            ("/v4/Contact/update", {"where": [["id", "=", 3]], "values": {"api_key": "mine-123"}}),
            ("/v4/Contact/update", {"id": 3, "api_key": "mine-123"}),
            ("/v4/Contact/create", {"values": {"contact_type": "Individual", "api_key": "k-1234"}}),
            ("/v4/Contact/save", {"records": {"0": {"id": 3, "api_key": "mine-123"}}}),
            ("/v4/Contact/save", {"records": [{"id": 3}], "defaults": {"api_key": "mine-123"}}),
            (
                "/v4/Contact/create",
                {
                    "values": {"contact_type": "Individual"},
                    "chain": {
                        "k": [
                            "Contact",
                            "update",
                            {"where": [["id", "=", "$id"]], "values": {"API_KEY": "x"}},
                        ]
                    },
                },
            ),
            ("/v4/Contact/update", {"where": [["id", "=", 3]], "values": {"hash": "abc"}}),
        ):
            refused(await attempt(gw, WRITER, path, body, secrets=secrets))
    keys = {
        r["id"]: r["api_key"]
        for r in upstream.sandbox.api4("Contact", "get", {"select": ["id", "api_key"]})["values"]
    }
    assert keys[2] == ADMIN_KEY and "mine-123" not in keys.values()


# --- 5. name case -------------------------------------------------------------------------------
async def test_letter_case_does_not_slip_past_deny(upstream, clients_file, secrets):
    count = len(upstream.sandbox.api4("Contact", "get", {})["values"])
    async with gateway(upstream, clients_file) as gw:
        for path in ("/v4/Contact/DELETE", "/v4/Contact/Delete", "/v4/contact/delete", "/v4/CONTACT/dElEtE"):
            response = await attempt(gw, WRITER, path, {"where": [["id", ">", 0]]}, secrets=secrets)
            assert response.status_code == 403, response.text
        for path in ("/v4/Contact/getchecksum", "/v4/Contact/GETCHECKSUM"):
            response = await attempt(gw, WRITER, path, {"contactId": 2}, secrets=secrets)
            assert response.status_code == 403, response.text
        reader_write = await attempt(
            gw, READER, "/v4/Contact/CREATE", {"contact_type": "Individual"}, secrets=secrets
        )
        assert reader_write.status_code == 403
    assert len(upstream.sandbox.api4("Contact", "get", {})["values"]) == count


# --- 6. credentials beyond api_key; v3 scalars ---------------------------------------------------
async def test_v3_cannot_reach_credentials(upstream, clients_file, secrets):
    async with gateway(upstream, clients_file) as gw:
        for path, body in (
            ("/v3/Contact/get", {"return": "api_key"}),
            ("/v3/Contact/get", {"return": ["id", "hash"]}),
            ("/v3/Contact/get", {"return.api_key": 1}),
            ("/v3/Contact/get", {"api_key": ADMIN_KEY[:5]}),
            ("/v3/Contact/get", {"hash": {"LIKE": "a%"}}),
            ("/v3/Contact/getvalue", {"id": 2, "return": "api_key"}),
            ("/v3/Contact/get", {"options": {"sort": "api_key DESC"}}),
            ("/v3/Contact/get", {"api.Contact.get": {"api_key": "$value.api_key"}}),
        ):
            refused(await attempt(gw, V3, path, body, secrets=secrets))
        # Without "return" APIv3 also answers other entities' fields (address, email): a
        # narrowed client must name what it reads.
        refused(await attempt(gw, V3, "/v3/Contact/get", {}, secrets=secrets))
        named = await attempt(gw, V3, "/v3/Contact/get", {"return": "display_name"}, secrets=secrets)
        assert named.status_code == 200 and len(named.json()) >= 6
        assert all(set(r) <= {"id", "contact_id", "display_name", "contact_is_deleted"} for r in named.json())


# --- 7. APIv3 chaining spellings ----------------------------------------------------------------
async def test_v3_chains_in_every_spelling_are_checked(upstream, clients_file, secrets):
    emails = len(upstream.sandbox.api4("Email", "get", {})["values"])
    async with gateway(upstream, clients_file) as gw:
        for key in ("api.Email.create", "api_Email_create", "api.email.create", "api_email_Create"):
            response = await attempt(
                gw, V3, "/v3/Contact/get", {"id": 2, key: {"email": "evil@example.org"}}, secrets=secrets
            )
            assert response.status_code == 403, (key, response.text)
    assert len(upstream.sandbox.api4("Email", "get", {})["values"]) == emails


# --- 8. limits ----------------------------------------------------------------------------------
async def test_limits_hold_through_chains_and_bad_numbers(upstream, clients_file, secrets):
    async with gateway(upstream, clients_file) as gw:
        for body in (
            {"limit": -1},
            {"offset": -3, "limit": 1},
            {"limit": "abc"},
            {"limit": 3},
            {"limit": 2, "chain": {"e": ["Email", "get", {"limit": 3}]}},
            # 2 + 2 x 2 + 2 x 2: siblings add up past max_rows (6)
            {
                "limit": 2,
                "chain": {"a": ["Contact", "get", {"limit": 2}], "b": ["Contact", "get", {"limit": 2}]},
            },
            {
                "limit": 2,
                "chain": {
                    "c": ["Contact", "get", {"limit": 2, "chain": {"e": ["Email", "get", {"limit": 2}]}}]
                },
            },
        ):
            refused(await attempt(gw, CAPPED, "/v4/Contact/get", body, secrets=secrets))
        capped = await attempt(
            gw,
            CAPPED,
            "/v4/Contact/get",
            {"select": ["id"], "chain": {"all": ["Contact", "get", {"select": ["id"]}]}},
            secrets=secrets,
        )
        assert capped.status_code == 200
        assert len(capped.json()) == 2 and all(len(r["all"]) == 2 for r in capped.json())


# --- field allow-lists ------------------------------------------------------------------------
async def test_narrow_client_sees_only_its_fields(upstream, clients_file, secrets):
    async with gateway(upstream, clients_file) as gw:
        everything = await attempt(gw, NARROW, "/v4/Contact/get", {}, secrets=secrets)
        assert everything.status_code == 200
        assert {k for r in everything.json() for k in r} == {"id", "display_name"}
        for body in (
            {"select": ["first_name"]},
            {"where": [["last_name", "=", "Red"]]},
            {"select": ["UPPER(first_name) AS f"]},
            {"orderBy": {"first_name": "ASC"}},
            {"select": ["id", "email_primary.email"]},
            {"select": ["email_primary.*"]},
            {"select": ["display_name"], "groupBy": ["contact_type"]},
            {"last_name": "Red"},
        ):
            refused(await attempt(gw, NARROW, "/v4/Contact/get", body, secrets=secrets))


# --- 10. input that used to cause 500s ------------------------------------------------------------
async def test_odd_shapes_are_4xx_not_500(upstream, clients_file, secrets):
    async with gateway(upstream, clients_file) as gw:
        for params, body in (
            ({"format": "ndjson"}, {"select": "id"}),
            ({"format": "csv"}, {"where": "id = 1"}),
            ({"format": "ndjson"}, {"where": ["id", "=", 2]}),
            ({}, {"select": [["id"]]}),
            ({}, {"orderBy": ["id"]}),
            ({}, {"join": "Email"}),
            ({}, {"chain": ["x"]}),
        ):
            refused(await attempt(gw, READER, "/v4/Contact/get", body, params=params, secrets=secrets))
        for body in (
            {"options": "limit=5"},
            {"options": {"limit": -1}},
            {"options": {"or": [["id"]]}},
            {"return": {"a": {"b": 1}}},
        ):
            refused(await attempt(gw, V3, "/v3/Contact/get", body, secrets=secrets))


# --- 11. CSV formulas -------------------------------------------------------------------------
async def test_csv_cells_cannot_be_formulas(upstream, clients_file, secrets):
    upstream.sandbox.api4(
        "Contact",
        "create",
        {
            "values": {
                "contact_type": "Individual",
                "first_name": '=HYPERLINK("http://evil.example","x")',
                "last_name": "+1-2",
                "job_title": "@SUM(A1)",
            }
        },
    )
    async with gateway(upstream, clients_file) as gw:
        response = await attempt(
            gw,
            READER,
            "/v4/Contact/get",
            {
                "select": ["first_name", "last_name", "job_title", "id"],
                "where": [["first_name", "LIKE", "=HYPER%"]],
            },
            params={"format": "csv"},
            secrets=secrets,
        )
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["first_name"], row["last_name"], row["job_title"]] == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1-2",
        "'@SUM(A1)",
    ]
    assert row["id"].isdigit()  # numbers stay numbers
