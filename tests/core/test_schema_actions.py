"""``Schema.action``: an action CiviCRM's getActions hides from a user is a 403, not a 404
(CiviCRM 5.77 leaves out the actions its user may not run); an unknown one stays a 404."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.call import Call
from gateway.core.errors import GatewayError
from gateway.core.schema import Schema

CLIENT = object()  # a client's own CiviCRM identity


class Site:
    """Metadata as CiviCRM answers it: getActions per identity, and checkAccess, which fails
    for an action that does not exist (unless ``lenient``, as an emulator may)."""

    def __init__(self, *, lenient: bool = False, down: bool = False) -> None:
        self.lenient, self.down = lenient, down
        self.calls: list[tuple[str, Any]] = []

    async def call(self, call: Call, **kw: Any) -> list[Any]:
        action, params = call.action, call.to_params()
        identity = kw.get("identity")
        self.calls.append((action, identity))
        if action == "getActions":
            names = ["get", "checkAccess"] + (["create", "delete"] if identity is None else [])
            return [{"name": n} for n in names]
        assert action == "checkAccess" and params["values"] == {"id": None}
        if self.down:
            raise GatewayError("upstream-unavailable", "down")
        if self.lenient or params["action"] in ("create", "delete", "export"):
            return [{"access": False}]
        raise GatewayError("upstream-error", "Sorry an error occurred ...")


async def test_listed_action_is_found_without_more_calls() -> None:
    site = Site()
    assert await Schema(site, CLIENT).action("Contact", "GET") == "get"  # type: ignore[arg-type]
    assert [a for a, _ in site.calls] == ["getActions"]


async def test_hidden_action_is_403_unknown_is_404() -> None:
    schema = Schema(Site(), CLIENT)  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as hidden:
        await schema.action("Contact", "export")  # not listed for anyone: checkAccess knows it
    assert (hidden.value.status, hidden.value.slug) == (403, "civicrm-permission-denied")
    with pytest.raises(GatewayError) as unknown:
        await schema.action("Contact", "frobnicate")
    assert (unknown.value.status, unknown.value.slug) == (404, "unknown-api")


async def test_listed_for_the_gateway_but_not_the_client_is_403() -> None:
    site = Site()
    with pytest.raises(GatewayError) as hidden:
        await Schema(site, CLIENT).action("Contact", "create")  # type: ignore[arg-type]
    assert hidden.value.slug == "civicrm-permission-denied"
    assert ("getActions", None) in site.calls and "checkAccess" not in [a for a, _ in site.calls]


async def test_a_checkaccess_that_answers_any_name_tells_nothing() -> None:
    with pytest.raises(GatewayError) as unknown:
        await Schema(Site(lenient=True), None).action("Contact", "frobnicate")  # type: ignore[arg-type]
    assert unknown.value.slug == "unknown-api"


async def test_civicrm_unreachable_is_not_a_404() -> None:
    with pytest.raises(GatewayError) as down:
        await Schema(Site(down=True), None).action("Contact", "export")  # type: ignore[arg-type]
    assert down.value.slug == "upstream-unavailable"
