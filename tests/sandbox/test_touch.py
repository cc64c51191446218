"""The sandbox records every (entity, field) a call's query compiler and write paths resolve:
the access policy's property test relies on this record being complete."""

from __future__ import annotations

import asyncio
import contextvars

import anyio

from gateway.sandbox import touch
from gateway.sandbox.engine import Sandbox
from gateway.sandbox.touch import recording


def _touched(sb: Sandbox, entity: str, action: str, params: dict) -> set[tuple[str, str]]:
    with recording() as touched:
        sb.api4(entity, action, params)
    return touched


def test_select_through_functions_aliases_and_wildcards(sb: Sandbox, ada: int) -> None:
    got = _touched(
        sb,
        "Contact",
        "get",
        {
            "select": ["UPPER(last_name) AS shout", "CONCAT(first_name, ' ', nick_name)"],
            "where": [["id", "=", ada]],
        },
    )
    assert got == {
        ("Contact", "id"),
        ("Contact", "last_name"),
        ("Contact", "first_name"),
        ("Contact", "nick_name"),
    }
    got = _touched(sb, "Contact", "get", {"select": ["email_primary.*"], "limit": 1})
    assert {
        ("Contact", "email_primary"),
        ("Email", "email"),
        ("Email", "signature_html"),
        ("Email", "contact_id"),
    } <= got
    assert ("Contact", "email_primary") in got and ("Contact", "api_key") not in got
    star = _touched(sb, "Contact", "get", {"limit": 1})
    assert ("Contact", "api_key") in star and ("Contact", "hash") in star


def test_where_having_order_group_and_joins(sb: Sandbox, ada: int) -> None:
    got = _touched(
        sb,
        "Contact",
        "get",
        {
            "select": ["contact_type", "COUNT(id) AS total"],
            "groupBy": ["contact_type"],
            "having": [["total", ">", 0]],
            "orderBy": {"MAX(birth_date)": "DESC"},
            "where": [["OR", [["email_primary.email", "LIKE", "%@x"], ["api_key", "IS NULL"]]]],
        },
    )
    assert got == {
        ("Contact", "contact_type"),
        ("Contact", "id"),
        ("Contact", "birth_date"),
        ("Contact", "email_primary"),
        ("Email", "email"),
        ("Contact", "api_key"),
    }
    got = _touched(
        sb,
        "Contact",
        "get",
        {
            "select": ["id"],
            "join": [
                ["Email AS e", "INNER", ["e.contact_id", "=", "id"], ["e.signature_text", "IS NOT NULL"]]
            ],
        },
    )
    assert got == {("Contact", "id"), ("Email", "contact_id"), ("Email", "signature_text")}
    got = _touched(sb, "Contact", "get", {"select": ["id"], "where": [["LOWER(hash)", "=", "x"]]})
    assert ("Contact", "hash") in got


def test_writes_record_their_values(sb: Sandbox, ada: int) -> None:
    got = _touched(
        sb, "Contact", "update", {"where": [["id", "=", ada]], "values": {"api_key": "k", "nick_name": "A"}}
    )
    assert {("Contact", "api_key"), ("Contact", "nick_name"), ("Contact", "id")} <= got
    got = _touched(sb, "Email", "create", {"values": {"contact_id": ada, "email": "a@x.org"}})
    assert got == {("Email", "contact_id"), ("Email", "email")}
    got = _touched(
        sb,
        "Contact",
        "save",
        {
            "records": [{"contact_type": "Individual", "external_identifier": "x-1"}],
            "match": ["external_identifier"],
        },
    )
    assert {("Contact", "external_identifier"), ("Contact", "contact_type")} <= got


def test_chain_references_record_the_parent_field(sb: Sandbox, ada: int) -> None:
    got = _touched(
        sb,
        "Contact",
        "get",
        {
            "select": ["id", "hash"],
            "where": [["id", "=", ada]],
            "chain": {"n": ["Note", "create", {"values": {"entity_id": "$id", "note": "$hash"}}]},
        },
    )
    assert {("Contact", "hash"), ("Note", "note"), ("Note", "entity_id")} <= got


def test_v3_filters_and_return(sb: Sandbox, ada: int) -> None:
    with recording() as got:
        sb.api3("Contact", "get", {"last_name": "Lovelace", "return": "nick_name"})
    assert {("Contact", "last_name"), ("Contact", "nick_name")} <= got


