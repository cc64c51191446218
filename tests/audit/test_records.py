"""One exact audit record per write and per refused call, through HTTP on the ASGI app: what
each record says for create, update, delete, save, APIv3 create, chained writes, batch members,
policy refusals and missing tokens; ids from CiviCRM's answer; values only on request."""

from __future__ import annotations

from pathlib import Path

from gateway.core.redact import MASK
from gateway.flow.clients import hash_token
from tests.audit.helpers import (
    ADMIN,
    READER,
    WRITER,
    audited_gateway,
    auth,
    expected,
    stable,
    trail,
)


async def test_create_update_save_delete_each_leave_one_exact_record(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        created = await gw.post(
            "/v4/Contact/create",
            headers=auth(WRITER),
            json={"values": {"contact_type": "Individual", "first_name": "Ada", "last_name": "L"}},
        )
        assert created.status_code == 200, created.text
        new_id = created.json()[0]["id"]
        updated = await gw.post(
            "/v4/Contact/update",
            headers=auth(WRITER),
            json={"where": [["id", "=", new_id]], "values": {"last_name": "Lovelace"}},
        )
        saved = await gw.post(
            "/v4/Contact/save",
            headers=auth(WRITER),
            json={
                "records": [
                    {"id": new_id, "job_title": "Analyst"},
                    {"first_name": "Bea", "contact_type": "Individual"},
                ]
            },
        )
        second_id = saved.json()[1]["id"]
        deleted = await gw.post(
            "/v4/Contact/delete",
            headers=auth(WRITER),
            json={"where": [["id", "=", second_id]], "useTrash": False},
        )
        read = await gw.post("/v4/Contact/get", headers=auth(WRITER), json={"limit": 1})
        assert [r.status_code for r in (updated, saved, deleted, read)] == [200] * 4
        records = await trail(gw)
    assert len(records) == 4, records  # the read is not recorded
    delete, save, update, create = records
    assert stable(create, created) == expected(
        action="create", ids=[new_id], fields=["contact_type", "first_name", "last_name"]
    )
    assert stable(update, updated) == expected(action="update", ids=[new_id], fields=["last_name"])
    assert stable(save, saved) == expected(
        action="save", ids=[new_id, second_id], fields=["id", "job_title", "first_name", "contact_type"]
    )
    assert stable(delete, deleted) == expected(action="delete", ids=[second_id])
    assert second_id != new_id


async def test_apiv3_create_and_delete(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        created = await gw.post(
            "/v3/Contact/create",
            headers=auth(WRITER),
            json={"contact_type": "Individual", "first_name": "Cy"},
        )
        new_id = int(created.json()[0]["id"])
        deleted = await gw.post(
            "/v3/Contact/delete", headers=auth(WRITER), json={"id": new_id, "skip_undelete": 1}
        )
        assert deleted.status_code == 200, deleted.text
        delete, create = await trail(gw)
    assert stable(create, created) == expected(
        version=3, action="create", ids=[new_id], fields=["contact_type", "first_name"]
    )
    # APIv3 delete answers no record: the id is the one the call named.
    assert stable(delete, deleted) == expected(version=3, action="delete", ids=[new_id])


async def test_chained_writes_count_in_the_top_level_record(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        created = await gw.post(
            "/v4/Contact/create",
            headers=auth(WRITER),
            json={
                "values": {"contact_type": "Individual", "first_name": "Di"},
                "chain": {
                    "mail": ["Email", "create", {"values": {"contact_id": "$id", "email": "di@example.org"}}]
                },
            },
        )
        assert created.status_code == 200, created.text
        # A read whose chain writes is a write too.
        tagged = await gw.post(
            "/v4/Contact/get",
            headers=auth(WRITER),
            json={
                "where": [["id", "=", created.json()[0]["id"]]],
                "select": ["id"],
                "chain": {"phone": ["Phone", "create", {"values": {"contact_id": "$id", "phone": "555"}}]},
            },
        )
        assert tagged.status_code == 200, tagged.text
        phone, contact = await trail(gw)
    new_id = created.json()[0]["id"]
    assert stable(contact, created) == expected(
        action="create",
        ids=[new_id],
        fields=["contact_type", "first_name", "Email.contact_id", "Email.email"],
    )
    assert stable(phone, tagged) == expected(
        action="get", ids=[new_id], fields=["Phone.contact_id", "Phone.phone"]
    )


async def test_batch_members_each_get_a_record_reads_do_not(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        answer = await gw.post(
            "/v4/batch",
            headers=auth(WRITER),
            json={
                "add": ["Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Ed"}}],
                "look": ["Contact", "get", {"limit": 1}],
                "bad": ["Email", "create", {"values": {"contact_id": 99999, "email": "a@b.c"}}],
                "nope": ["NoSuchEntity", "create", {"values": {"x": 1}}],
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        records = await trail(gw)
    new_id = body["add"]["values"][0]["id"]
    assert [r["batch"] for r in records] == ["nope", "bad", "add"]
    nope, bad, add = (stable(r, answer) for r in records)
    assert add == expected(action="create", batch="add", ids=[new_id], fields=["contact_type", "first_name"])
    # refused by CiviCRM: the fields the call would have written are named
    assert body["bad"]["error"]["type"] == "/problems/civicrm-validation"
    assert bad == expected(
        entity="Email",
        action="create",
        batch="bad",
        status=422,
        problem="civicrm-validation",
        fields=["contact_id", "email"],
    )
    assert nope == expected(
        entity="NoSuchEntity", action="create", batch="nope", status=404, problem="unknown-api"
    )


async def test_refused_calls_are_recorded_reads_included(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        refused_write = await gw.post(
            "/v4/Contact/create", headers=auth(READER), json={"values": {"first_name": "X"}}
        )
        refused_read = await gw.post("/v4/Email/get", headers=auth(READER), json={})
        no_token = await gw.post("/v4/Contact/get", json={})
        bad_token = await gw.post("/v3/Contact/create", headers=auth(WRITER + "x"), json={})
        allowed_read = await gw.post("/v4/Contact/get", headers=auth(READER), json={})
        batch_no_token = await gw.post("/v4/batch", json={"a": ["Contact", "get"]})
        assert [
            r.status_code
            for r in (refused_write, refused_read, no_token, bad_token, allowed_read, batch_no_token)
        ] == [403, 403, 401, 401, 200, 401]
        records = await trail(gw)
    assert [stable(r) for r in records] == [
        expected(client=None, entity=None, action="batch", status=401, problem="unauthenticated"),
        expected(client=None, version=3, action="create", status=401, problem="unauthenticated"),
        expected(client=None, action="get", status=401, problem="unauthenticated"),
        expected(client="reader", entity="Email", action="get", status=403, problem="gateway-policy-denied"),
        expected(client="reader", action="create", status=403, problem="gateway-policy-denied"),
    ]


async def test_values_only_with_audit_values_and_never_a_credential(tmp_path: Path) -> None:
    body = {
        "values": {"contact_type": "Individual", "first_name": "Fay", "api_key": "k-123456"},
        "chain": {"e": ["Email", "create", {"values": {"contact_id": "$id", "email": "fay@example.org"}}]},
    }
    fields = ["contact_type", "first_name", "api_key", "Email.contact_id", "Email.email"]
    clients = _credential_client(tmp_path)
    async with audited_gateway(tmp_path / "off", clients_file=clients) as gw:
        answer = await gw.post("/v4/Contact/create", headers=auth(ADMIN), json=body)
        assert answer.status_code == 200, answer.text
        (off,) = await trail(gw)
    assert off["fields"] == fields and off["values"] is None

    async with audited_gateway(tmp_path / "on", audit_values=True, clients_file=clients) as gw:
        answer = await gw.post("/v4/Contact/create", headers=auth(ADMIN), json=body)
        assert answer.status_code == 200, answer.text
        (on,) = await trail(gw)
    assert on["fields"] == fields
    assert on["values"] == [
        {"contact_type": "Individual", "first_name": "Fay", "api_key": MASK},
        {"Email.contact_id": "$id", "Email.email": "fay@example.org"},
    ]


def _credential_client(tmp_path: Path) -> Path:
    """An admin that may write credential fields (a password reset service, say)."""
    path = tmp_path / "cred-clients.toml"
    path.write_text(
        f'[clients.admin]\ntoken_sha256 = "{hash_token(ADMIN)}"\naudit = "all"\ncredential_fields = true\n'
    )
    return path


async def test_idempotency_key_and_source_are_recorded(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path) as gw:
        answer = await gw.post(
            "/v4/Contact/create",
            json={"values": {"contact_type": "Individual", "first_name": "Hal"}},
            headers={**auth(WRITER), "Idempotency-Key": "order-7781"},
        )
        (record,) = await trail(gw)
    assert stable(record, answer) == expected(
        action="create",
        ids=[answer.json()[0]["id"]],
        fields=["contact_type", "first_name"],
        idempotency_key="order-7781",
    )


async def test_nothing_recorded_with_no_sinks(tmp_path: Path) -> None:
    async with audited_gateway(tmp_path, audit_sinks=[]) as gw:
        answer = await gw.post(
            "/v4/Contact/create",
            headers=auth(WRITER),
            json={"values": {"contact_type": "Individual", "first_name": "Ivy"}},
        )
        assert answer.status_code == 200
        listing = await gw.get("/audit", headers=auth(ADMIN))
    assert listing.status_code == 404
    assert listing.json()["type"] == "/problems/route-not-found"
    assert not (tmp_path / "state" / "audit.sqlite").exists()
