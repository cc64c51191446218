"""The sandbox accepts exactly the params a real CiviCRM 5.77's actions declare (their getActions
listing, tests/fixtures/samples/getactions-params.json), and refuses the rest like CiviCRM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.sandbox import meta
from gateway.sandbox.engine import Sandbox, validate_params
from gateway.sandbox.errors import CiviError

REAL = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "samples" / "getactions-params.json").read_text()
)
# Actions of the real site the sandbox does not serve (said so in docs/sandbox.md)
NOT_EMULATED = {
    ("Entity", "autocomplete"),
    ("Entity", "checkAccess"),
    ("Entity", "getLinks"),
    ("Setting", "checkAccess"),
    ("Setting", "getLinks"),
    ("Setting", "revert"),
}
CASES = [(e, a) for e, actions in REAL.items() for a in actions if (e, a) not in NOT_EMULATED]


def test_the_sandbox_serves_the_real_actions() -> None:
    for entity, actions in REAL.items():
        served = set(meta.entity_actions(entity))
        assert served == {a for a in actions if (entity, a) not in NOT_EMULATED}, entity


@pytest.mark.parametrize(("entity", "action"), CASES)
def test_every_real_param_is_accepted_and_no_other(entity: str, action: str) -> None:
    real = REAL[entity][action]
    for name, spec in real.items():
        # each real param, given a value of its declared type, passes validation
        kind = spec["type"][0]
        value = {"array": [], "bool": True, "int": 0, "string": "x", "mixed": None}.get(kind)
        validate_params(entity, action, {name: value})
    for name in ("frobnicate", "useCache", "filters", "reload", "includeFields"):
        if name in real:
            continue
        with pytest.raises(CiviError) as info:
            validate_params(entity, action, {name: None})
        assert info.value.message == f"Unknown api parameter: set{name[0].upper()}{name[1:]}"


def test_update_and_delete_take_order_limit_and_offset(sb: Sandbox) -> None:
    ids = [
        sb.api4("Contact", "create", {"values": {"contact_type": "Individual", "first_name": f"P{i}"}})[
            "values"
        ][0]["id"]
        for i in range(3)
    ]
    out = sb.api4(
        "Contact",
        "update",
        {
            "where": [["id", "IN", ids]],
            "values": {"nick_name": "first"},
            "orderBy": {"id": "DESC"},
            "limit": 1,
        },
    )["values"]
    assert [r["id"] for r in out] == [ids[-1]]
    out = sb.api4(
        "Contact", "delete", {"where": [["id", "IN", ids]], "limit": 1, "offset": 1, "orderBy": {"id": "ASC"}}
    )["values"]
    assert out == [{"id": ids[1]}]