def test_nothing_recorded_outside_and_nesting_is_separate(sb: Sandbox, ada: int) -> None:
    assert not touch.active()
    sb.api4("Contact", "get", {"select": ["last_name"]})  # no error, nowhere to record
    with recording() as outer:
        with recording() as inner:
            sb.api4("Contact", "get", {"select": ["nick_name"]})
        sb.api4("Contact", "get", {"select": ["job_title"]})
    assert ("Contact", "nick_name") in inner and ("Contact", "nick_name") not in outer
    assert ("Contact", "job_title") in outer


def test_worker_threads_add_to_the_same_set(sb: Sandbox, ada: int) -> None:
    """The sandbox backend runs calls in worker threads (anyio, asyncio.to_thread)."""

    async def run() -> None:
        await asyncio.to_thread(sb.api4, "Contact", "get", {"select": ["nick_name"]})
        await anyio.to_thread.run_sync(lambda: sb.api4("Contact", "get", {"select": ["job_title"]}))

    with recording() as got:
        asyncio.run(run())
    assert {("Contact", "nick_name"), ("Contact", "job_title")} <= got
    # and a context copied before recording started sees nothing
    ctx = contextvars.copy_context()
    with recording() as later:
        ctx.run(sb.api4, "Contact", "get", {"select": ["birth_date"]})
    assert ("Contact", "birth_date") not in later


def test_contact_actions_record_what_they_read(sb: Sandbox, ada: int) -> None:
    got = _touched(sb, "Contact", "getChecksum", {"contactId": ada})
    assert got == {("Contact", "hash")}
    got = _touched(
        sb,
        "Contact",
        "getDuplicates",
        {"dedupeRule": "Individual.Supervised", "values": {"first_name": "Ada", "last_name": "Lovelace"}},
    )
    assert {("Contact", "first_name"), ("Contact", "last_name")} <= got


def test_everywhere_collects_from_a_wire_server_in_another_thread(sb: Sandbox, ada: int) -> None:
    """A wire server under uvicorn in its own thread does not share the test's context."""
    import threading

    def call() -> None:
        sb.api4("Contact", "get", {"select": ["legal_name"]})

    with recording() as local_only:
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
    assert ("Contact", "legal_name") not in local_only
    with recording(everywhere=True) as everywhere:
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
    assert ("Contact", "legal_name") in everywhere
    # closed blocks collect nothing more
    call()
    assert not touch._everywhere


def test_v3_chains_in_every_spelling(sb: Sandbox, ada: int) -> None:
    sb.api4("Email", "create", {"values": {"contact_id": ada, "email": "ada@x.org"}})
    for key in ("api.Email.get", "api_Email_get", "api.email.get", "api_email_get"):
        with recording() as got:
            out = sb.api3(
                "Contact", "getsingle", {"id": ada, "return": "display_name", key: {"return": "email"}}
            )
        assert out[key]["values"] == [{"id": out[key]["id"].__str__(), "email": "ada@x.org"}]
        assert {("Email", "contact_id"), ("Email", "email")} <= got, key
    # $value.field reads the parent's field; a chained write obeys permissions too
    with recording() as got:
        out = sb.api3(
            "Contact",
            "get",
            {
                "id": ada,
                "sequential": 1,
                "return": "display_name",
                "api.Note.create": {"entity_id": "$value.id", "note": "$value.display_name"},
            },
        )
    note = out["values"][0]["api.Note.create"]
    assert note["is_error"] == 0 and note["values"][0]["note"] == "Ada Lovelace"
    assert {("Contact", "display_name"), ("Note", "note"), ("Note", "entity_id")} <= got
    staff = sb.ensure_staff()["contact_id"]
    out = sb.api3(
        "Contact",
        "get",
        {"id": ada, "sequential": 1, "api_Contact_delete": {"id": "$value.id"}},
        check_permissions=True,
        contact_id=staff,
    )
    assert out["values"][0]["api_Contact_delete"]["is_error"] == 1
    assert sb.api4("Contact", "get", {"where": [["id", "=", ada]]})["count"] == 1


def test_replace_and_group_by_alone(sb: Sandbox, ada: int) -> None:
    got = _touched(
        sb,
        "Email",
        "replace",
        {"where": [["contact_id", "=", ada]], "records": [{"email": "r@x.org", "signature_text": "s"}]},
    )
    assert {("Email", "contact_id"), ("Email", "email"), ("Email", "signature_text")} <= got
    got = _touched(sb, "Contact", "get", {"select": ["COUNT(id) AS n"], "groupBy": ["preferred_language"]})
    assert got == {("Contact", "id"), ("Contact", "preferred_language")}
